"""The API's services, one per resource; `kafkaml_ray.client.Client` holds one of each and
keeps every method under its old name too."""

from kafkaml_ray.api.datasources import Datasources
from kafkaml_ray.api.inference import Inferences
from kafkaml_ray.api.models import Configurations, Models
from kafkaml_ray.api.results import Results
from kafkaml_ray.api.training import Training
from kafkaml_ray.api.tuning import Tuning

__all__ = [
    "Models",
    "Configurations",
    "Training",
    "Results",
    "Datasources",
    "Inferences",
    "Tuning",
]
