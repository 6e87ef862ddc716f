"""The metadata store: its tables and statuses (`models`), the migrations that make them
(`migrations`), the `Store` that opens them at run time (`runtime`), and every status
change of a result or a search (`transitions`). Everything a caller uses is here."""

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
from kafkaml_ray.store.runtime import Store, select
from kafkaml_ray.store.transitions import move_result, move_search, update_training

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
    "move_result",
    "update_training",
    "move_search",
]
