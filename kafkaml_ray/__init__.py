"""kafkaml-ray: train and serve machine-learning models from Kafka streams, on Ray."""

# Ray's token authentication stays on, on both sides (RAY_AUTH_MODE=disabled opts out):
# every place that connects to Ray or starts it sets the mode first
# (`kafkaml_ray._private.rayutil.token_auth`); importing the package changes nothing.

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from kafkaml_ray.client import Client


def __getattr__(name: str):
    """`Client` is imported on first use: every process imports this package (each Ray
    worker, replica and command), and most of them never make a Client (its services
    import the store, the ingest and the serving layers: about 0.25 s of each start)."""
    if name == "Client":
        from kafkaml_ray.client import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
