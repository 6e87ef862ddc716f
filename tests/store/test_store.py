"""The metadata store on SQLite and on PostgreSQL (KAFKAML_TEST_POSTGRES, set by
scripts/test.sh, which starts a private PostgreSQL server)."""

import os

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kafkaml_ray.store import (
    Base,
    Configuration,
    Datasource,
    DatasourceStatus,
    Inference,
    MLModel,
    ResultStatus,
    Store,
    TrainingDeployment,
    TrainingResult,
)

POSTGRES = os.environ.get("KAFKAML_TEST_POSTGRES")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield Store(f"sqlite:///{tmp_path / 'kml.db'}")
        return
    if not POSTGRES:
        pytest.skip("KAFKAML_TEST_POSTGRES is not set (scripts/test.sh sets it)")
    s = Store(POSTGRES)
    Base.metadata.drop_all(s.engine)
    Base.metadata.create_all(s.engine)
    yield s
    Base.metadata.drop_all(s.engine)
    s.dispose()


def _model(name="m", framework="pytorch"):
    return MLModel(name=name, framework=framework, code="...", input_shape=[8, 8], param_count=3)


def test_pipeline_rows_round_trip(store):
    with store.session() as s:
        m1, m2 = _model("torch"), _model("keras", "tensorflow")
        config = Configuration(name="c", models=[m1, m2])
        dep = TrainingDeployment(
            configuration=config,
            batch_size=16,
            gpu_fraction=0.25,
            kwargs={"pytorch": {"train": {"epochs": 3}}},
        )
        s.add(dep)
        s.flush()
        for m in (m1, m2):
            s.add(TrainingResult(deployment=dep, model=m))
        dep_id = dep.id

    with store.session() as s:
        dep = s.get_one(TrainingDeployment, dep_id)
        assert [r.model.name for r in dep.results] == ["torch", "keras"]
        assert all(r.status is ResultStatus.WAITING for r in dep.results)
        assert dep.kwargs["pytorch"]["train"]["epochs"] == 3
        r = dep.results[0]
        r.status = ResultStatus.FINISHED
        r.history = [{"epoch": 1, "train": {"loss": 0.5}, "val": {"loss": 0.6}}]
        r.test_metrics = {"accuracy": 0.97}
        r.confusion_matrix = [[1, 0], [0, 1]]
        r.training_time_s = 1.5
        result_id = r.id

    with store.session() as s:
        r = s.get_one(TrainingResult, result_id)
        assert r.status == "finished" and r.status.done
        assert r.history[0]["val"]["loss"] == 0.6
        assert r.confusion_matrix == [[1, 0], [0, 1]]
        s.add(Inference(result=r, input_topic="in", output_topic="out", replicas=2))

    with store.session() as s:
        inf = s.scalars(select(Inference)).one()
        assert (inf.result.id, inf.replicas, inf.status) == (result_id, 2, "deploying")


def test_names_are_unique(store):
    with store.session() as s:
        s.add(_model("same"))
    with pytest.raises(IntegrityError), store.session() as s:
        s.add(_model("same"))
    with store.session() as s:
        assert len(s.scalars(select(MLModel)).all()) == 1


def test_a_control_message_is_stored_once(store):
    """The control message's own topic/partition/offset is the key of its datasource."""

    def ds():
        return Datasource(
            source_topic="ctl",
            source_partition=0,
            source_offset=7,
            deployment_id=3,
            status=DatasourceStatus.ACCEPTED,
            topic="d:0:0:10",
            total_msg=10,
        )

    with store.session() as s:
        s.add(ds())
    with pytest.raises(IntegrityError), store.session() as s:
        s.add(ds())


def test_deleting_a_deployment_deletes_its_results(store):
    with store.session() as s:
        m = _model()
        dep = TrainingDeployment(configuration=Configuration(name="c", models=[m]))
        s.add(TrainingResult(deployment=dep, model=m))
        s.flush()
        dep_id = dep.id
    with store.session() as s:
        s.delete(s.get_one(TrainingDeployment, dep_id))
    with store.session() as s:
        assert s.scalars(select(TrainingResult)).all() == []
        assert s.scalars(select(MLModel)).one().name == "m"


def test_unreachable_store_is_a_clear_error(tmp_path):
    from kafkaml_ray.errors import Unavailable

    with pytest.raises(Unavailable, match="cannot open the metadata store"):
        Store("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")


def test_large_counters_offsets_and_a_nan_metric_are_stored(store):
    """A replica's counters pass 2**31 within days; a diverged loss is NaN (PostgreSQL's JSON
    refuses NaN): both are stored, the NaN as null."""
    from kafkaml_ray.store import Inference, ReplicaStats

    big = 2**40
    with store.session() as s:
        dep = TrainingDeployment(configuration=Configuration(name="c", models=[_model()]))
        result = TrainingResult(deployment=dep, model=dep.configuration.models[0])
        result.train_metrics = {"loss": float("nan"), "accuracy": 0.5}
        result.history = [{"epoch": 1, "train": {"loss": float("inf")}}]
        s.add(result)
        s.add(Datasource(source_topic="control", source_partition=0, source_offset=big,
                         total_msg=big, status=DatasourceStatus.RECEIVED))  # fmt: skip
        s.flush()
        inf = Inference(result_id=result.id, input_topic="i", output_topic="o",
                        input_format="RAW", input_config={})  # fmt: skip
        s.add(inf)
        s.flush()
        s.add(ReplicaStats(inference_id=inf.id, replica="r", consumed=big, predicted=big, lag=big))
        result_id = result.id
    with store.session() as s:
        r = s.get(TrainingResult, result_id)
        assert r.train_metrics == {"loss": None, "accuracy": 0.5}
        assert r.history[0]["train"]["loss"] is None
        assert s.query(Datasource).one().source_offset == big
        assert s.query(ReplicaStats).one().consumed == big


def test_a_stop_and_a_runs_last_write_cannot_both_win(store):
    """The status is compared and set in one UPDATE: once stopped, a run's last write (here
    FINISHED) does nothing, and a run that finished first stays finished."""
    from kafkaml_ray.store import move_result

    with store.session() as s:
        dep = TrainingDeployment(configuration=Configuration(name="c", models=[_model()]))
        r = TrainingResult(deployment=dep, model=dep.configuration.models[0])
        r.status = ResultStatus.TRAINING
        s.add(r)
        s.flush()
        result_id = r.id
    with store.session() as s:
        assert move_result(s, result_id, ResultStatus.STOPPED, error="user")
    with store.session() as s:
        assert not move_result(s, result_id, ResultStatus.FINISHED)
    with store.session() as s:
        assert s.get(TrainingResult, result_id).status == ResultStatus.STOPPED


def test_a_result_moves_only_along_its_edges_and_a_search_ends_once(store):
    """A finished result is never stopped, failed or claimed again; a stopped one resumes
    (waiting); a search that ended keeps how it ended."""
    from kafkaml_ray.store import TuneRun, TuneStatus, move_result, move_search

    with store.session() as s:
        model = _model()
        ds = Datasource(
            source_topic="ctl", source_partition=0, source_offset=1, topic="t:0:0:1",
            status=DatasourceStatus.ACCEPTED,
        )  # fmt: skip
        s.add(ds)
        s.flush()
        r = TrainingResult(model=model, status=ResultStatus.TRAINING)
        run = TuneRun(model=model, datasource_id=ds.id, metric="val_loss")
        s.add_all([r, run])
        s.flush()
        result_id, tune_id = r.id, run.id
    with store.session() as s:
        assert move_result(s, result_id, ResultStatus.FINISHED)
        for to in (ResultStatus.STOPPED, ResultStatus.FAILED, ResultStatus.TRAINING):
            assert not move_result(s, result_id, to)
        assert not move_result(s, result_id, ResultStatus.WAITING)  # (not from finished)
        assert move_search(s, tune_id, TuneStatus.STOPPED, "stopped by the user")
        assert not move_search(s, tune_id, TuneStatus.FINISHED)
    with store.session() as s:
        assert s.get(TrainingResult, result_id).status == ResultStatus.FINISHED
        assert s.get(TuneRun, tune_id).status == TuneStatus.STOPPED
        with pytest.raises(ValueError, match="cannot move from finished to stopped"):
            move_result(s, result_id, ResultStatus.STOPPED, only_from=[ResultStatus.FINISHED])


def test_ids_are_never_reused(store):
    """A result, deployment or search deleted from the end of its table leaves its id
    unused: a training task still running for a deleted result must not find a new result
    under its id (SQLite gave it to the next row)."""
    with store.session() as s:
        m = MLModel(name="m", framework="pytorch", code="...")
        dep = TrainingDeployment(configuration=Configuration(name="c", models=[m]))
        s.add(TrainingResult(deployment=dep, model=m))
        s.flush()
        ids = (dep.id, dep.results[0].id)
    with store.session() as s:
        s.delete(s.get_one(TrainingDeployment, ids[0]))  # (its results with it)
    with store.session() as s:
        m = s.scalars(select(MLModel)).one()
        dep = TrainingDeployment(configuration=s.scalars(select(Configuration)).one())
        s.add(TrainingResult(deployment=dep, model=m))
        s.flush()
        assert dep.id > ids[0] and dep.results[0].id > ids[1]


def test_a_version_number_taken_meanwhile_is_a_clear_error(store):
    """Two updates of one model at once: the second to write its "version 2" is refused
    with a one-line reason, not a raw IntegrityError (and there is never a twin)."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from kafkaml_ray.errors import Conflict
    from kafkaml_ray.model_code import model_version
    from kafkaml_ray.store import ModelVersion

    with store.session() as s:
        m = MLModel(name="m", framework="pytorch", code="one")
        s.add(m)
        s.flush()
        model_version(s, m)
        mid = m.id
    with store.session() as s:
        s.get_one(MLModel, mid).code = "three"

    def another_process_takes_number_2(session, *_):
        if any(isinstance(o, ModelVersion) for o in session.new):
            with Session(store.engine) as other, other.begin():
                other.add(ModelVersion(model_id=mid, number=2, sha256="x" * 64, code="two"))

    refused = pytest.raises(Conflict, match="another process changed the same rows")
    with refused, store.session() as s:
        event.listen(s, "before_flush", another_process_takes_number_2)
        model_version(s, s.get_one(MLModel, mid))
    with store.session() as s:
        numbers = s.scalars(select(ModelVersion.number).where(ModelVersion.model_id == mid))
        assert sorted(numbers) == [1, 2]
