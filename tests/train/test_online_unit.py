"""Parts of an online run without a broker: where it starts reading."""

import pytest
from confluent_kafka import TopicPartition

from kafkaml_ray.train.online_stream import OnlineStream
from tests.frameworks.test_conformance import MODELS


class _Producing:
    """A consumer of a partition that a producer keeps writing to: 10 more messages land
    between any two look-ups, and none is at or after the control message's time yet."""

    def __init__(self):
        self.end = 100

    def get_watermark_offsets(self, tp, timeout=None):
        self.end += 10
        return 0, self.end

    def offsets_for_times(self, wanted, timeout=None):
        self.end += 10
        return [TopicPartition(tp.topic, tp.partition, -1) for tp in wanted]


def test_an_online_run_starts_at_the_end_read_before_the_time_lookup():
    """Messages written between the time look-up and the read of the end were skipped:
    the end is read first."""
    stream = object.__new__(OnlineStream)
    stream.consumer = _Producing()
    stream._partitions = lambda topic: [0]
    starts = stream._starts({"topics": ["t"], "since_ms": 1})
    assert starts == {"t:0": 110}  # (read after the time look-up, it was 120: 10 skipped)


_ADAM = MODELS["pytorch"]  # (a small classifier with Adam: its state is checkpointed)


def _spec(tmp_path):
    from kafkaml_ray.settings import Settings
    from kafkaml_ray.train.reporter import RunSpec

    settings = Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'kml.db'}")
    return RunSpec(
        result_id=1, model_name="tiny", framework="pytorch", code=_ADAM, imports="",
        batch_size=8, settings=settings, train_args={"shuffle": False},
    )  # fmt: skip


def _window(seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64")


def _training(tmp_path):
    """`_spec`, with its result stored as training (what an online run's records need)."""
    from kafkaml_ray.store import MLModel, ResultStatus, Store, TrainingResult

    spec = _spec(tmp_path)
    with Store(spec.settings.db_url).session() as s:
        model = MLModel(name="tiny", framework="pytorch", code=_ADAM)
        s.add(TrainingResult(model=model, status=ResultStatus.TRAINING))
    return spec


def _row(window):
    """A trained window's row, as an online run records it."""
    return {
        "window": window, "messages": 64, "malformed": 0,
        "offsets": {"t:0": [64 * window - 64, 64 * window]}, "next": {"t:0": 64 * window},
        "prequential": {}, "train": {}, "val": {"accuracy": window / 10},
    }  # fmt: skip


def test_a_resumed_pytorch_run_keeps_its_optimizer_state(tmp_path):
    """Checkpoints held the weights only: Adam's moments started from zero on every resume,
    so a resumed run trained differently from one that was never stopped."""
    from kafkaml_ray.frameworks.torch import PyTorch, TorchLearner

    spec = _spec(tmp_path)
    going = TorchLearner(PyTorch(), spec)
    going.fit(*_window(1), epochs=2)
    _, checkpoint = going.snapshot()
    resumed = TorchLearner(PyTorch(), spec)
    resumed.restore(checkpoint)
    going.fit(*_window(2), epochs=2)
    resumed.fit(*_window(2), epochs=2)
    assert going.weights() == resumed.weights()


def test_a_crash_before_the_window_was_recorded_keeps_its_version(tmp_path):
    """The checkpoint was written, then the process died before the window and the version
    it published reached the store: the resumed run records both."""
    from kafkaml_ray.frameworks.torch import PyTorch, TorchLearner
    from kafkaml_ray.store import (
        OnlineWindow,
        ResultVersion,
        Store,
        select,
    )
    from kafkaml_ray.train.online import OnlineRecords

    spec = _training(tmp_path)
    learner = TorchLearner(PyTorch(), spec)
    learner.fit(*_window(1), epochs=1)
    weights, state = learner.snapshot()
    publish = (weights, "model.safetensors", {"accuracy": 0.5, "monitored": 0.5})
    OnlineRecords(spec).save_checkpoint([(_row(1), publish)], state)
    # (the process dies here)
    resumed = TorchLearner(PyTorch(), spec)
    saved = OnlineRecords(spec).resume(resumed)
    assert saved["window"] == 1 and resumed.weights() == weights
    with Store(spec.settings.db_url).session() as s:
        assert [w.version for w in s.scalars(select(OnlineWindow))] == [1]
        (v,) = s.scalars(select(ResultVersion)).all()
        assert (v.version, v.window, v.metrics["monitored"]) == (1, 1, 0.5)


def test_windows_checkpointed_together_keep_each_versions_own_weights(tmp_path):
    """Three windows trained between two checkpoints, the first and the third publishing:
    one checkpoint holds them, and the store gets the three windows and two versions, each
    version with the weights of its own window (not the checkpoint's), also when the process
    died before they were recorded. A checkpoint written when each held one window still
    resumes (a run that goes on after an upgrade)."""
    import json

    from kafkaml_ray import artifacts
    from kafkaml_ray.frameworks.torch import PyTorch, TorchLearner
    from kafkaml_ray.store import (
        OnlineWindow,
        ResultVersion,
        Store,
        TrainingResult,
        select,
    )
    from kafkaml_ray.train.online import OnlineRecords

    spec = _training(tmp_path)
    learner, run = TorchLearner(PyTorch(), spec), OnlineRecords(spec)
    windows, weights = [], {}
    for w in (1, 2, 3):
        learner.fit(*_window(w), epochs=1)
        weights[w] = learner.weights()
        publish = (weights[w], "model.safetensors", {"accuracy": w / 10}) if w != 2 else None
        windows.append((_row(w), publish))
    run.save_checkpoint(windows, learner.snapshot()[1])
    # (the process dies here: nothing reached the store)
    resumed = TorchLearner(PyTorch(), spec)
    saved = run.resume(resumed)
    assert (saved["window"], saved["positions"]) == (3, {"t:0": 192})
    assert resumed.weights() == weights[3]
    with Store(spec.settings.db_url).session() as s:
        stored = s.scalars(select(OnlineWindow).order_by(OnlineWindow.window)).all()
        assert [(w.window, w.version) for w in stored] == [(1, 1), (2, None), (3, 2)]
        versions = s.scalars(select(ResultVersion).order_by(ResultVersion.version)).all()
        assert [(v.window, artifacts.get(v.weights_uri)) for v in versions] == [
            (1, weights[1]),
            (3, weights[3]),
        ]
        assert s.get(TrainingResult, 1).weights_uri == versions[-1].weights_uri
    run.resume(TorchLearner(PyTorch(), spec))  # again: nothing is recorded twice
    with Store(spec.settings.db_url).session() as s:
        assert len(s.scalars(select(OnlineWindow)).all()) == 3

    # A checkpoint of the earlier form: one window, the published metrics, no weights URI.
    learner.fit(*_window(4), epochs=1)
    state = learner.snapshot()[1]
    uri = artifacts.replace(spec.settings.artifacts_uri, f"{run.prefix}/window-4-state", state)
    old = {"window": 4, "state_uri": uri, "positions": {"t:0": 256}, "row": _row(4),
           "publish": {"accuracy": 0.4, "monitored": 0.4}}  # fmt: skip
    artifacts.replace(spec.settings.artifacts_uri, f"{run.prefix}/checkpoint.json",
                      json.dumps(old).encode())  # fmt: skip
    resumed = TorchLearner(PyTorch(), spec)
    assert run.resume(resumed)["window"] == 4
    with Store(spec.settings.db_url).session() as s:
        v = s.scalars(select(ResultVersion).where(ResultVersion.version == 3)).one()
        assert (v.window, artifacts.get(v.weights_uri)) == (4, resumed.weights())


def test_a_transient_store_or_artifact_error_is_retried_and_said(monkeypatch):
    """A PostgreSQL restart, SQLite busy past its time-out, an artifact write that fails:
    an online run failed for good on the first. It retries with backoff and says so in
    its progress; other errors, and errors that outlast the retries, still fail it."""
    import pytest
    from sqlalchemy.exc import OperationalError

    from kafkaml_ray.train import online

    class Run:
        spec = type("Spec", (), {"result_id": 7})()
        progress: list = []

        def update(self, **fields):
            self.progress.append(fields["progress"])

    waits: list[float] = []
    monkeypatch.setattr(online.time, "sleep", waits.append)
    calls = iter([OperationalError("UPDATE", {}, Exception("server closed the connection"))] * 3)

    def flaky():
        for e in calls:
            raise e
        return "written"

    run = Run()
    assert online._retrying(run, "recording the window", flaky) == "written"
    assert waits == [1.0, 2.0, 4.0]
    assert run.progress[-1] == {
        "phase": "retrying",
        "retrying": "recording the window: (builtins.Exception) server closed the connection",
    }
    with pytest.raises(ValueError):  # not transient: at once
        online._retrying(run, "x", lambda: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(OSError):  # transient, but for longer than the retries
        online._retrying(run, "x", lambda: (_ for _ in ()).throw(OSError("disk")), 5.0)


@pytest.mark.parametrize("torn", ["state", "record"])
def test_a_torn_checkpoint_falls_back_to_the_one_before(tmp_path, torn):
    """A crash (of the machine) can leave the newest checkpoint's state or record empty or
    torn: the resume takes the one before it instead of failing."""
    from kafkaml_ray import artifacts
    from kafkaml_ray.frameworks.torch import PyTorch, TorchLearner
    from kafkaml_ray.train.online import OnlineRecords

    spec = _training(tmp_path)
    learner, run = TorchLearner(PyTorch(), spec), OnlineRecords(spec)
    weights = {}
    for window in (1, 2):
        learner.fit(*_window(window), epochs=1)
        weights[window], state = learner.snapshot()
        run.save_checkpoint([(_row(window), None)], state)
    base = f"{spec.settings.artifacts_uri}/{run.prefix}"
    if torn == "state":
        artifacts.put(base, "window-2-state", b"")  # (empty: written, never flushed)
    else:
        artifacts.put(base, "checkpoint.json", b'{"window": 2, "state_u')
    resumed = TorchLearner(PyTorch(), spec)
    saved = run.resume(resumed)
    assert saved["window"] == 1 and saved["positions"] == {"t:0": 64}
    assert resumed.weights() == weights[1]
