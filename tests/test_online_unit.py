"""Parts of an online run without a broker: where it starts reading."""

from confluent_kafka import TopicPartition

from kafkaml_ray.train.online import _Stream


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
    stream = object.__new__(_Stream)
    stream.consumer = _Producing()
    stream._partitions = lambda topic: [0]
    starts = stream._starts({"topics": ["t"], "since_ms": 1})
    assert starts == {"t:0": 110}  # (read after the time look-up, it was 120: 10 skipped)


_ADAM = """
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
    def forward(self, x):
        return self.fc(x)
    def loss_fn(self):
        return nn.CrossEntropyLoss()
    def optimizer(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)
    def metrics(self):
        return {"accuracy": Accuracy(), "loss": Loss(self.loss_fn())}
"""


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


def test_a_resumed_pytorch_run_keeps_its_optimizer_state(tmp_path):
    """Checkpoints held the weights only: Adam's moments started from zero on every resume,
    so a resumed run trained differently from one that was never stopped."""
    from kafkaml_ray.train.learners import TorchLearner

    spec = _spec(tmp_path)
    going = TorchLearner(spec)
    going.fit(*_window(1), epochs=2)
    _, checkpoint = going.snapshot()
    resumed = TorchLearner(spec)
    resumed.restore(checkpoint)
    going.fit(*_window(2), epochs=2)
    resumed.fit(*_window(2), epochs=2)
    assert going.weights() == resumed.weights()


def test_a_crash_before_the_window_was_recorded_keeps_its_version(tmp_path):
    """The checkpoint was written, then the process died before the window and the version
    it published reached the store: the resumed run records both."""
    from kafkaml_ray.store import (
        MLModel,
        OnlineWindow,
        ResultStatus,
        ResultVersion,
        Store,
        TrainingResult,
        select,
    )
    from kafkaml_ray.train.learners import TorchLearner
    from kafkaml_ray.train.online import _Run

    spec = _spec(tmp_path)
    with Store(spec.settings.db_url).session() as s:
        model = MLModel(name="tiny", framework="pytorch", code=_ADAM)
        s.add(TrainingResult(model=model, status=ResultStatus.TRAINING))
    learner = TorchLearner(spec)
    learner.fit(*_window(1), epochs=1)
    weights, state = learner.snapshot()
    row = {
        "window": 1, "messages": 64, "malformed": 0, "offsets": {"t:0": [0, 64]},
        "next": {"t:0": 64}, "prequential": {}, "train": {}, "val": {"accuracy": 0.5},
    }  # fmt: skip
    _Run(spec).save_checkpoint(row, state, {"accuracy": 0.5, "monitored": 0.5})
    # (the process dies here)
    resumed = TorchLearner(spec)
    saved = _Run(spec).resume(resumed)
    assert saved["window"] == 1 and resumed.weights() == weights
    with Store(spec.settings.db_url).session() as s:
        assert [w.version for w in s.scalars(select(OnlineWindow))] == [1]
        (v,) = s.scalars(select(ResultVersion)).all()
        assert (v.version, v.window, v.metrics["monitored"]) == (1, 1, 0.5)
