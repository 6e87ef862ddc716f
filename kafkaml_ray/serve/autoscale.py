"""Autoscaling Kafka ingress replicas on consumer lag (a Ray Serve custom policy).

Every ingress replica reports its consumer lag and the input topic's partition count
(``record_autoscaling_stats``). The policy wants ``ceil(lag / target_lag)`` replicas when
the total lag is above ``target_lag`` per running replica, one fewer when it is below a
tenth of that, and never more replicas than partitions (a consumer without a partition is
idle). Serve applies ``min_replicas``/``max_replicas`` and the up/down-scale delays around it.

>>> from types import SimpleNamespace as NS
>>> ctx = NS(current_num_replicas=1, policy_state={},
...          aggregated_metrics={"lag": {"r1": 5000.0}, "partitions": {"r1": 4.0}})
>>> lag_policy(ctx, target_lag=1000)
(4, {})
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["lag_policy", "LagPolicy", "POLICY"]

#: The import path used in deployment options and serve configs (``policy_kwargs``
#: reach a class policy only, hence the class).
POLICY = "kafkaml_ray.serve.autoscale:LagPolicy"


def lag_policy(ctx: Any, target_lag: float = 1000.0) -> tuple[int, dict[str, Any]]:
    metrics = ctx.aggregated_metrics or {}
    lags = metrics.get("lag") or {}
    current = max(1, int(ctx.current_num_replicas or 1))
    if not lags:  # no report yet: keep what runs
        return current, {}
    lag = float(sum(lags.values()))
    partitions = int(max((metrics.get("partitions") or {}).values(), default=0)) or current
    if lag > target_lag * current:
        desired = math.ceil(lag / target_lag)
    elif lag < 0.1 * target_lag * current:
        desired = current - 1
    else:
        desired = current
    return max(1, min(desired, partitions)), {}


class LagPolicy:
    """`lag_policy` with its ``target_lag`` (from the autoscaling ``policy_kwargs``)."""

    def __init__(self, target_lag: float = 1000.0):
        self.target_lag = float(target_lag)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        return lag_policy(ctx, self.target_lag)
