"""kafkaml-ray: train and serve machine-learning models from Kafka streams, on Ray."""

import os as _os

# Ray's token authentication stays on, on both sides: the local head we start and every
# client of it (Ray enables it for new local clusters, but a client only sends its token
# when the mode is set). RAY_AUTH_MODE=disabled opts out explicitly.
_os.environ.setdefault("RAY_AUTH_MODE", "token")

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
