"""Inference: our Ray Serve application against Kafka-ML's inference loop and an echo ceiling.

One run, one embedded broker and Ray head, the same trained models and the same messages.
First the example PyTorch models are trained through the library (`Client` + `RawSink`, as
the inference tests do): the digits CNN (``digits-cnn-pytorch``, 8x8 float32 images) and
the regression MLP (``regression-mlp-pytorch``, 26 float32 features). Then, per model, three
pipelines, each on topics of its own (input and output with as many partitions as replicas;
the output topics keep the broker's append time as message timestamp):

- **ours**: ``Client.deploy_inference(result_id, input_topic, output_topic, replicas=R,
  batch_size=B)``: the Ray Serve application (Kafka ingress replicas, which predict
  themselves for a CPU inference), as a user deploys it, with its defaults otherwise;
- **baseline**: Kafka-ML's inference loop (its paper's Algorithm 2 and its PyTorch
  ``inference.py``): one consumer, ``poll(1.0)``, decode one message, predict that one
  sample, produce ``{"values": [...]}`` (input headers copied, no key) and ``flush()``,
  ``commit()`` every 16 messages; the same trained weights loaded with `TrainedModel`, in a
  Ray actor of its own (one per replica, one consumer group);
- **echo**: consume and produce the input back unchanged (headers kept, provenance headers
  added, offsets committed once acknowledged), no model, with the client settings of our
  ingress (``linger.ms=0``, up to B messages per take, commits at most every 0.5 s): the
  ceiling of a Python consume/produce loop on this broker.

The pipelines of a model are started together (idle ones only poll) and every measurement
round goes over them in turn, rotating the order, so that a change in the load of the
(shared) machine falls on all of them. For the digits CNN three diagnostic pipelines run
beside them: ours with the earlier defaults ``batch_size=64, max_wait_ms=5`` and the baseline
without its per-message ``flush()``.

All inputs are RAW messages made by `kafkaml_ray.ingest.InferenceProducer` in this process
(``linger.ms=0``), each stamped with its send time (``time.time_ns()``) in a header; one
collector consumer in this process reads the output topic. Measured per pipeline:

- **throughput**: produce N messages at full speed, time from the first send until the N-th
  output is consumed (the backlog drained); ``repeat`` rounds after a warm-up that also
  checks the predictions (accuracy / MAE; ours against the baseline's);
- **latency at fixed offered loads**: a paced producer at each rate of ``loads`` for
  ``load_s`` seconds, ``load_rounds`` times, the pipelines taking turns; latency = consume
  time (or the output's broker append time) minus the send stamp; p50/p99 over every message
  of the load's rounds;
- **requests against clients** (the paper's Tables 1-2 shape, digits CNN, ours and the
  baseline): C concurrent clients each send a 256-sample request (256 messages sharing a
  request id), wait for its 256 predictions, and repeat; average request latency per C, with
  replicas = partitions = R.

Our run is then profiled: the Predictor's Serve handle round trip against the model alone,
and py-spy samples of the ingress consume loop and the predictor during an extra backlog.

``--size small`` (default) cuts the grid to clients 1, 4, 16 and replicas 1, 2 and sizes
the rest to under ten minutes on 2 cores; ``--size full`` runs the paper's clients 1-32 and
replicas 1, 2, 4 with more messages; ``--size quick`` is a smoke run. ``--no-variants``
leaves out the diagnostic pipelines. Writes ``inference.json``, ``inference.md`` and
``inference.png`` to ``--out``.

    python -m benchmarks.inference [--size small|full|quick] [--out benchmarks/results]

The parts: `pipelines` (the plan, the models, starting a pipeline), `loops` (the baseline
and echo workers, the output collector), `measure` (the measurements of one pipeline),
`profiling` (ours profiled), `rounds` (the run), `report` (results, Markdown, plot).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks._report import write_results
from benchmarks.inference.loops import Collector, LoopWorker
from benchmarks.inference.pipelines import SIZES, Plan
from benchmarks.inference.report import markdown, plot
from benchmarks.inference.rounds import run

__all__ = ["main", "run", "Plan", "SIZES", "LoopWorker", "Collector", "markdown", "plot"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inference", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--no-variants",
        action="store_true",
        help="skip the diagnostic runs (ours with batch_size=64, the baseline without flush)",
    )
    args = parser.parse_args(argv)
    result = run(SIZES[args.size], variants=not args.no_variants)
    write_results(args.out, "inference", result, markdown, plot)
