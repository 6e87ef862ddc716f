"""What an inference's replicas need to run (`InferenceSpec`), and how it is read from the
store (`spec_from_store`): shared by the Serve application (`kafkaml_ray.serve.app`), its
deployment (`kafkaml_ray.serve.deploy`) and the import-path builder that KubeRay uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kafkaml_ray.errors import InvalidInput, NotFound
from kafkaml_ray.frameworks import TrainedModel
from kafkaml_ray.options import DEFAULT_BATCH_SIZE
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import Inference, ResultVersion, Store, select

__all__ = ["InferenceSpec", "spec_from_store", "served_version", "unlabelled"]


@dataclass
class InferenceSpec:
    """Everything the replicas need; built from the store by `spec_from_store`."""

    inference_id: int
    result_id: int
    #: the model served: the code it trained with and the weights of the version served
    trained: TrainedModel
    input_topic: str
    output_topic: str
    input_format: str
    input_config: dict[str, Any]
    settings: Settings
    batch_size: int = DEFAULT_BATCH_SIZE
    max_wait_ms: float = 0.0
    #: Chunks one ingress replica keeps waiting on the predictor at once.
    in_flight: int = 4
    #: Predict inside the ingress replicas (CPU inferences) instead of in the Predictor.
    predict_in_ingress: bool = True
    #: Acknowledged offsets are committed at most this often (and always on stop and
    #: rebalance): at most this much is consumed again after a crash.
    commit_interval_s: float = 0.5
    stats_interval_s: float = 2.0
    #: The online result's version served (None: a result without versions), and whether
    #: the replicas swap to each newer one (checked every ``follow_interval_s``).
    version: int | None = None
    follow: bool = False
    follow_interval_s: float = 1.0
    #: Outputs, dead letters and the consumed offsets commit in one Kafka transaction.
    exactly_once: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group_id(self) -> str:
        return f"kafkaml-inference-{self.inference_id}"

    @property
    def dlq_topic(self) -> str:
        return f"{self.output_topic}.dlq"


def spec_from_store(settings: Settings, inference_id: int) -> InferenceSpec:
    with Store.for_url(settings.db_url).session() as s:
        inf = s.get(Inference, inference_id)
        if inf is None:
            raise NotFound(f"no inference with id {inference_id}")
        r = inf.result
        version, weights_uri = served_version(s, r.id, None if inf.follow else inf.version)
        weights_uri = weights_uri or r.weights_uri
        if not weights_uri:
            raise InvalidInput(f"result {r.id} has no trained weights (status {r.status})")
        return InferenceSpec(
            inference_id=inf.id,
            result_id=r.id,
            # (the code it trained with, not the model's newest)
            trained=TrainedModel.of(r).with_weights(weights_uri),
            input_topic=inf.input_topic,
            output_topic=inf.output_topic,
            input_format=inf.input_format,
            input_config=dict(inf.input_config),
            settings=settings,
            batch_size=inf.batch_size,
            max_wait_ms=inf.max_wait_ms,
            predict_in_ingress=not inf.gpu_fraction,
            version=version,
            follow=inf.follow,
            exactly_once=inf.exactly_once,
        )


def served_version(s: Any, result_id: int, version: int | None) -> tuple[int | None, str | None]:
    """``(version, weights_uri)`` of a result's published ``version``, or of its newest when
    ``version`` is None; ``(None, None)`` when it has none (a batch result)."""
    q = select(ResultVersion).where(ResultVersion.result_id == result_id)
    if version is not None:
        q = q.where(ResultVersion.version == version)
    row = s.scalars(q.order_by(ResultVersion.version.desc()).limit(1)).first()
    if row is None and version is not None:
        raise NotFound(f"result {result_id} has no version {version}")
    return (row.version, row.weights_uri) if row is not None else (None, None)


def unlabelled(config: dict[str, Any] | None) -> dict[str, Any]:
    """An input config for inference: the samples' fields only, no ``label_*``.

    >>> unlabelled({"data_type": "float32", "label_type": "int64", "label_reshape": ""})
    {'data_type': 'float32'}
    """
    return {k: v for k, v in (config or {}).items() if not k.startswith("label_")}
