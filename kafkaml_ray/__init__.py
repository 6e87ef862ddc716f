"""kafkaml-ray: train and serve machine-learning models from Kafka streams, on Ray."""

from kafkaml_ray.client import Client
from kafkaml_ray.errors import Conflict, InvalidInput, KafkaMLError, ModelCodeError, NotFound
from kafkaml_ray.settings import Settings

__all__ = [
    "Client",
    "Settings",
    "KafkaMLError",
    "NotFound",
    "Conflict",
    "InvalidInput",
    "ModelCodeError",
]
__version__ = "0.1.0"
