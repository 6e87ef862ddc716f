"""What a training run writes, and that it writes nothing once its result is stopped."""

import pytest

from kafkaml_ray.errors import RunStopped
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import MLModel, ResultStatus, Store, TrainingResult
from kafkaml_ray.train.reporter import Reporter, RunSpec


@pytest.fixture
def run(tmp_path):
    settings = Settings(
        home=tmp_path, db=f"sqlite:///{tmp_path / 'kml.db'}", artifacts=str(tmp_path / "art")
    )
    store = Store(settings.db_url)
    with store.session() as s:
        r = TrainingResult(
            model=MLModel(name="m", framework="pytorch", code="..."),
            status=ResultStatus.TRAINING,
        )
        s.add(r)
        s.flush()
        rid = r.id
    spec = RunSpec(
        result_id=rid, model_name="m", framework="pytorch", code="...", imports="",
        batch_size=4, settings=settings, train_args={"epochs": 3},
    )  # fmt: skip
    yield store, spec, tmp_path / "art"
    store.dispose()


def _stop(store, rid):
    with store.session() as s:
        s.get_one(TrainingResult, rid).status = ResultStatus.STOPPED


def test_a_run_records_its_epochs_and_weights(run):
    store, spec, artifacts = run
    reporter = Reporter(spec)
    reporter.epoch(1, {"loss": 1.0}, {"loss": 2.0})
    reporter.trained(train={}, val={}, weights=b"w", weights_name="m.bin", seconds=1.0)
    with store.session() as s:
        r = s.get_one(TrainingResult, spec.result_id)
        assert r.history == [{"epoch": 1, "train": {"loss": 1.0}, "val": {"loss": 2.0}}]
        assert r.weights_uri and (artifacts / f"results/{r.id}/m.bin").read_bytes() == b"w"


@pytest.mark.parametrize("when", ["start", "batch", "epoch", "weights"])
def test_a_stopped_run_ends_at_its_next_report_and_writes_nothing(run, when):
    """However the run was started and whether or not Ray's cancel reached it (a stop
    during submission, a ``--submit`` job whose driver was killed), its next report finds
    the result stopped and ends it; no history, weights or file appear after the stop."""
    store, spec, artifacts = run
    reporter = None if when == "start" else Reporter(spec)
    _stop(store, spec.result_id)
    with pytest.raises(RunStopped, match=f"result {spec.result_id} is no longer training"):
        if when == "start":
            Reporter(spec)
        elif when == "batch":
            reporter.batch(1, 1, 10, 0.5)
        elif when == "epoch":
            reporter.epoch(1, {"loss": 1.0}, {})
        else:
            reporter.trained(train={}, val={}, weights=b"w", weights_name="m.bin", seconds=1)
    with store.session() as s:
        r = s.get_one(TrainingResult, spec.result_id)
        assert (r.status, r.history, r.weights_uri) == (ResultStatus.STOPPED, [], None)
    assert not artifacts.exists() or not any(artifacts.rglob("*.bin"))


def test_a_deleted_results_run_ends_too(run):
    store, spec, _ = run
    reporter = Reporter(spec)
    with store.session() as s:
        s.delete(s.get_one(TrainingResult, spec.result_id))
    with pytest.raises(RunStopped):
        reporter.epoch(1, {"loss": 1.0}, {})
