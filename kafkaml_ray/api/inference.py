"""Inferences: serve a trained result from an input topic to an output topic (Ray Serve),
stop, restart, delete, and tap its predictions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from kafkaml_ray.api.base import Service, get_row
from kafkaml_ray.errors import InvalidInput, NotFound
from kafkaml_ray.options import ServingOptions, checked
from kafkaml_ray.schemas import InferenceInfo, Prediction
from kafkaml_ray.store import (
    Datasource,
    Inference,
    InferenceStatus,
    ReplicaStats,
    TrainingDeployment,
    TuneRun,
)

__all__ = ["Inferences"]


class Inferences(Service):
    """Trained results served over Kafka (and HTTP)."""

    def deploy(
        self,
        result_id: int,
        input_topic: str,
        output_topic: str,
        input_format: str | None = None,
        input_config: Mapping[str, Any] | None = None,
        autoscaling: Mapping[str, Any] | None = None,
        follow: bool = False,
        version: int | None = None,
        **options: Any,
    ) -> InferenceInfo:
        """Serve a trained result: Kafka ingress replicas read ``input_topic`` (one consumer
        group) and write ``{"values": [...]}`` to ``output_topic``; bad inputs go to
        ``<output_topic>.dlq``. The input format and config default to those of the
        result's data stream. ``options`` are `~kafkaml_ray.options.ServingOptions`
        (``replicas``, ``min_replicas``/``max_replicas`` for lag-driven autoscaling,
        ``gpu_fraction``, ``batch_size``, ``max_wait_ms``); ``autoscaling`` overrides Serve's
        autoscaling settings (e.g. shorter delays).

        An online result serves its newest published version, pinned, or ``version``; with
        ``follow`` the replicas swap to each newer version as it is published (in place: no
        restart, no input left out). Each output names its version in a
        ``kafkaml-model-version`` header."""
        from kafkaml_ray.ingest.formats import get_format
        from kafkaml_ray.serve.spec import unlabelled

        serving: ServingOptions = checked(ServingOptions, **options)
        r = self.client.results.get(result_id)
        versions = [v.version for v in self.client.results.versions(result_id)]
        if follow and version is not None:
            raise InvalidInput("follow serves each newest version: give no version with it")
        if (follow or version is not None) and not versions:
            raise InvalidInput(
                f"result {result_id} has no published versions: only an online result's "
                "versions can be followed or chosen"
            )
        if version is not None and version not in versions:
            raise NotFound(f"result {result_id} has no version {version} (it has {versions})")
        if not versions and (r.status != "finished" or not r.weights_uri):
            raise InvalidInput(f"result {result_id} is {r.status}: only a finished result serves")
        if versions and not follow and version is None:
            version = versions[-1]  # pinned: a plain deploy serves what is newest now
        if input_format is None or input_config is None:
            with self.store.session() as s:
                # The stream it trained on: its deployment's, or its Tune search's.
                owner = (
                    s.get(TrainingDeployment, r.deployment_id)
                    if r.deployment_id
                    else (s.get(TuneRun, r.tune_id) if r.tune_id else None)
                )
                ds_id = owner.datasource_id if owner else None
                ds = s.get(Datasource, ds_id) if ds_id else None
                input_format = input_format or (ds.input_format if ds else "RAW")
                if input_config is None:
                    input_config = unlabelled(ds.input_config if ds else {})
        get_format(input_format, input_config)
        for name, topic in (("input_topic", input_topic), ("output_topic", output_topic)):
            if not topic or not all(c.isalnum() or c in "._-" for c in topic):
                raise InvalidInput(f"{name} {topic!r} is not a valid Kafka topic name")
        if input_topic == output_topic:
            raise InvalidInput("input_topic and output_topic must differ")
        self._check_cluster()
        with self.store.session() as s:
            inf = Inference(
                result_id=result_id,
                input_topic=input_topic,
                output_topic=output_topic,
                input_format=input_format.upper(),
                input_config=dict(input_config),
                version=None if follow else version,
                follow=follow,
                **serving.model_dump(),
            )
            s.add(inf)
            s.flush()
            inference_id = inf.id
        self._start(inference_id, autoscaling)
        return self.get(inference_id)

    def _start(self, inference_id: int, autoscaling=None) -> None:
        from kafkaml_ray.serve.deploy import start_inference

        try:
            start_inference(self.settings, inference_id, autoscaling=dict(autoscaling or {}))
        except Exception as e:
            with self.store.session() as s:
                row = s.get_one(Inference, inference_id)
                row.status, row.error = InferenceStatus.FAILED, str(e)
            raise
        with self.store.session() as s:
            row = s.get_one(Inference, inference_id)
            row.status, row.error = InferenceStatus.RUNNING, None

    def list(self) -> list[InferenceInfo]:
        with self.store.session() as s:
            ids = s.scalars(select(Inference.id).order_by(Inference.id)).all()
        return [self.get(i) for i in ids]

    def get(self, inference_id: int, live: bool = False) -> InferenceInfo:
        """An inference with the figures its ingress replicas reported lately; ``live`` also
        asks Ray Serve whether it wants replicas that Ray cannot place (``waiting``)."""
        info = self._info(inference_id)
        if live and info.status in (InferenceStatus.DEPLOYING, InferenceStatus.RUNNING):
            from kafkaml_ray.serve.deploy import placement_wait

            info = info.model_copy(update={"waiting": placement_wait(self.settings, info.id)})
        return info

    def _info(self, inference_id: int) -> InferenceInfo:
        from datetime import UTC, datetime, timedelta

        with self.store.session() as s:
            inf = get_row(s, Inference, inference_id, "inference")
            since = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=30)
            stats = s.scalars(select(ReplicaStats).where(ReplicaStats.inference_id == inf.id)).all()
            live = [r for r in stats if r.updated_at >= since]
            fields = {k: getattr(inf, k) for k in InferenceInfo.model_fields if hasattr(inf, k)}
            fields.update(
                status=inf.status.value,
                model_name=inf.result.model.name,
                live_replicas=len(live) if inf.status == InferenceStatus.RUNNING else 0,
                consumed=sum(r.consumed for r in stats),
                predicted=sum(r.predicted for r in stats),
                dead_letters=sum(r.dead_letters for r in stats),
                lag=sum(r.lag for r in live),
                msgs_per_s=sum(r.msgs_per_s for r in live),
            )
            return InferenceInfo(**fields)

    def stop(self, inference_id: int) -> InferenceInfo:
        """Stop serving; the consumer group keeps its committed offsets for a restart."""
        from kafkaml_ray.serve.deploy import stop_inference

        self.get(inference_id)
        stop_inference(self.settings, inference_id)
        with self.store.session() as s:
            s.get_one(Inference, inference_id).status = InferenceStatus.STOPPED
        return self.get(inference_id)

    def restart(self, inference_id: int) -> InferenceInfo:
        """Serve again; it resumes from the consumer group's committed offsets."""
        self.get(inference_id)
        self._start(inference_id)
        return self.get(inference_id)

    def delete(self, inference_id: int) -> None:
        from kafkaml_ray.serve.deploy import stop_inference

        self.get(inference_id)
        stop_inference(self.settings, inference_id)
        with self.store.session() as s:
            s.delete(s.get_one(Inference, inference_id))

    def tap(
        self, inference_id: int, n: int = 20, dead_letters: bool = False, timeout: float = 5.0
    ) -> list[Prediction]:
        """The latest ``n`` predictions (or dead letters) of an inference, read without
        joining its consumer group (nothing is committed)."""
        from kafkaml_ray.serve.tap import tap

        inf = self.get(inference_id)
        topic = inf.output_topic + (".dlq" if dead_letters else "")
        return tap(self.settings, topic, f"kafkaml-tap-{inference_id}", n, dead_letters, timeout)
