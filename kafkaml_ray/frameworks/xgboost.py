"""XGBoost: ``model = xgboost.XGBClassifier(...)`` or ``XGBRegressor(...)`` (scikit-learn's
API, so it shares `ScikitLearn`'s training, metrics and predictions).

- A batch training boosts the model's ``n_estimators`` rounds, reporting each round, with
  the validation split as its evaluation set. With ``num_workers`` above 1 it trains data
  parallel through Ray Train's own ``XGBoostTrainer`` (XGBoost's collective, set up by
  Ray Train around each worker's ``fit``).
- An online window continues boosting from the current booster (``xgb_model=``): each
  window adds the model's ``n_estimators`` rounds, so online models keep it small.
- Weights are XGBoost's native UBJSON model (with the scikit-learn wrapper's attributes),
  loaded into the estimator the code builds: no pickle.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kafkaml_ray.errors import ModelCodeError
from kafkaml_ray.frameworks.base import Progress, TrainSpec
from kafkaml_ray.frameworks.sklearn import ScikitLearn

__all__ = ["XGBoost"]


class XGBoost(ScikitLearn):
    name = "xgboost"
    label = "XGBoost"
    imports = (
        "import numpy as np\nimport xgboost\nfrom xgboost import XGBClassifier, XGBRegressor\n"
    )
    libraries = ("xgboost", "xgboost-cpu", "scikit-learn")
    weights_name = "model.ubj"
    max_workers = None

    def trainer(self) -> Any:
        from ray.train.xgboost import XGBoostTrainer

        return XGBoostTrainer

    def load(self, code: str, imports: str, weights: bytes, device: str | None = None) -> Any:
        model = self.build(code, imports)  # (the estimator class the code chose)
        model.load_model(bytearray(weights))
        return model

    # -- the hooks ----------------------------------------------------------------------
    def _check(self, model: Any) -> None:
        from xgboost import XGBModel

        if not isinstance(model, XGBModel):
            raise ModelCodeError(
                "'model' must be an XGBoost estimator (xgboost.XGBClassifier or "
                f"XGBRegressor), not {type(model).__name__}"
            )

    def _check_saved_types(self, model: Any) -> None:
        pass  # (a native model file holds trees and numbers only)

    def _check_online(self, model: Any, spec: TrainSpec) -> None:
        pass  # (every XGBoost model continues boosting)

    def _fit(self, model: Any, x: np.ndarray, y: np.ndarray, val: Any, progress: Progress):
        import xgboost

        rounds = model.get_params().get("n_estimators") or 100

        class _Report(xgboost.callback.TrainingCallback):
            def after_iteration(self, booster, epoch, evals_log) -> bool:
                last = next(iter(evals_log.get("validation_0", {}).values()), [None])[-1]
                progress.batch(1, epoch + 1, rounds, float(last) if last is not None else None)
                return False  # (go on)

        model.set_params(callbacks=[_Report()])
        try:
            model.fit(x, y, eval_set=[val] if val is not None else None, verbose=False)
        finally:
            model.set_params(callbacks=None)  # (the saved model keeps no callback)

    def _partial_fit(self, model: Any, x: Any, y: Any, classes: list | None, epochs: int) -> Any:
        """The window's boosting rounds added to the current booster (one pass: epochs
        would only multiply the rounds)."""
        from sklearn.exceptions import NotFittedError

        try:
            booster = model.get_booster()
        except NotFittedError:
            booster = None
        model.fit(x, y, xgb_model=booster, verbose=False)
        return model

    def _save(self, model: Any) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.ubj"
            model.save_model(path)
            return path.read_bytes()
