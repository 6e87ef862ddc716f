"""scikit-learn: any estimator or ``Pipeline`` that the code assigns to ``model``, e.g.
``model = make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss"))``.

- A batch training calls ``fit`` once on the training split (samples flattened to rows);
  an online run calls ``partial_fit`` window after window, so only estimators (and
  pipelines whose steps all) have ``partial_fit`` train online. A classifier learns the
  classes of its first window unless the code names them (``classes = [0, 1, ...]``).
- Metrics come from ``sklearn.metrics``, named like the other frameworks': ``accuracy``
  and ``loss`` (log loss, where the estimator gives probabilities) for classifiers;
  ``loss`` (the MSE), ``mae`` and ``mse`` for regressors.
- Weights are stored with skops, never pickle: only the types skops trusts by default
  (scikit-learn's, numpy's, scipy's) are loaded, and a model with other types (a class
  the code defines) is refused when it is registered, with the type named.
- Predictions: a classifier's class probabilities (``predict_proba``) where it has them,
  else its ``predict``, as one row per sample.

`ScikitLearn` is also the base of the other estimators with scikit-learn's API (XGBoost):
they change the hooks (``_check``, ``_fit``, ``_partial_fit``, ``_save``, ``load``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from kafkaml_ray.errors import InvalidInput, ModelCodeError
from kafkaml_ray.frameworks.base import Fitted, Framework, Progress, TrainSpec
from kafkaml_ray.frameworks.data import confusion, fit_shape, is_classes, to_numpy, train_and_val

__all__ = ["ScikitLearn", "EstimatorLearner", "rows", "estimator_metrics"]


class ScikitLearn(Framework):
    name = "sklearn"
    label = "scikit-learn"
    imports = (
        "import numpy as np\nimport sklearn\n"
        "from sklearn import ensemble, linear_model, naive_bayes, neighbors, neural_network, "
        "svm, tree\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import StandardScaler\n"
    )
    libraries = ("scikit-learn", "skops", "scipy")
    weights_name = "model.skops"
    max_workers = 1
    batch_epochs = False  # (one `fit`; an online window's epochs are partial_fit passes)
    model_params = True  # (``model.alpha``: set_params before it fits)

    def preload(self) -> None:
        super().preload()
        import skops.io  # noqa: F401 - (the saved-types check; it imports much)

    def build(self, code: str, imports: str = "") -> Any:
        return self.built(code, imports)[0]

    def built(self, code: str, imports: str = "") -> tuple[Any, list | None, list[int] | None]:
        """The estimator, the classes the code names, and the input shape it declares."""
        from sklearn.base import is_classifier, is_regressor

        ns = self.namespace(code, imports)
        model = ns.get("model")
        if model is None:
            raise ModelCodeError(f"{self.label} code must assign an estimator to 'model'")
        self._check(model)
        if not (is_classifier(model) or is_regressor(model)):
            raise ModelCodeError(
                f"'model' ({type(model).__name__}) is neither a classifier nor a regressor: "
                "Kafka-ML trains supervised models"
            )
        shape, classes = ns.get("input_shape"), ns.get("classes")
        return (
            model,
            list(classes) if classes is not None else None,
            [int(d) for d in shape] if shape is not None else None,
        )

    def describe(self, code: str, imports: str = "") -> dict[str, Any]:
        model, classes, shape = self.built(code, imports)
        self._check_saved_types(model)
        return {
            "input_shape": shape,
            "output_shape": [len(classes)] if classes is not None else None,
            "param_count": None,  # (known only once fitted)
            "metrics": _metric_names(model),
        }

    def train(
        self, spec: TrainSpec, shards: dict[str, Any], progress: Progress, rank: int,
        distributed: bool,
    ) -> Fitted | None:  # fmt: skip
        progress.mark("imported")
        start = time.perf_counter()
        x_train, y_train, x_val, y_val = train_and_val(shards)
        progress.mark("data")
        model, _, declared = self.built(spec.code, spec.imports)
        shape = spec.input_shape or declared
        _configure(model, spec.train_args)
        progress.mark("built")
        x_train = rows(fit_shape(x_train, shape, spec.model_name))
        x_val = rows(fit_shape(x_val, shape, spec.model_name))
        has_val = y_val is not None and len(x_val)
        try:
            self._fit(model, x_train, y_train, (x_val, y_val) if has_val else None, progress)
        except ValueError as e:
            raise InvalidInput(f"model {spec.model_name!r} does not fit the data: {e}") from None
        val_m = estimator_metrics(model, x_val, y_val) if has_val else {}
        progress.epoch(1, estimator_metrics(model, x_train, y_train), val_m)
        seconds = time.perf_counter() - start
        if rank != 0:
            return None
        test_set: dict[str, np.ndarray] = {}

        def test() -> dict:
            x, y = to_numpy(shards["test"]) if "test" in shards else (x_train[:0], None)
            if y is None or not len(x):
                return {}
            test_set.update(x=rows(fit_shape(x, shape, spec.model_name)), y=y)
            return estimator_metrics(model, test_set["x"], y)

        def matrix() -> list | None:
            if not (test_set and _classifier(model) and is_classes(test_set["y"])):
                return None
            y, pred = test_set["y"], np.asarray(model.predict(test_set["x"]))
            if min(y.min(), pred.min()) < 0:
                return None
            return confusion(y, pred, int(max(y.max(), pred.max())) + 1)

        return Fitted(weights=lambda: self._save(model), seconds=seconds, test=test, matrix=matrix)

    def learner(self, spec: TrainSpec) -> EstimatorLearner:
        return EstimatorLearner(self, spec)

    def load(self, code: str, imports: str, weights: bytes, device: str | None = None) -> Any:
        import skops.io

        # Only the types skops trusts by default: anything else raises, unloaded.
        return skops.io.loads(weights)

    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        x = rows(x)
        if _classifier(model) and hasattr(model, "predict_proba"):
            return np.asarray(model.predict_proba(x), dtype=np.float32)
        return np.asarray(model.predict(x)).reshape(len(x), -1)

    # -- hooks of the estimators with scikit-learn's API ----------------------------------
    def _check(self, model: Any) -> None:
        """Refuse a ``model`` that is not this framework's estimator."""
        from sklearn.base import BaseEstimator

        if not isinstance(model, BaseEstimator) or not callable(getattr(model, "fit", None)):
            raise ModelCodeError(
                f"'model' must be a scikit-learn estimator, not {type(model).__name__}"
            )

    def _check_saved_types(self, model: Any) -> None:
        """Refuse a model whose saved form could not be loaded safely."""
        import skops.io

        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        if untrusted:
            raise ModelCodeError(
                f"the model holds types that skops would have to trust to load it: "
                f"{', '.join(untrusted)}; use scikit-learn's own estimators and transformers"
            )

    def _fit(self, model: Any, x: np.ndarray, y: np.ndarray, val: Any, progress: Progress):
        model.fit(x, y)

    def _check_online(self, model: Any, spec: TrainSpec) -> None:
        missing = [name for name, step in _steps(model) if not hasattr(step, "partial_fit")]
        if missing:
            raise InvalidInput(
                f"model {spec.model_name!r} cannot train online: {', '.join(missing)} has no "
                "partial_fit (use an estimator that has, e.g. SGDClassifier, SGDRegressor, "
                "MLPClassifier or GaussianNB)"
            )

    def _partial_fit(self, model: Any, x: Any, y: Any, classes: list | None, epochs: int) -> Any:
        """``model`` trained on a window, continuing: ``epochs`` passes of ``partial_fit``
        (a pipeline's transformers learn, then transform, in turn)."""
        for _ in range(max(1, epochs)):
            *transforms, (_, last) = _steps(model)
            xs = x
            for _, step in transforms:
                step.partial_fit(xs, y)
                xs = step.transform(xs)
            if classes is not None:
                last.partial_fit(xs, y, classes=classes)
            else:
                last.partial_fit(xs, y)
        return model

    def _save(self, model: Any) -> bytes:
        import skops.io

        return skops.io.dumps(model)


def rows(x: np.ndarray) -> np.ndarray:
    """Samples as rows of features: what every scikit-learn estimator takes.

    >>> rows(np.zeros((2, 8, 8))).shape
    (2, 64)
    """
    return np.asarray(x).reshape(len(x), -1)


def _classifier(model: Any) -> bool:
    from sklearn.base import is_classifier

    return is_classifier(model)


def _configure(model: Any, train_args: dict[str, Any]) -> None:
    """The model's own parameters the run names (``model.alpha``, ``model.sgd__alpha`` in a
    pipeline, as `set_params` takes them), then every ``random_state`` the code left unset
    set to the run's ``seed`` (reproducible)."""
    named = {k[6:]: v for k, v in train_args.items() if k.startswith("model.")}
    known = model.get_params()
    if unknown := sorted(set(named) - set(known)):
        raise InvalidInput(
            f"{type(model).__name__} has no parameter {', '.join(map(repr, unknown))}; "
            f"it has: {', '.join(sorted(known))}"
        )
    try:
        model.set_params(**named)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{type(model).__name__}: {e}") from None
    seed = train_args.get("seed", 0)
    unset = {
        k: seed for k, v in model.get_params().items() if k.endswith("random_state") and v is None
    }
    if unset:
        model.set_params(**unset)


def _metric_names(model: Any) -> list[str]:
    if _classifier(model):
        return ["accuracy", "loss"] if hasattr(model, "predict_proba") else ["accuracy"]
    return ["loss", "mae", "mse"]


def estimator_metrics(model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """A fitted estimator's metrics on ``(x, y)`` (``sklearn.metrics``)."""
    from sklearn import metrics

    if not len(x):
        return {}
    pred = model.predict(x)
    if _classifier(model):
        out = {"accuracy": float(metrics.accuracy_score(y, pred))}
        if hasattr(model, "predict_proba"):
            try:
                proba = model.predict_proba(x)
                out["loss"] = float(metrics.log_loss(y, proba, labels=model.classes_))
            except (AttributeError, ValueError):
                pass  # (e.g. SGDClassifier with a hinge loss has no probabilities)
        return out
    mse = float(metrics.mean_squared_error(y, pred))
    return {"loss": mse, "mae": float(metrics.mean_absolute_error(y, pred)), "mse": mse}


def _steps(model: Any) -> list[tuple[str, Any]]:
    """A pipeline's steps, or the estimator alone, by name."""
    steps = getattr(model, "steps", None)
    return list(steps) if steps is not None else [(type(model).__name__, model)]


# -- online -------------------------------------------------------------------------------
class EstimatorLearner:
    """An estimator that continues learning, window after window (``partial_fit``, or a
    framework's own continuation)."""

    def __init__(self, fw: ScikitLearn, spec: TrainSpec):
        self.fw, self.spec = fw, spec
        self.model, self.classes, declared = fw.built(spec.code, spec.imports)
        self.shape = spec.input_shape or declared
        _configure(self.model, spec.train_args)
        fw._check_online(self.model, spec)
        self.fitted = False

    def score(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The model's metrics on ``(x, y)``, without training ({} before any window)."""
        return estimator_metrics(self.model, rows(x), y) if self.fitted else {}

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, float]:
        x = rows(x)
        if _classifier(self.model):
            if self.classes is None:
                self.classes = sorted(np.unique(y).tolist())
            unseen = sorted(set(np.unique(y).tolist()) - set(self.classes))
            if unseen:
                raise InvalidInput(
                    f"labels {unseen} were not in the first window's classes {self.classes}: "
                    "name every class in the model code (classes = [...])"
                )
        self.model = self.fw._partial_fit(self.model, x, y, self.classes, epochs)
        self.fitted = True
        return estimator_metrics(self.model, x, y)

    def weights(self) -> bytes:
        return self.fw._save(self.model)

    def load(self, blob: bytes) -> None:
        self.model = self.fw.load(self.spec.code, self.spec.imports, blob)
        self.fitted = True
        if _classifier(self.model) and self.classes is None:
            self.classes = list(getattr(self.model, "classes_", [])) or None

    def snapshot(self) -> tuple[bytes, bytes]:
        """``(weights, checkpoint)``: the saved estimator holds its whole state."""
        weights = self.weights()
        return weights, weights

    restore = load
