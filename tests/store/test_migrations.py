"""The store's schema migrations (kafkaml_ray/store/migrations), on SQLite and on PostgreSQL
(KAFKAML_TEST_POSTGRES, set by scripts/test.sh; a fresh database per test).

Databases made before the store kept a schema version are upgraded with every row kept; a
fresh one is at the newest revision; and the schema the migrations make is the models' own
(``compare_metadata``): the check that keeps models and migrations in step."""

import importlib.util
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import kafkaml_ray.store.migrations as migrations_module
from kafkaml_ray.errors import Unavailable
from kafkaml_ray.model_code import code_sha256
from kafkaml_ray.store import (
    Base,
    Datasource,
    DatasourceStatus,
    ReplicaStats,
    ResultStatus,
    Store,
    TrainingResult,
    TuneRun,
    TuneStatus,
)
from kafkaml_ray.store.migrations import SCRIPT_LOCATION, compare_type


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return ScriptDirectory.from_config(config).get_current_head()


HEAD = _head()


def _load_fec8cbc():
    path = Path(__file__).parent.parent / "data" / "store_fec8cbc.py"
    spec = importlib.util.spec_from_file_location("store_fec8cbc", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # SQLAlchemy resolves the annotations in it
    spec.loader.exec_module(module)
    return module


old = _load_fec8cbc()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kml.db'}"
    return request.getfixturevalue("postgres_url")  # tests/conftest.py: a fresh database


def _revision(url):
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _differences(url):
    """What autogenerate would change to make the database's schema the models' own."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": compare_type})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def _fill_fec8cbc(url):
    """A database as kafkaml-ray made it at fec8cbc, with a row in every table."""
    engine = create_engine(url)
    old.Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        m = old.MLModel(
            name="m", description="d", framework="pytorch", imports="import torch",
            code="...", input_shape=[8, 8], output_shape=[10], param_count=3,
        )  # fmt: skip
        config = old.Configuration(name="c", description="cd", models=[m])
        ds = old.Datasource(
            source_topic="ctl", source_partition=2, source_offset=2**31 - 1, deployment_id=1,
            status=old.DatasourceStatus.ACCEPTED, error=None, topic="d:0:0:10",
            input_format="AVRO", input_config={"schema": "x"}, description="digits",
            validation_rate=0.1, test_rate=0.2, total_msg=10, malformed_count=1,
            message={"deployment_id": 1},
        )  # fmt: skip
        refused = old.Datasource(
            source_topic="ctl", source_partition=2, source_offset=3,
            status=old.DatasourceStatus.REFUSED, error="not JSON",
        )  # fmt: skip
        s.add_all([config, ds, refused])
        s.flush()
        dep = old.TrainingDeployment(
            configuration=config, batch_size=16, kwargs={"pytorch": {"train": {"epochs": 3}}},
            gpu_fraction=0.5, confusion_matrix=False, shuffle_seed=7, on_malformed="skip",
            job_id="raysubmit_1", datasource_id=ds.id,
        )  # fmt: skip
        tune = old.TuneRun(
            model=m, datasource_id=ds.id, space={"lr": [0.1, 0.01]}, metric="val_loss",
            mode="min", num_samples=2, status="finished",
        )  # fmt: skip
        s.add_all([dep, tune])
        s.flush()
        trained = old.TrainingResult(
            deployment=dep, model=m, status=old.ResultStatus.FINISHED,
            train_metrics={"loss": 0.5}, val_metrics={"loss": 0.6}, test_metrics={"acc": 0.9},
            history=[{"epoch": 1, "train": {"loss": 0.5}}], progress={"epoch": 1, "epochs": 1},
            confusion_matrix=[[1, 0], [0, 1]], training_time_s=1.5, weights_uri="file:///w",
            confusion_matrix_uri="file:///cm.png", hyperparameters={}, best=False,
        )  # fmt: skip
        tuned = old.TrainingResult(
            model=m, status=old.ResultStatus.FAILED, error="diverged", tune_id=tune.id,
            hyperparameters={"lr": 0.1}, best=True,
        )  # fmt: skip
        s.add_all([trained, tuned])
        s.flush()
        inference = old.Inference(
            result_id=trained.id, status=old.InferenceStatus.RUNNING, input_topic="in",
            output_topic="out", input_format="RAW", input_config={"dtype": "float32"},
            replicas=2, min_replicas=1, max_replicas=4, gpu_fraction=0.25, batch_size=64,
            max_wait_ms=5.0, stats={"p50_ms": 1.5},
        )  # fmt: skip
        s.add(inference)
        s.flush()
        s.add(
            old.ReplicaStats(
                inference_id=inference.id, replica="r1", consumed=2**31 - 1, predicted=5,
                dead_letters=1, lag=2, msgs_per_s=10.5, partitions=[0, 1],
            )
        )  # fmt: skip
    rows = _rows(engine, old.Base.metadata)
    engine.dispose()
    assert all(rows.values()), rows  # a row in every table
    return rows


def _rows(engine, metadata, like=None):
    """Every row of every table of ``metadata``, in key order; only ``like``'s tables and
    columns."""
    rows = {}
    with engine.connect() as conn:
        for name, table in metadata.tables.items():
            if name not in (like or metadata).tables:
                continue  # a table added since
            columns = [table.c[c.name] for c in (like or metadata).tables[name].columns]
            query = select(*columns).order_by(*table.primary_key.columns)
            rows[name] = [dict(r) for r in conn.execute(query).mappings()]
    return rows


def test_a_fec8cbc_database_is_upgraded_with_every_row_kept(url):
    before = _fill_fec8cbc(url)
    assert _revision(url) is None

    store = Store(url)
    try:
        assert _revision(url) == HEAD
        assert _differences(url) == []
        assert _rows(store.engine, Base.metadata, like=old.Base.metadata) == before
        with store.session() as s:
            sources = s.scalars(select(Datasource).order_by(Datasource.id)).all()
            assert [(d.source_cluster, d.source_topic_id) for d in sources] == [("", "")] * 2
            # Each result now names the code it trained with: its model's version 1.
            results = s.scalars(select(TrainingResult).order_by(TrainingResult.id)).all()
            assert len(results) == 2
            for r in results:
                v = r.model_version
                assert (v.number, v.code, v.imports) == (1, r.model.code, r.model.imports)
                assert v.sha256 == code_sha256(r.model.code, r.model.imports)
                # No lineage record (it was not kept then), no tags or notes, no original.
                assert (r.lineage, r.tags, r.notes, r.reproduction_of) == (None, [], "", None)
            results[1].reproduction_of, results[1].tags = results[0].id, ["kept"]
            (search,) = s.scalars(select(TuneRun)).all()
            assert search.status is TuneStatus.FINISHED  # (an enum since migration 0009)
        with store.session() as s:  # the new columns take values
            r = s.get_one(TrainingResult, results[1].id)
            assert (r.reproduction_of, r.tags) == (results[0].id, ["kept"])

        # The same topic, partition and offset on another cluster is another message; the
        # same message again is still refused.
        def ds(cluster, offset=2**31 - 1):
            return Datasource(
                source_cluster=cluster, source_topic="ctl", source_partition=2,
                source_offset=offset, total_msg=offset, status=DatasourceStatus.RECEIVED,
            )  # fmt: skip

        with store.session() as s:
            s.add(ds("other-cluster"))
            s.add(ds("", offset=2**40))  # the counters are 64-bit
            s.add(ReplicaStats(inference_id=1, replica="r2", consumed=2**40, lag=2**40))
        with pytest.raises(IntegrityError), store.session() as s:
            s.add(ds(""))
        with pytest.raises(IntegrityError), store.session() as s:
            s.add(ds("other-cluster"))
        with store.session() as s:
            assert s.get_one(ReplicaStats, (1, "r2")).consumed == 2**40
        # Ids are never reused (SQLite gave a deleted newest row's id to the next one).
        with store.session() as s:
            newest = max(r.id for r in s.scalars(select(TrainingResult)))
            s.delete(s.get_one(TrainingResult, newest))
        with store.session() as s:
            row = TrainingResult(model_id=results[0].model_id, status=ResultStatus.WAITING)
            s.add(row)
            s.flush()
            assert row.id > newest
        if url.startswith("sqlite"):  # the migration turned them off for its own connection
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.dispose()


def test_a_fresh_database_is_made_at_the_newest_revision_as_the_models_say(url):
    store = Store(url)
    store.dispose()
    assert _revision(url) == HEAD
    assert _differences(url) == []


def test_the_migrations_replayed_from_nothing_make_the_models_schema(url):
    """The revisions themselves, not create_all: up, down to the baseline and up again."""
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            command.downgrade(config, "0001")
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    assert _revision(url) == HEAD
    assert _differences(url) == []


def test_a_database_at_the_newest_revision_opens_without_migrating(url, monkeypatch):
    Store(url).dispose()

    def no(*args, **kwargs):
        raise AssertionError("migrated again")

    monkeypatch.setattr(migrations_module, "_migration_lock", no)
    monkeypatch.setattr(command, "upgrade", no)
    monkeypatch.setattr(command, "stamp", no)
    Store(url).dispose()


def test_a_database_newer_than_the_code_is_a_clear_error(url):
    Store(url).dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00dfeed'")
    engine.dispose()
    with pytest.raises(Unavailable, match="schema revision 'f00dfeed', newer than"):
        Store(url)


@pytest.mark.parametrize("start", ["empty", "fec8cbc"])
def test_processes_opening_one_database_at_once_all_open_it(url, start):
    """Ray workers and the listener open the store together: one migrates, the others wait
    and find it done (threads with an engine each, as processes would)."""
    before = _fill_fec8cbc(url) if start == "fec8cbc" else None
    together = threading.Barrier(4)

    def open_store(_):
        together.wait()
        return Store(url)

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(open_store, range(4)))
    for store in stores:
        store.dispose()
    assert _revision(url) == HEAD
    assert _differences(url) == []
    if before:
        engine = create_engine(url)
        assert _rows(engine, Base.metadata, like=old.Base.metadata) == before
        engine.dispose()


def test_a_sqlite_upgrade_that_fails_half_way_leaves_the_database_as_it_was(tmp_path):
    """pysqlite commits before every DDL statement on its own: an upgrade that failed (or
    was killed) after altering some tables left a database no kafkaml-ray could open. The
    whole upgrade is one transaction: it fails, and the database is as before, at its old
    revision, with its rows; once the cause is gone it upgrades."""
    url = f"sqlite:///{tmp_path / 'kml.db'}"
    _fill_fec8cbc(url)
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.stamp(config, "0001")
        command.upgrade(config, "0007")
        # What makes 0008 fail on its third table, after it rebuilt two.
        conn.exec_driver_sql("CREATE TABLE _alembic_tmp_tune_runs (x INTEGER)")

    def schema() -> dict[str, str]:
        with engine.connect() as conn:
            return dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master").all())

    before = schema()
    with pytest.raises(Exception, match="_alembic_tmp_tune_runs"):
        Store(url)
    assert _revision(url) == "0007" and schema() == before  # (results was rebuilt, then)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE _alembic_tmp_tune_runs")
    store = Store(url)
    assert _revision(url) == HEAD and _differences(url) == []
    with store.session() as s:
        assert len(s.scalars(select(TrainingResult)).all()) == 2
    store.dispose()
    engine.dispose()
