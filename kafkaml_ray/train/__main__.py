"""Entrypoint of a training Ray job: ``python -m kafkaml_ray.train --deployment ID``.

Waits for the deployment's data stream (the control listener records it), then trains every
model of the deployment. Settings come from the environment (``KAFKAML_*``)."""

from __future__ import annotations

import argparse
import logging

from kafkaml_ray._private.rayutil import check_shared_state, ensure_ray
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import Store
from kafkaml_ray.train.runner import fail_results, run_deployment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kafkaml_ray.train", description=__doc__)
    parser.add_argument("--deployment", type=int, required=True, help="training deployment id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    try:
        ensure_ray(settings)
        check_shared_state(settings)
        run_deployment(settings, args.deployment)
    except Exception as e:
        fail_results(Store.for_url(settings.db_url), args.deployment, f"{type(e).__name__}: {e}")
        raise


if __name__ == "__main__":
    main()
