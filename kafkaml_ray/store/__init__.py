"""The metadata store: its tables and statuses (`models`), the migrations that make them
(`migrations`), and the `Store` that opens them at run time (`runtime`). Everything a
caller uses is here."""

from kafkaml_ray.store.models import (
    Base,
    Configuration,
    Datasource,
    DatasourceStatus,
    Inference,
    InferenceStatus,
    MLModel,
    ModelVersion,
    OnlineWindow,
    ReplicaStats,
    ResultStatus,
    ResultVersion,
    TrainingDeployment,
    TrainingResult,
    TuneRun,
    TuneStatus,
)
from kafkaml_ray.store.runtime import Store, select, set_result_if

__all__ = [
    "Base",
    "Store",
    "MLModel",
    "ModelVersion",
    "Configuration",
    "TrainingDeployment",
    "TrainingResult",
    "Datasource",
    "Inference",
    "ReplicaStats",
    "OnlineWindow",
    "ResultVersion",
    "TuneRun",
    "ResultStatus",
    "DatasourceStatus",
    "InferenceStatus",
    "TuneStatus",
    "select",
    "set_result_if",
]
