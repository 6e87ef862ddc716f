"""Every framework adapter through the same cases, on the real Ray: each case runs in a Ray
worker of its framework's own (as trainings do), with the same two-class data.

A new framework passes these before it is anything else: register (describe), train, save,
load and predict; an online window and its checkpoint; the weights' round trip, bit for
bit; bad code refused with its line; a wrong input shape refused clearly.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from kafkaml_ray import frameworks

pytestmark = pytest.mark.integration

#: one small two-class classifier over 4 features per framework, as its users write it
MODELS = {
    "pytorch": """
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
    def forward(self, x):
        return self.fc(x)
    def loss_fn(self):
        return nn.CrossEntropyLoss()
    def optimizer(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)
    def metrics(self):
        return {"accuracy": Accuracy(), "loss": Loss(self.loss_fn())}
""",
    "tensorflow": """
model = keras.Sequential([keras.Input(shape=(4,)), layers.Dense(2, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
""",
    "sklearn": """
from sklearn.linear_model import SGDClassifier
input_shape = [4]
classes = [0, 1]
model = make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss"))
""",
    "xgboost": """
input_shape = [4]
classes = [0, 1]
model = XGBClassifier(n_estimators=10, max_depth=2)
""",
}


def test_every_framework_has_a_model_here():
    assert set(MODELS) == set(frameworks.names())


# -- what runs in the Ray worker ------------------------------------------------------------
@dataclass
class _Spec:  # (a `frameworks.base.TrainSpec`)
    code: str
    input_shape: list[int] | None
    model_name: str = "m"
    imports: str = ""
    batch_size: int = 8
    train_args: dict[str, Any] = field(
        default_factory=lambda: {"epochs": 3, "seed": 0, "shuffle": False}
    )
    val_args: dict[str, Any] = field(default_factory=dict)
    gpu_fraction: float = 0.0

    @property
    def epochs(self) -> int:
        return self.train_args["epochs"]


class _Arrays:
    """A split as a Ray Data shard gives it: ``iter_batches`` of numpy columns."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def iter_batches(self, batch_size: int, batch_format: str):
        for i in range(0, len(self.x), batch_size):
            yield {"data": self.x[i : i + batch_size], "label": self.y[i : i + batch_size]}


class _Progress:
    def __init__(self):
        self.epochs: list[int] = []

    def mark(self, phase: str) -> None:
        pass

    def batch(self, epoch, batch, batches, loss) -> None:
        pass

    def epoch(self, epoch, train, val) -> None:
        self.epochs.append(epoch)


def _data(features: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, features)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _case(name: str, code: str, case: str) -> dict[str, Any]:
    """One case, in the worker; plain data back (nothing model code made crosses)."""
    from kafkaml_ray.errors import KafkaMLError, ModelCodeError
    from kafkaml_ray.frameworks.data import floats

    fw = frameworks.get(name)
    try:
        shape = fw.describe(code)["input_shape"]
        spec = _Spec(code, shape)
        x, y = _data()
        if case == "train":
            splits = {"train": _Arrays(x[:64], y[:64]), "val": _Arrays(x[64:80], y[64:80])}
            splits["test"] = _Arrays(x[80:], y[80:])
            progress = _Progress()
            fitted = fw.train(spec, splits, progress, 0, False)
            blob = fitted.weights()
            test, matrix = floats(fitted.test()), fitted.matrix()
            out = fw.predict(fw.load(code, "", blob), x[80:])
            return {
                "epochs": progress.epochs,
                "test": test,
                "matrix": matrix,
                "out_shape": list(out.shape),
                "accuracy": float((out.argmax(axis=1) == y[80:]).mean()),
            }
        if case == "online":
            a = fw.learner(spec)
            before = floats(a.score(x[:32], y[:32]))
            trained = floats(a.fit(x[:32], y[:32], 2))
            weights, checkpoint = a.snapshot()
            b = fw.learner(spec)
            b.restore(checkpoint)
            a.fit(x[32:64], y[32:64], 1)
            b.fit(x[32:64], y[32:64], 1)
            return {
                "before": before,
                "trained": trained,
                "continued_alike": floats(a.score(x[64:], y[64:]))
                == floats(b.score(x[64:], y[64:])),
            }
        if case == "round trip":
            a = fw.learner(spec)
            a.fit(x, y, 2)
            b = fw.learner(spec)
            b.load(a.weights())
            first, second = fw.load(code, "", a.weights()), fw.load(code, "", b.weights())
            return {
                "scores_equal": floats(a.score(x, y)) == floats(b.score(x, y)),
                "predictions_equal": bool(
                    np.array_equal(fw.predict(first, x), fw.predict(second, x))
                ),
            }
        if case == "wrong shape":
            wide, labels = _data(features=3)
            fw.train(spec, {"train": _Arrays(wide, labels)}, _Progress(), 0, False)
            return {}
        raise AssertionError(case)
    except (KafkaMLError, ModelCodeError) as e:
        return {"error": type(e).__name__, "message": str(e)}


@pytest.fixture(scope="module")
def in_worker(ray_cluster):
    """Run `_case` in a Ray worker of the framework's own (as the training pool does)."""
    import ray
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    task = ray.remote(num_cpus=1, max_retries=0)(_case)

    def run(name: str, case: str) -> dict[str, Any]:
        env = {"env_vars": {"KAFKAML_TRAINING_FRAMEWORK": name}}
        return ray.get(task.options(runtime_env=env).remote(name, MODELS[name], case), timeout=300)

    return run


# -- the cases --------------------------------------------------------------------------
@pytest.mark.parametrize("name", frameworks.names())
def test_registers_with_its_shapes_and_refuses_bad_code_with_its_line(ray_cluster, settings, name):
    from kafkaml_ray.errors import ModelCodeError
    from kafkaml_ray.model_code import validate_model

    found = validate_model(name, MODELS[name], "", settings)
    assert found["input_shape"] == [4]
    assert found["output_shape"] in ([2], None)
    bad = "x = 1\n\nraise ValueError('broken on purpose')\n"
    with pytest.raises(ModelCodeError, match="broken on purpose") as e:
        validate_model(name, bad, "", settings)
    assert e.value.line == 3


@pytest.mark.parametrize("name", frameworks.names())
def test_trains_saves_loads_and_predicts(in_worker, name):
    out = in_worker(name, "train")
    assert "error" not in out, out
    assert out["epochs"], "no epoch was reported"
    assert out["test"]["accuracy"] > 0.6, out  # (a linear rule: learned, not guessed)
    assert out["out_shape"] == [16, 2]
    assert out["accuracy"] == pytest.approx(out["test"]["accuracy"], abs=1e-6)
    assert np.asarray(out["matrix"]).sum() == 16


@pytest.mark.parametrize("name", frameworks.names())
def test_an_online_window_trains_and_a_checkpoint_continues_alike(in_worker, name):
    out = in_worker(name, "online")
    assert "error" not in out, out
    assert "accuracy" in out["trained"], out
    assert out["continued_alike"], out


@pytest.mark.parametrize("name", frameworks.names())
def test_weights_round_trip_bit_for_bit(in_worker, name):
    out = in_worker(name, "round trip")
    assert out == {"scores_equal": True, "predictions_equal": True}


@pytest.mark.parametrize("name", frameworks.names())
def test_a_wrong_input_shape_is_refused_clearly(in_worker, name):
    out = in_worker(name, "wrong shape")
    assert out.get("error") == "InvalidInput", out
    assert "shape" in out["message"] and "[3]" in out["message"], out
