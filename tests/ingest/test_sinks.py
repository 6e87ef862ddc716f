"""Sinks and producers without a broker: they let go of their connections when closed."""

import time

import numpy as np

from kafkaml_ray._private.procs import free_ports
from kafkaml_ray.ingest import InferenceProducer


def test_a_closed_producer_stops_reconnecting_to_a_broker_that_is_gone(capfd):
    """The demo's ``--stop`` printed librdkafka's "Connection refused" lines after the
    broker went down: its inference producer was flushed but never closed."""
    port = free_ports(1)  # (nothing listens there: a broker that is gone)
    with InferenceProducer(f"127.0.0.1:{port}", "in", "RAW", {"data_type": "float32"}) as p:
        assert p.format.encode(np.zeros(2, np.float32))[0]
        time.sleep(1.0)
    capfd.readouterr()
    time.sleep(2.0)  # (an open producer retries every 0.1 to 1 s, and says so each time)
    assert "Connection refused" not in capfd.readouterr().err
