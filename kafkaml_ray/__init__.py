"""kafkaml-ray: train and serve machine-learning models from Kafka streams, on Ray."""

# Ray's token authentication stays on, on both sides (RAY_AUTH_MODE=disabled opts out):
# every place that connects to Ray or starts it sets the mode first
# (`kafkaml_ray._private.rayutil.token_auth`); importing the package changes nothing.

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
