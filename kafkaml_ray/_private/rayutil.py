"""Connecting to Ray the same way from every process."""

from __future__ import annotations

import logging
import os

from kafkaml_ray.settings import Settings

__all__ = ["ensure_ray", "token_auth", "NAMESPACE"]

logger = logging.getLogger(__name__)
NAMESPACE = "kafkaml"


def token_auth() -> None:
    """Keep Ray's token authentication on in this process too (RAY_AUTH_MODE=token unless
    set otherwise), also when ``ray`` was imported before kafkaml_ray."""
    import sys

    if os.environ.setdefault("RAY_AUTH_MODE", "token") != "token":
        return
    raylet = sys.modules.get("ray._raylet")
    if raylet is not None:
        raylet.Config.initialize("")  # re-read the mode from the environment


def ray_address(settings: Settings) -> str | None:
    """RAY_ADDRESS, else the local head that `kafkaml-ray up` started, else None."""
    if settings.ray_address:
        return settings.ray_address
    from kafkaml_ray.stack import local_ray_running

    if local_ray_running(settings):
        return f"127.0.0.1:{settings.ray_port}"
    return None


def ensure_ray(settings: Settings) -> None:
    """Connect this process to Ray (the configured cluster, the local head, or a new one)."""
    import ray

    if ray.is_initialized():
        return
    token_auth()
    address = ray_address(settings)
    if address is None:
        logger.info("no Ray cluster running: starting a local one in this process")
        os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    ray.init(
        address=address or "local",  # never join some other cluster found on the machine
        namespace=NAMESPACE,
        include_dashboard=False if address is None else None,
        log_to_driver=False,
        configure_logging=False,
    )
