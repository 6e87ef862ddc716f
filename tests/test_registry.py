"""Registering model code: validated in a Ray worker, shapes recorded, bad code refused."""

import pytest

from kafkaml_ray.errors import Conflict, InvalidInput, ModelCodeError, NotFound
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("file", "framework", "shapes"),
    [
        ("digits_cnn_pytorch.py", "pytorch", ([8, 8], [10])),
        ("digits_cnn_keras.py", "tensorflow", ([8, 8], [10])),
        ("regression_mlp_pytorch.py", "pytorch", ([26], [1])),
        ("regression_mlp_keras.py", "tensorflow", ([26], [1])),
        ("digits_sgd_sklearn.py", "sklearn", ([8, 8], [10])),
        ("regression_sgd_sklearn.py", "sklearn", ([26], None)),
        ("digits_trees_xgboost.py", "xgboost", ([8, 8], [10])),
        ("regression_trees_xgboost.py", "xgboost", ([26], None)),
    ],
)
def test_examples_register_with_their_shapes(ray_cluster, client, example, file, framework, shapes):
    from kafkaml_ray import model_code

    model_code._FOUND.clear()  # (built here in a worker, whatever the tests before registered)
    m = client.add_model(file.removesuffix(".py"), framework, example(file))
    assert (m.input_shape, m.output_shape) == shapes
    # (an estimator's parameters are known once it is fitted)
    if framework in ("sklearn", "xgboost"):
        assert m.param_count is None
    else:
        assert m.param_count > 0
    assert client.get_model(m.name) == m
    assert [x.name for x in client.list_models()] == [m.name]


def test_kafka_ml_style_pytorch_code_with_an_imports_block(ray_cluster, client):
    """Kafka-ML's PyTorch form: a class (not instantiated) and a separate imports field."""
    imports = (
        "import torch\nfrom torch import nn\nfrom ignite.metrics import Loss, MeanAbsoluteError"
    )
    code = """
class CEPSA_NN(nn.Module):
    def __init__(self):
        super(CEPSA_NN, self).__init__()
        self.linear_stack = nn.Sequential(nn.Linear(26, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.linear_stack(x)

    def loss_fn(self):
        return nn.MSELoss()

    def optimizer(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def metrics(self):
        return {"mae": MeanAbsoluteError(), "loss": Loss(self.loss_fn())}
"""
    m = client.add_model("cepsa", "pytorch", code, imports=imports)
    assert (m.input_shape, m.output_shape, m.param_count) == ([26], [1], 26 * 16 + 16 + 17)


TORCH_OK = """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
    def forward(self, x):
        return self.fc(x)
    def loss_fn(self):
        return nn.CrossEntropyLoss()
    def optimizer(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
    def metrics(self):
        return {"accuracy": Accuracy()}
"""


def test_the_same_code_is_built_once_per_process_and_an_error_every_time(
    ray_cluster, settings, monkeypatch
):
    import ray

    from kafkaml_ray.model_code import validate_model

    code = TORCH_OK + "\n# built once\n"
    first = validate_model("pytorch", code, "", settings)
    assert first["input_shape"] == [4]

    def no_ray(*args, **kwargs):
        raise RuntimeError("asked Ray")

    monkeypatch.setattr(ray, "remote", no_ray)
    assert validate_model("pytorch", code, "", settings) == first  # (from what it found)
    with pytest.raises(RuntimeError, match="asked Ray"):  # other limits: built again
        validate_model("pytorch", code, "", settings.model_copy(update={"validation_timeout_s": 9}))
    monkeypatch.undo()
    bad = TORCH_OK.replace("nn.Linear(4, 2)", "nn.Linear(4, 2, bogus=1)") + "\n# never kept\n"
    with pytest.raises(ModelCodeError, match="TypeError"):
        validate_model("pytorch", bad, "", settings)
    monkeypatch.setattr(ray, "remote", no_ray)
    with pytest.raises(RuntimeError, match="asked Ray"):  # an error is not kept
        validate_model("pytorch", bad, "", settings)


BAD = [
    (
        "Keras 2 optimizer argument",  # Kafka-ML's HCOPD example model, line for line
        "tensorflow",
        "model = keras.Sequential([keras.Input((4,)), layers.Dense(2)])\n"
        "model.compile(optimizer=keras.optimizers.Adam(lr=.0001), loss='mse')\n",
        r"line 2: ValueError: .*'lr'.* \(Keras 3 calls it `learning_rate`\)",
    ),
    (
        "syntax",
        "pytorch",
        "class Net(nn.Module):\n    def __init__(self)\n        pass\n",
        r"line 2: syntax error",
    ),
    ("no model", "tensorflow", "x = 1\n", r"must define a compiled Keras model named 'model'"),
    (
        "not compiled",
        "tensorflow",
        "model = keras.Sequential([keras.Input((4,)), layers.Dense(2)])\n",
        r"not compiled",
    ),
    (
        "no loss_fn",
        "pytorch",
        TORCH_OK.replace("def loss_fn", "def loss"),
        r"has no loss_fn\(\) method",
    ),
    (
        "metrics wrong type",
        "pytorch",
        TORCH_OK.replace('return {"accuracy": Accuracy()}', 'return ["accuracy"]'),
        r"metrics\(\) must return a dict of Ignite metrics",
    ),
    (
        "missing module",
        "pytorch",
        "import no_such_module_here\n" + TORCH_OK,
        r"line 1: ModuleNotFoundError: no module named 'no_such_module_here'",
    ),
    (
        "error in constructor",
        "pytorch",
        TORCH_OK.replace("nn.Linear(4, 2)", "nn.Linear(4, 2, bogus=1)"),
        r"line 5: TypeError",
    ),
    (
        "two classes",
        "pytorch",
        TORCH_OK + "\nclass Other(nn.Module):\n    pass\n",
        r"one nn.Module subclass.*Net, Other",
    ),
    (
        "exhausts memory",
        "pytorch",
        "blocks = []\nwhile True:\n    blocks.append(bytearray(10**8))\n",
        r"line 3: MemoryError",
    ),
    (
        "kills its process",
        "xgboost",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
        r"the model code crashed its process: killed by signal 9",
    ),
    (
        "kills its validator",
        "xgboost",
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        r"the xgboost validator died while it built the model code",
    ),
]


@pytest.mark.parametrize(("case", "framework", "code", "error"), BAD, ids=[b[0] for b in BAD])
def test_bad_model_code_is_refused_and_nothing_stored(
    ray_cluster, client, case, framework, code, error
):
    with pytest.raises(ModelCodeError, match=error):
        client.add_model("bad", framework, code)
    assert client.list_models() == []


def test_code_that_never_returns_hits_the_time_limit(ray_cluster, settings):
    from kafkaml_ray import Client

    # (Code that never returns hits any limit: a short one; the validator's start is apart.)
    client = Client(settings.model_copy(update={"validation_timeout_s": 5}))
    with pytest.raises(ModelCodeError, match="did not finish within 5s"):
        client.add_model("loop", "pytorch", "while True:\n    pass\n")
    assert client.list_models() == []
    client.add_model("ok", "pytorch", TORCH_OK)  # (the validator goes on)
    assert [m.name for m in client.list_models()] == ["ok"]


def test_a_validator_exits_when_idle_and_the_next_validation_starts_one(
    ray_cluster, settings, example
):
    """A framework's validator keeps its memory only while it has work: after
    ``validator_idle_s`` without any it exits, and the next validation starts a new one."""
    import ray

    from kafkaml_ray._private.rayutil import NAMESPACE, package_fingerprint
    from kafkaml_ray.model_code import validate_model

    name = f"validator-xgboost-{package_fingerprint()}"

    def running() -> bool:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
            return True
        except ValueError:
            return False

    if running():  # (one of an earlier test, with the default idle time)
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
        wait_until(lambda: not running(), 30, "the old validator to go")
    quick = settings.model_copy(update={"validator_idle_s": 1.0})
    code = example("digits_trees_xgboost.py")
    assert validate_model("xgboost", code, settings=quick)["output_shape"] == [10]
    assert running()
    wait_until(lambda: not running(), 30, "the idle validator to exit")
    again = validate_model("xgboost", code + "\n# edited\n", settings=quick)
    assert again["output_shape"] == [10]


def test_duplicates_unknown_ids_and_bad_arguments(ray_cluster, client, example):
    client.add_model("digits", "pytorch", example("digits_cnn_pytorch.py"))
    with pytest.raises(Conflict, match="'digits' exists already"):
        client.add_model("digits", "pytorch", example("digits_cnn_pytorch.py"))
    with pytest.raises(NotFound, match="no model with id or name 42"):
        client.get_model(42)
    with pytest.raises(InvalidInput, match="unknown framework 'jax'"):
        client.add_model("j", "jax", "x = 1")
    with pytest.raises(InvalidInput, match="cannot be a number"):
        client.add_model("123", "pytorch", "x = 1")


def test_update_revalidates_the_code(ray_cluster, client, example):
    m = client.add_model("r", "pytorch", example("regression_mlp_pytorch.py"))
    with pytest.raises(ModelCodeError):
        client.update_model(m.id, code="not python(")
    assert client.get_model(m.id).code == m.code
    m2 = client.update_model(m.id, code=example("regression_mlp_pytorch.py").replace("64", "8"))
    assert m2.param_count < m.param_count
    assert client.update_model(m.id, description="smaller").description == "smaller"


def test_updating_a_model_keeps_its_old_results_code(ray_cluster, client, example):
    """A result names the version of its model's code it trains with; updating the model
    adds a version for the next deployment and leaves the old results' code as it was."""
    code = example("regression_mlp_pytorch.py")
    m = client.add_model("r", "pytorch", code)
    config = client.create_configuration("c", [m.id])
    old = client.deploy_training(config.id).results[0]
    assert old.model_version == 1 and old.code_sha256
    client.update_model(m.id, code=code.replace("64", "8"))
    client.update_model(m.id, description="smaller")  # (the code is unchanged: no version)
    new = client.deploy_training(config.id).results[0]
    assert new.model_version == 2 and new.code_sha256 != old.code_sha256
    assert client.get_result(old.id).model_version == 1
    assert client.get_model_version(m.id, 1).code == code
    assert client.get_model_version("r", 2).code == code.replace("64", "8")
    assert [v.number for v in client.list_model_versions(m.id)] == [1, 2]
    with pytest.raises(NotFound, match="model 'r' has no version 3"):
        client.get_model_version("r", 3)

    from click.testing import CliRunner

    from kafkaml_ray.cli import cli

    env = {k: v for k, v in client.settings.env().items() if v is not None}

    def run(*args: str) -> str:
        r = CliRunner().invoke(cli, list(args), env=env)
        assert r.exit_code == 0, r.output
        return r.output

    listed = run("model", "versions", "r")
    assert old.code_sha256[:12] in listed and new.code_sha256[:12] in listed
    assert run("model", "versions", "r", "--code", "1").strip() == code.strip()
    assert f"code: r version 1 (sha256 {old.code_sha256[:12]}" in run("result", "show", str(old.id))


_CRAFTED = """
import os

class Boom:  # runs a command where it is unpickled
    def __reduce__(self):
        return (os.system, ("touch {marker}",))

class Crafted(Exception):
    pass

class Evil(nn.Module):
    @property
    def input_shape(self):
        if {at_validation}:
            raise Crafted(Boom())
        return [2]
    def forward(self, x):
        return self  # .cpu().numpy() below gives the crafted object
    def cpu(self):
        return self
    def numpy(self):
        return [Boom()]
    def loss_fn(self):
        return nn.MSELoss()
    def optimizer(self):
        return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    def metrics(self):
        return {{"loss": Loss(self.loss_fn())}}
"""


def test_objects_made_by_model_code_never_reach_the_callers_process(ray_cluster, client, tmp_path):
    """What model code makes (a shape, a prediction, an exception) was unpickled in the
    CLI's or panel's process, where an object's ``__reduce__`` runs what it names: model
    code ran outside Ray workers. Workers now answer in plain numbers and text."""
    import numpy as np
    from safetensors.torch import save

    from kafkaml_ray import artifacts
    from kafkaml_ray.store import ModelVersion, ResultStatus, TrainingResult
    from tests.conftest import add_model_unvalidated

    marker = tmp_path / "pwned"
    with pytest.raises(ModelCodeError, match="Crafted"):
        client.add_model("crafted", "pytorch", _CRAFTED.format(marker=marker, at_validation=True))
    assert not marker.exists()

    code = _CRAFTED.format(marker=marker, at_validation=False)
    model_id = add_model_unvalidated(client, "served", "pytorch", code)
    with client.store.session() as s:
        version = ModelVersion(model_id=model_id, number=1, sha256="0" * 64, code=code)
        weights = artifacts.put(client.settings.artifacts_uri, "crafted/w", save({}))
        r = TrainingResult(model_id=model_id, model_version=version, weights_uri=weights,
                           status=ResultStatus.FINISHED)  # fmt: skip
        s.add(r)
        s.flush()
        rid = r.id
    with pytest.raises(InvalidInput, match=f"result {rid} cannot predict this data: .*object"):
        client.predict(rid, np.zeros((1, 2), np.float32))
    assert not marker.exists()
