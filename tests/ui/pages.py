"""What the panel's tests share: a store seeded as trainings, searches and inferences leave
it (without training), predictions on a topic, and reading an AppTest page (buttons, charts,
tables, markdown)."""

from __future__ import annotations

import json
import math
import random
import re
import uuid
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

__all__ = [
    "DIGITS_CONFIG",
    "finish",
    "seed_training",
    "seed_tune",
    "seed_inference",
    "produce_predictions",
    "button",
    "charts",
    "table",
    "shown",
]


DIGITS_CONFIG = {
    "data_type": "float32",
    "label_type": "int64",
    "data_reshape": "8 8",
    "label_reshape": "",
}


def _curve(epochs: int, start: float, end: float, rng: random.Random) -> list[float]:
    return [
        round(end + (start - end) * math.exp(-3.0 * e / epochs) + rng.uniform(-0.01, 0.01), 4)
        for e in range(1, epochs + 1)
    ]


def _matrix(accuracy: float, rng: random.Random, classes: int = 10, per: int = 18) -> list:
    rows = []
    for true in range(classes):
        row = [0] * classes
        for _ in range(per):
            hit = rng.random() < accuracy
            row[true if hit else rng.choice([c for c in range(classes) if c != true])] += 1
        rows.append(row)
    return rows


def finish(r, settings, epochs: int, accuracy: float, rng: random.Random) -> None:
    """Fill a result row as a finished run leaves it (`Reporter.epoch` and `finish`)."""
    from kafkaml_ray import artifacts
    from kafkaml_ray.store import ResultStatus

    gap = 0.97 - accuracy
    loss = {
        "train": _curve(epochs, 2.2, 0.08 + gap, rng),
        "val": _curve(epochs, 2.1, 0.12 + gap, rng),
    }
    acc = {
        "train": _curve(epochs, 0.25, accuracy + 0.015, rng),
        "val": _curve(epochs, 0.3, accuracy, rng),
    }
    r.history = [
        {
            "epoch": e + 1,
            "train": {"loss": loss["train"][e], "accuracy": acc["train"][e]},
            "val": {"loss": loss["val"][e], "accuracy": acc["val"][e]},
        }
        for e in range(epochs)
    ]
    r.status = ResultStatus.FINISHED
    r.train_metrics = dict(r.history[-1]["train"])
    r.val_metrics = dict(r.history[-1]["val"])
    r.test_metrics = {"loss": loss["val"][-1] + 0.01, "accuracy": round(accuracy - 0.01, 4)}
    r.confusion_matrix = _matrix(accuracy - 0.01, rng)
    r.training_time_s = round(40.0 + 400 * gap, 1)
    r.progress = {"epoch": epochs, "epochs": epochs, "metrics": r.val_metrics}
    r.weights_uri = artifacts.put(
        settings.artifacts_uri, f"results/{r.id}/model.safetensors", b"weights of result %d" % r.id
    )


def seed_training(
    client,
    models: tuple[tuple[str, str], ...] = (("digits-cnn-pytorch", "pytorch"),),
    epochs: int = 8,
    status: str = "finished",
    name: str | None = None,
) -> dict[str, Any]:
    """Rows as a finished training of the digits leaves them, written directly: the models
    (unvalidated), a configuration, the accepted datasource, the deployment and one result
    per model with its per-epoch history, metrics, confusion matrix and weights file.

    Returns the ids: ``{"models": [...], "configuration", "datasource", "deployment",
    "results": [...]}``."""
    from kafkaml_ray.store import (
        Configuration,
        Datasource,
        DatasourceStatus,
        MLModel,
        ResultStatus,
        TrainingDeployment,
        TrainingResult,
        select,
    )

    rng = random.Random(len(models) * 100 + epochs)
    with client.store.session() as s:
        rows = []
        for model_name, framework in models:
            m = s.scalar(select(MLModel).where(MLModel.name == model_name))
            if m is None:
                m = MLModel(
                    name=model_name,
                    framework=framework,
                    code="...",
                    input_shape=[8, 8],
                    output_shape=[10],
                    param_count=38_282,
                )
                s.add(m)
            rows.append(m)
        s.flush()
        n = s.scalar(select(Datasource.id).order_by(Datasource.id.desc())) or 0
        config = Configuration(name=name or f"digits-{uuid.uuid4().hex[:6]}", models=rows)
        message = {
            "topic": "digits:0:0:1797",
            "input_format": "RAW",
            "input_config": DIGITS_CONFIG,
            "description": "digits",
            "validation_rate": 0.1,
            "test_rate": 0.1,
            "total_msg": 1797,
        }
        ds = Datasource(
            source_topic="KAFKA_ML_CONTROL_TOPIC",
            source_partition=0,
            source_offset=n,
            status=DatasourceStatus.ACCEPTED,
            topic=message["topic"],
            input_format="RAW",
            input_config=DIGITS_CONFIG,
            description="digits",
            validation_rate=0.1,
            test_rate=0.1,
            total_msg=1797,
            message=message,
        )
        s.add_all([config, ds])
        s.flush()
        dep = TrainingDeployment(
            configuration=config,
            batch_size=32,
            kwargs={
                fw: {"train": {"epochs": epochs}, "val": {}} for fw in ("pytorch", "tensorflow")
            },
            datasource_id=ds.id,
        )
        s.add(dep)
        s.flush()
        ds.deployment_id = dep.id
        results = []
        for i, m in enumerate(rows):
            r = TrainingResult(deployment=dep, model=m, status=ResultStatus(status))
            s.add(r)
            s.flush()
            if status == "finished":
                finish(r, client.settings, epochs, 0.97 - 0.03 * i, rng)
            results.append(r.id)
        return {
            "models": [m.id for m in rows],
            "configuration": config.id,
            "datasource": ds.id,
            "deployment": dep.id,
            "results": results,
        }


def seed_tune(client, status: str = "finished", on: dict | None = None) -> dict[str, Any]:
    """A finished Ray Tune search as `run_tune` leaves it: three trials (one failed), the
    best one marked, on the first model and the datasource of ``on`` (`seed_training`'s
    ids; a new waiting deployment by default). Returns its id, its datasource and the
    trials' result ids."""
    from kafkaml_ray.store import ResultStatus, TrainingResult, TuneRun

    ids = on or seed_training(client, status="waiting")
    rng = random.Random(3)
    space = {"lr": {"loguniform": [0.0001, 0.01]}, "batch_size": {"choice": [16, 32]}, "epochs": 4}
    trials = [
        ({"lr": 0.003, "batch_size": 16, "epochs": 4}, 0.95),
        ({"lr": 0.0002, "batch_size": 32, "epochs": 4}, 0.81),
    ]
    with client.store.session() as s:
        run = TuneRun(
            model_id=ids["models"][0],
            datasource_id=ids["datasource"],
            space=space,
            metric="val_accuracy",
            mode="max",
            num_samples=3,
            status=status,
        )
        s.add(run)
        s.flush()
        results = []
        for params, accuracy in trials:
            r = TrainingResult(model_id=run.model_id, tune_id=run.id, hyperparameters=params)
            s.add(r)
            s.flush()
            finish(r, client.settings, 4, accuracy, rng)
            results.append(r)
        results[0].best = status == "finished"
        failed = TrainingResult(
            model_id=run.model_id,
            tune_id=run.id,
            hyperparameters={"lr": 0.009, "batch_size": 32, "epochs": 4},
            status=ResultStatus.FAILED,
            error="RuntimeError: loss is nan",
        )
        s.add(failed)
        s.flush()
        return {
            "tune": run.id,
            "datasource": ids["datasource"],
            "model": ids["models"][0],
            "results": [r.id for r in results] + [failed.id],
        }


def seed_inference(
    client, result_id: int, output_topic: str, status: str = "running", error: str | None = None
) -> int:
    """An inference row as a running one leaves it, with a replica's recent figures."""
    from kafkaml_ray.store import Inference, InferenceStatus, ReplicaStats

    with client.store.session() as s:
        inf = Inference(
            result_id=result_id,
            input_topic=f"{output_topic}-in",
            output_topic=output_topic,
            input_config={"data_type": "float32", "data_reshape": "8 8"},
            replicas=2,
            status=InferenceStatus(status),
            error=error,
        )
        s.add(inf)
        s.flush()
        for n, lag in enumerate((3, 4)):
            s.add(
                ReplicaStats(
                    inference_id=inf.id,
                    replica=f"replica-{n}",
                    consumed=100,
                    predicted=99,
                    dead_letters=1,
                    lag=lag,
                    msgs_per_s=20.5,
                )
            )
        return inf.id


def produce_predictions(settings, topic: str, count: int, classes: int = 10) -> None:
    """Predictions as the ingress writes them, and one dead letter."""
    from confluent_kafka import Producer

    rng = random.Random(7)
    producer = Producer(settings.kafka_config())
    for n in range(count):
        scores = [rng.random() * 0.1 for _ in range(classes)]
        scores[n % classes] = 1.0
        total = sum(scores)
        value = json.dumps({"values": [v / total for v in scores]})
        producer.produce(topic, value.encode(), f"sample-{n}".encode())
    producer.produce(
        f"{topic}.dlq", b"\x00\x01", b"bad", headers=[("error", b"cannot reshape 2 bytes")]
    )
    assert producer.flush(30) == 0


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def charts(at: AppTest) -> list[dict]:
    """The Vega-Lite specs of the page's Altair charts."""
    return [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")]


def table(at: AppTest, column: str) -> list[dict]:
    """The rows of the page's table that has ``column``."""
    frame = next(d.value for d in at.dataframe if column in d.value.columns)
    return frame.to_dict("records")


@pytest.mark.integration
def shown(markdown: str) -> str:
    """What Markdown source with backslash escapes shows."""
    return re.sub(r"\\(.)", r"\1", markdown)
