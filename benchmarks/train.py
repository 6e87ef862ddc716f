"""Training: our runs against a plain PyTorch loop and a plain Keras ``fit``; the paper's
comparisons at small scale; and (``--gpu``, where a GPU is lent) GPU against CPU.

One run, one embedded broker and Ray head. Data: scikit-learn's digits (1,797 float32 8x8
images, int64 labels), sent once by `RawSink` to a 1-partition and a 4-partition topic;
80/10/10 train/validation/test split; the example models ``digits-cnn-pytorch`` and
``digits-cnn-keras`` (registered, so validated, through `Client.add_model`).

**ours**: a deployment of one model (``batch_size``, ``epochs=E``); a control message naming
the stream's ranges goes to the control topic, read by the control listener (a detached
actor, as ``kafkaml-ray up`` starts it), which starts the deployment's runner: read the
ranges, split, one Ray Train run. Two times are taken:

- ``training_time_s``: stored by the run, measured in the Ray Train worker from turning its
  data shards into arrays to the end of ``fit``/the Ignite loop (model build, every epoch
  with its validation, the per-epoch metrics written to the store);
- ``wall_s``: from the control message's acknowledgement to the result being finished
  (this process polls the store every 0.1 s). ``startup_s = wall_s - training_time_s``:
  handing over (listener, runner actor), reading and splitting the stream, Ray Train's
  controller and worker start with its imports, the test evaluation, confusion matrix and
  weights saved after training, and the run's end.

**plain**: the same model code built with ``build_model``, then a plain PyTorch loop / a Keras
``fit`` on the same in-memory arrays: same epochs, batch size, shuffling and per-epoch
validation. Timed from building the model to the end of the last epoch (the framework is
imported before). Each timed run is in a fresh process, as each of our runs is: a Ray Train
run starts new worker processes, so the framework's first-use costs (kernel selection,
allocator, first optimizer step) fall inside both times. For reference, plain is also timed
in a warm process (one that already ran a 1-epoch warm-up), the best case for plain code.

``torch_ratio``/``keras_ratio`` = median ours ``training_time_s`` / median plain time (fresh
process), on the 1-partition stream; ``*_ratio_vs_warm`` use the warm plain time; cluster
start-up (broker, Ray head) is ``cluster_start_s``.

    python -m benchmarks.train [--epochs 30] [--repeat 3] [--out benchmarks/results] [--quick]
    python -m benchmarks.train --gpu [--gpu-samples 512] [--epochs 2]   # needs a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import (
    digits,
    local_stack,
    machine_facts,
    produce_digits,
    settle,
    summary,
    write_json,
)
from kafkaml_ray.ingest.dataset import split_sizes
from kafkaml_ray.settings import Settings

__all__ = ["main", "plain_torch", "plain_keras", "run_ours", "VGG16_PYTORCH", "VGG16_KERAS"]

FRAMEWORKS = {"pytorch": "digits-cnn-pytorch", "tensorflow": "digits-cnn-keras"}
LABELS = {"pytorch": "PyTorch", "tensorflow": "TensorFlow/Keras"}
PARTITIONS = (1, 4)
RATES = (0.1, 0.1)  # validation, test
SEED = 0
POLL_S = 0.1
AIM_RATIO = 1.3
#: Where `RawSink` announces the produced data: not the control topic, so the listener never
#: sees it; every timed run is started by a control message of its own.
PRODUCED_TOPIC = "benchmark-produced"
NO_GPU = (
    "no GPU was lent to the session that made these results (the device tool said 'not "
    "drawn'); run `python -m benchmarks.train --gpu` on a machine with one"
)

VGG16_PYTORCH = """\
# VGG-16 (13 convolutions, 3 dense layers; 40M parameters) for 64x64 grey images, 10 classes.
import torch
from ignite.metrics import Accuracy, Loss
from torch import nn

PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    input_shape = (64, 64)

    def __init__(self):
        super().__init__()
        layers, channels = [], 1
        for v in PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512 * 2 * 2, 4096), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(4096, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x.reshape(-1, 1, 64, 64) / 16.0))

    def loss_fn(self):
        return nn.CrossEntropyLoss()

    def optimizer(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    def metrics(self):
        return {"accuracy": Accuracy(), "loss": Loss(self.loss_fn())}
"""

VGG16_KERAS = """\
# VGG-16 (13 convolutions, 3 dense layers; 40M parameters) for 64x64 grey images, 10 classes.
import keras
from keras import layers

PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
stack = [keras.Input(shape=(64, 64)), layers.Rescaling(1 / 16.0), layers.Reshape((64, 64, 1))]
for v in PLAN:
    if v == "M":
        stack.append(layers.MaxPooling2D(2))
    else:
        stack.append(layers.Conv2D(v, 3, padding="same", activation="relu"))
stack += [
    layers.Flatten(),
    layers.Dense(4096, activation="relu"), layers.Dropout(0.5),
    layers.Dense(4096, activation="relu"), layers.Dropout(0.5),
    layers.Dense(10, activation="softmax"),
]
model = keras.Sequential(stack)
model.compile(
    optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
    loss="sparse_categorical_crossentropy",
    metrics=["accuracy"],
)
"""


# -- plain baselines: each framework in a process of its own ------------------------------
def _split(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The ordered split ours makes of a 1-partition stream: train first, test newest."""
    n_train, n_val, _ = split_sizes(len(x), *RATES)
    cut = n_train + n_val
    return {
        "x_train": x[:n_train],
        "y_train": y[:n_train],
        "x_val": x[n_train:cut],
        "y_val": y[n_train:cut],
        "x_test": x[cut:],
        "y_test": y[cut:],
    }


def plain_torch(code: str, data: dict[str, np.ndarray], epochs: int, batch_size: int) -> dict:
    """A plain PyTorch loop: per epoch, train over shuffled batches (running loss and
    accuracy), then loss and accuracy on the validation set. Timed from building the model."""
    import torch

    from kafkaml_ray._private.modelcode import build_model

    def loader(x, y, shuffle):
        ds = torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
        g = torch.Generator().manual_seed(SEED)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g)

    def evaluate(model, batches, loss_fn) -> tuple[float, float]:
        model.eval()
        loss, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for xb, yb in batches:
                out = model(xb)
                loss += loss_fn(out, yb).item() * len(yb)
                correct += (out.argmax(1) == yb).sum().item()
                n += len(yb)
        return loss / n, correct / n

    torch.manual_seed(SEED)
    start = time.perf_counter()
    model = build_model("pytorch", code)
    loss_fn, optimizer = model.loss_fn(), model.optimizer()
    train = loader(data["x_train"], data["y_train"], True)
    val = loader(data["x_val"], data["y_val"], False)
    for _ in range(epochs):
        model.train()
        running, correct, n = 0.0, 0, 0
        for xb, yb in train:
            optimizer.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
            n += len(yb)
        _, val_accuracy = evaluate(model, val, loss_fn)
    seconds = time.perf_counter() - start
    _, test_accuracy = evaluate(model, loader(data["x_test"], data["y_test"], False), loss_fn)
    return {
        "seconds": seconds,
        "train_loss": running / n,
        "train_accuracy": correct / n,
        "val_accuracy": val_accuracy,
        "test_accuracy": test_accuracy,
        "threads": torch.get_num_threads(),
    }


def plain_keras(code: str, data: dict[str, np.ndarray], epochs: int, batch_size: int) -> dict:
    """A plain Keras ``fit`` with per-epoch validation. Timed from building the model."""
    from kafkaml_ray._private.modelcode import build_model, import_tensorflow

    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(SEED)
    start = time.perf_counter()
    model = build_model("tensorflow", code)
    history = model.fit(
        data["x_train"],
        data["y_train"],
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(data["x_val"], data["y_val"]),
        validation_batch_size=batch_size,
        shuffle=True,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    test = model.evaluate(
        data["x_test"], data["y_test"], batch_size=batch_size, verbose=0, return_dict=True
    )
    return {
        "seconds": seconds,
        "val_accuracy": float(history.history["val_accuracy"][-1]),
        "test_accuracy": float(test["accuracy"]),
        "threads": tf.config.threading.get_intra_op_parallelism_threads() or "default (0)",
    }


PLAIN = {"pytorch": plain_torch, "tensorflow": plain_keras}


# -- ours -----------------------------------------------------------------------------------
def announce(settings: Settings, msg, deployment_id: int) -> None:
    """Send the stream's control message, naming ``deployment_id``, to the control topic."""
    from confluent_kafka import Producer

    key, value, headers = dataclasses.replace(msg, deployment_id=deployment_id).to_kafka()
    producer = Producer(settings.kafka_config())
    producer.produce(settings.control_topic, value, key, headers=headers)
    if producer.flush(30):
        raise RuntimeError("the control message was not delivered")


def _minus(a: float | None, *b: float | None) -> float | None:
    return None if a is None or any(v is None for v in b) else a - sum(b)


def run_ours(
    client,
    msg,
    model_ids: list[int],
    epochs: int,
    batch_size: int,
    gpu_fraction: float = 0.0,
    timeout_s: float = 1800.0,
) -> list[dict[str, Any]]:
    """Deploy ``model_ids`` as one configuration, announce the stream, and follow the store
    until every result is finished; one dict of times and accuracies per result."""
    config = client.create_configuration(f"bench-{uuid.uuid4().hex[:8]}", model_ids)
    dep = client.deploy_training(
        config.id, batch_size=batch_size, kwargs=f"epochs={epochs}", gpu_fraction=gpu_fraction
    )
    announce(client.settings, msg, dep.id)
    start = time.perf_counter()
    marks: dict[tuple[int, str], float] = {}
    while True:
        d = client.get_deployment(dep.id)
        now = time.perf_counter() - start
        for r in d.results:
            phase = (r.progress or {}).get("phase")
            if phase:
                marks.setdefault((r.id, phase), now)
            if r.test_metrics:
                marks.setdefault((r.id, "results"), now)
            if r.done:
                marks.setdefault((r.id, "done"), now)
        if d.done:
            break
        if now > timeout_s:
            raise TimeoutError(f"deployment {dep.id} not done after {timeout_s:.0f}s")
        time.sleep(POLL_S)
    out = []
    for r in d.results:
        if r.status != "finished":
            raise RuntimeError(f"{r.model_name} {r.status}: {r.error}")

        def at(name: str, rid: int = r.id) -> float | None:
            return marks.get((rid, name))

        wall, train = at("done"), r.training_time_s
        out.append(
            {
                "model": r.model_name,
                "framework": r.framework,
                "wall_s": wall,
                "training_time_s": train,
                "startup_s": wall - train,
                "phases_s": {
                    "handover": at("reading the data stream"),
                    "read_and_split": _minus(at("starting"), at("reading the data stream")),
                    "ray_train_start_and_test_and_save": _minus(
                        at("results"), at("starting"), train
                    ),
                    "end_of_run": _minus(wall, at("results")),
                },
                "test_accuracy": r.test_metrics.get("accuracy"),
                "val_accuracy": r.val_metrics.get("accuracy"),
                "epochs": len(r.history),
            }
        )
    return out


def _ray_worker_threads() -> dict[str, Any]:
    """What a 1-CPU Ray worker (as a Ray Train worker is) gets: OMP_NUM_THREADS and torch's
    thread count."""
    import ray

    @ray.remote(num_cpus=1, max_calls=1)
    def threads() -> dict[str, Any]:
        import torch

        return {
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(),
        }

    return ray.get(threads.remote())


def _started(settings: Settings):
    """A client, and the control listener started as `kafkaml-ray up` starts it."""
    from kafkaml_ray import Client
    from kafkaml_ray.ingest.listener import start_listener

    client = Client(settings)
    start_listener(settings)
    return client


def _pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def run(epochs: int, batch_size: int, repeat: int) -> dict[str, Any]:
    import ray

    from kafkaml_ray.demo import EXAMPLES, EXAMPLES_DIR, register_examples
    from kafkaml_ray.ingest.listener import stop_listener

    facts = machine_facts()
    x, y = digits()
    data = _split(x, y)
    codes = {fw: (EXAMPLES_DIR / EXAMPLES[name][1]).read_text() for fw, name in FRAMEWORKS.items()}
    pools = {fw: _pool() for fw in FRAMEWORKS}
    ours: dict[tuple[str, int], list[dict]] = {(fw, p): [] for fw in FRAMEWORKS for p in PARTITIONS}
    plain: dict[str, list[dict]] = {fw: [] for fw in FRAMEWORKS}
    warm: dict[str, list[dict]] = {fw: [] for fw in FRAMEWORKS}
    try:
        started = time.perf_counter()
        with local_stack(num_cpus=4) as settings:
            cluster_start_s = time.perf_counter() - started
            gpus = ray.cluster_resources().get("GPU", 0)
            worker_threads = _ray_worker_threads()
            client = _started(settings)
            ids = register_examples(client, list(FRAMEWORKS.values()))
            streams = {
                p: produce_digits(
                    settings,
                    f"digits-{p}p-{uuid.uuid4().hex[:6]}",
                    x,
                    y,
                    p,
                    validation_rate=RATES[0],
                    test_rate=RATES[1],
                    control_topic=PRODUCED_TOPIC,
                )
                for p in PARTITIONS
            }
            # Warm-up: one epoch each way (imports, file caches, first worker processes).
            for fw, name in FRAMEWORKS.items():
                pools[fw].submit(PLAIN[fw], codes[fw], data, 1, batch_size).result()
                run_ours(client, streams[1], [ids[name]], 1, batch_size)
            for i in range(repeat):
                for fw, name in FRAMEWORKS.items():
                    steps = ["plain", "warm", *PARTITIONS]
                    for step in steps if i % 2 == 0 else steps[::-1]:
                        settle()
                        if step == "plain":  # a fresh process, as a Ray Train worker is
                            with _pool() as fresh:
                                job = fresh.submit(PLAIN[fw], codes[fw], data, epochs, batch_size)
                                plain[fw].append(job.result())
                        elif step == "warm":
                            job = pools[fw].submit(PLAIN[fw], codes[fw], data, epochs, batch_size)
                            warm[fw].append(job.result())
                        else:
                            got = run_ours(client, streams[step], [ids[name]], epochs, batch_size)
                            ours[(fw, step)] += got
            stop_listener(settings)
    finally:
        for pool in pools.values():
            pool.shutdown()
    facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return _results(
        ours, plain, warm, epochs, batch_size, repeat, cluster_start_s, gpus, worker_threads, facts
    )


def _med(runs: list[dict], key: str) -> float:
    return summary([r[key] for r in runs])["median"]


def _results(ours, plain, warm, epochs, batch_size, repeat, cluster_start_s, gpus, threads, facts):
    comparison = {}
    for fw in FRAMEWORKS:
        runs = ours[(fw, 1)]
        plain_s = summary([r["seconds"] for r in plain[fw]])
        warm_s = summary([r["seconds"] for r in warm[fw]])
        train_s = summary([r["training_time_s"] for r in runs])
        wall_s = summary([r["wall_s"] for r in runs])
        comparison[fw] = {
            "plain_s": plain_s,
            "plain_warm_s": warm_s,
            "ours_training_time_s": train_s,
            "ours_wall_s": wall_s,
            "startup_s": summary([r["startup_s"] for r in runs]),
            "phases_s": {
                k: summary([r["phases_s"][k] for r in runs if r["phases_s"][k] is not None])
                for k in runs[0]["phases_s"]
            },
            "ratio": train_s["median"] / plain_s["median"],
            "ratio_vs_warm": train_s["median"] / warm_s["median"],
            "ratio_wall": wall_s["median"] / plain_s["median"],
            "plain_test_accuracy": _med(plain[fw], "test_accuracy"),
            "plain_threads": plain[fw][0]["threads"],
        }
    paper = [
        {
            "framework": fw,
            "partitions": p,
            "wall_s": _med(ours[(fw, p)], "wall_s"),
            "training_time_s": _med(ours[(fw, p)], "training_time_s"),
            "startup_s": _med(ours[(fw, p)], "startup_s"),
            "test_accuracy": _med(ours[(fw, p)], "test_accuracy"),
            "val_accuracy": _med(ours[(fw, p)], "val_accuracy"),
        }
        for fw in FRAMEWORKS
        for p in PARTITIONS
    ]
    torch_ratio = comparison["pytorch"]["ratio"]
    keras_ratio = comparison["tensorflow"]["ratio"]
    return {
        "benchmark": "train",
        "data": "digits: 1,797 float32 8x8 images, 80/10/10 ordered split",
        "models": FRAMEWORKS,
        "epochs": epochs,
        "batch_size": batch_size,
        "repeat": repeat,
        "torch_ratio": torch_ratio,
        "keras_ratio": keras_ratio,
        "torch_ratio_vs_warm": comparison["pytorch"]["ratio_vs_warm"],
        "keras_ratio_vs_warm": comparison["tensorflow"]["ratio_vs_warm"],
        "torch_ratio_wall": comparison["pytorch"]["ratio_wall"],
        "keras_ratio_wall": comparison["tensorflow"]["ratio_wall"],
        "startup_s": {fw: comparison[fw]["startup_s"]["median"] for fw in FRAMEWORKS},
        "cluster_start_s": cluster_start_s,
        "aims": {
            f"torch_ratio_at_most_{AIM_RATIO}": torch_ratio <= AIM_RATIO,
            f"keras_ratio_at_most_{AIM_RATIO}": keras_ratio <= AIM_RATIO,
        },
        "overhead": comparison,
        "paper_comparison": paper,
        "runs": {f"{fw}-{p}p": ours[(fw, p)] for fw in FRAMEWORKS for p in PARTITIONS},
        "plain_runs": plain,
        "plain_warm_runs": warm,
        "ray_worker_threads": threads,
        "gpu": {"lent": gpus > 0, "ray_gpus": gpus, "note": None if gpus else NO_GPU},
        "timed": {
            "ours_training_time_s": "stored by the run: in the Ray Train worker, from the data "
            "shards to arrays to the end of the last epoch (validation and store writes in)",
            "ours_wall_s": "control message acknowledged -> result finished (store polled)",
            "startup_s": "wall_s - training_time_s",
            "plain": "build_model -> end of the last epoch, in-memory arrays, a fresh process "
            "per run (framework imported before the timing)",
            "plain_warm": "the same in a process that already ran a 1-epoch warm-up",
        },
        "machine": facts,
    }


def _s(d: dict[str, Any]) -> str:
    return f"{d['median']:.2f} ({d['min']:.2f}-{d['max']:.2f})"


def markdown(r: dict[str, Any]) -> str:
    rows = []
    for fw, c in r["overhead"].items():
        ph = c["phases_s"]
        rows.append(
            f"| {LABELS[fw]} | {_s(c['plain_s'])} | {_s(c['ours_training_time_s'])} | "
            f"**{c['ratio']:.2f}** | {_s(c['plain_warm_s'])} | {c['ratio_vs_warm']:.2f} | "
            f"{_s(c['ours_wall_s'])} | {c['startup_s']['median']:.1f} | "
            + " / ".join(f"{ph[k]['median']:.1f}" if ph[k]["values"] else "-" for k in ph)
            + " |"
        )
    paper = [
        f"| {LABELS[p['framework']]} | {p['partitions']} | {p['wall_s']:.1f} | "
        f"{p['training_time_s']:.2f} | {p['startup_s']:.1f} | {p['test_accuracy']:.3f} | "
        f"{p['val_accuracy']:.3f} |"
        for p in r["paper_comparison"]
    ]
    plain_acc = ", ".join(
        f"{LABELS[fw]} {c['plain_test_accuracy']:.3f}" for fw, c in r["overhead"].items()
    )
    spreads = [
        c[k]["spread"]
        for c in r["overhead"].values()
        for k in ("plain_s", "plain_warm_s", "ours_training_time_s", "ours_wall_s")
    ]
    m, aims = r["machine"], r["aims"]
    verdict = "; ".join(f"`{k}`: **{'met' if v else 'not met'}**" for k, v in aims.items())
    threads = r["ray_worker_threads"]
    gpu = r["gpu"]["note"] or f"{r['gpu']['ray_gpus']:g} GPU(s) in Ray: see train_gpu.md"
    return f"""# Training: ours vs plain PyTorch / Keras, and the paper's comparisons

Digits (1,797 samples, 80/10/10 split), the example CNNs, {r["epochs"]} epochs, batch size \
{r["batch_size"]}, validation every epoch; median (min-max) of {r["repeat"]} runs after one \
1-epoch warm-up of each pipeline; seconds.

## (a) Overhead against plain code, same in-memory data (1-partition stream)

| framework | plain s (fresh process) | ours training_time_s | ratio | plain s (warm \
process) | ratio vs warm | ours wall s | startup_s | handover / read+split / Ray Train \
start+test+save / end |
|---|---:|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(rows)}

- `torch_ratio` {r["torch_ratio"]:.2f}, `keras_ratio` {r["keras_ratio"]:.2f} (aim <= \
{AIM_RATIO}): {verdict}. On wall time (control message to finished, start-up included): \
{r["torch_ratio_wall"]:.1f}x and {r["keras_ratio_wall"]:.1f}x.
- **ours training_time_s** is stored by the run and measured in the Ray Train worker: \
data shards to arrays, model build, every epoch with validation (Ignite metrics for PyTorch) \
and the per-epoch store writes. **wall** runs from the control message's acknowledgement to \
the finished result (store polled every {POLL_S} s); **startup_s** = wall - training_time_s \
(broken down by the phases the run writes to the store). **plain** = `build_model` of the \
same code, then a plain loop / `fit`, from the build to the last epoch, each timed run in a \
fresh process (the framework imported before the timing), as every Ray Train run starts \
fresh worker processes: the framework's first-use costs fall inside both times. **plain \
(warm process)**: the same in a process that already trained (the best case for plain code, \
which no Ray Train run gets); `torch_ratio_vs_warm` {r["torch_ratio_vs_warm"]:.2f}, \
`keras_ratio_vs_warm` {r["keras_ratio_vs_warm"]:.2f}. Cluster start (broker + Ray head, \
once): {r["cluster_start_s"]:.1f} s.
- Threads: a Ray Train worker (1 CPU) gets OMP_NUM_THREADS={threads["OMP_NUM_THREADS"]}, \
torch threads {threads["torch_threads"]}; plain PyTorch used \
{r["overhead"]["pytorch"]["plain_threads"]} threads, plain TensorFlow intra-op threads \
{r["overhead"]["tensorflow"]["plain_threads"]}.

## (b) The paper's comparisons, small scale: PyTorch vs TensorFlow, 1 vs 4 partitions

| framework | partitions | wall s | training_time_s | startup_s | test accuracy | \
val accuracy |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(paper)}

Plain test accuracy on the same split: {plain_acc}. One Ray Train worker per model; the \
partitions change how the stream is read (one read task per partition) and the ordered \
split (timestamp, partition, offset). Plot: `train.png`.

## (c) GPU

{gpu}. `--gpu` measures GPU vs CPU training of a VGG-16-size model on 64x64 inputs and four \
models sharing one GPU at 0.25 each.

## Noise

The machine ({m["cores"]} cores, {m["cpu"]}, {m["memory"]}) was shared with other jobs \
(1-minute load {m["load_average_1m_at_start"]} at start, {m["load_average_1m_at_end"]} at \
end); repeat spread (max-min)/median {min(spreads):.0%}-{max(spreads):.0%}. Python \
{m["python"]}, ray {m["versions"]["ray"]}, torch {m["versions"]["torch"]}, tensorflow \
{m["versions"]["tensorflow"]}, keras {m["versions"]["keras"]}.

`python -m benchmarks.train --epochs {r["epochs"]} --repeat {r["repeat"]}`
"""


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["paper_comparison"]
    names = [f"{LABELS[p['framework']].split('/')[0]}\n{p['partitions']} part." for p in rows]
    xs = np.arange(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    train = [p["training_time_s"] for p in rows]
    ax1.bar(xs, train, 0.6, color="tab:blue", label="training_time_s")
    ax1.bar(
        xs,
        [p["startup_s"] for p in rows],
        0.6,
        bottom=train,
        color="tab:orange",
        alpha=0.6,
        label="startup_s (wall - training)",
    )
    for i, p in enumerate(rows):
        if p["partitions"] == 1:
            plain_s = r["overhead"][p["framework"]]["plain_s"]["median"]
            ax1.plot([i - 0.3, i + 0.3], [plain_s, plain_s], color="black", lw=2)
    ax1.plot([], [], color="black", lw=2, label="plain loop / fit")
    ax1.set_xticks(xs, names)
    ax1.set_ylabel("seconds (median)")
    ax1.set_title(f"Training time, {r['epochs']} epochs")
    ax1.legend(fontsize=8)
    ax2.bar(xs, [p["test_accuracy"] for p in rows], 0.6, color="tab:green")
    ax2.set_xticks(xs, names)
    ax2.set_ylim(0.8, 1.0)
    ax2.set_ylabel("test accuracy")
    ax2.set_title("Accuracy (test set, newest 10%)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- GPU ------------------------------------------------------------------------------------
def _upsampled(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits tiled to ``n`` samples, each 8x8 image blown up to 64x64."""
    x, y = digits(n)
    return np.kron(x, np.ones((8, 8), dtype=np.float32)), y


def _nvidia_gpus() -> list[str]:
    """The GPUs as ``nvidia-smi`` names them (name, memory), or [] without it."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def run_gpu(samples: int, epochs: int, batch_size: int) -> dict[str, Any]:
    """GPU vs CPU for VGG-16 (PyTorch and Keras), then four PyTorch VGG-16s at 0.25 GPU."""
    import ray

    from kafkaml_ray.ingest.listener import stop_listener

    facts = machine_facts()
    facts["gpus"] = _nvidia_gpus()
    x, y = _upsampled(samples)
    with local_stack(num_cpus=4) as settings:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus < 1:
            raise SystemExit(f"--gpu needs a GPU in the Ray cluster; it has {gpus:g}")
        client = _started(settings)
        codes = {"pytorch": VGG16_PYTORCH, "tensorflow": VGG16_KERAS}
        ids = {fw: client.add_model(f"vgg16-{fw}", fw, code).id for fw, code in codes.items()}
        shared_ids = [ids["pytorch"]] + [
            client.add_model(f"vgg16-pytorch-{i}", "pytorch", VGG16_PYTORCH).id for i in (2, 3, 4)
        ]
        msg = produce_digits(
            settings,
            "vgg-64x64",
            x,
            y,
            1,
            validation_rate=RATES[0],
            test_rate=RATES[1],
            control_topic=PRODUCED_TOPIC,
        )
        run_ours(client, msg, [ids["pytorch"]], 1, batch_size, gpu_fraction=1.0)  # warm-up
        single = {}
        for fw in codes:
            settle()
            cpu = run_ours(client, msg, [ids[fw]], epochs, batch_size)[0]
            settle()
            gpu = run_ours(client, msg, [ids[fw]], epochs, batch_size, gpu_fraction=1.0)[0]
            single[fw] = {
                "cpu": cpu,
                "gpu": gpu,
                "speedup_training": cpu["training_time_s"] / gpu["training_time_s"],
                "speedup_wall": cpu["wall_s"] / gpu["wall_s"],
            }
        settle()
        shared = run_ours(client, msg, shared_ids, epochs, batch_size, gpu_fraction=0.25)
        stop_listener(settings)
        worker_threads = _ray_worker_threads()
    shared_wall = max(r["wall_s"] for r in shared)
    alone = single["pytorch"]["gpu"]["wall_s"]
    facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return {
        "benchmark": "train_gpu",
        "data": f"digits tiled to {samples} samples, upsampled to 64x64; 80/10/10 split",
        "epochs": epochs,
        "batch_size": batch_size,
        "ray_gpus": gpus,
        "single": single,
        "shared_4_at_0.25": {
            "runs": shared,
            "wall_s": shared_wall,
            "one_alone_wall_s": alone,
            "speedup_vs_4_in_turn": 4 * alone / shared_wall,
        },
        "ray_worker_threads": worker_threads,
        "note": "one run each (device time is short); the CPU runs use the 1 CPU a Ray Train "
        "worker gets",
        "machine": facts,
    }


def markdown_gpu(r: dict[str, Any]) -> str:
    rows = [
        f"| {LABELS[fw]} | {s['cpu']['training_time_s']:.1f} | {s['gpu']['training_time_s']:.1f} "
        f"| **{s['speedup_training']:.1f}x** | {s['cpu']['wall_s']:.1f} | {s['gpu']['wall_s']:.1f} "
        f"| {s['speedup_wall']:.1f}x |"
        for fw, s in r["single"].items()
    ]
    sh = r["shared_4_at_0.25"]
    threads = r["ray_worker_threads"]
    return f"""# Training on a GPU: VGG-16 size, 64x64 inputs

{r["data"]}, {r["epochs"]} epochs, batch size {r["batch_size"]}; one run each after a \
1-epoch GPU warm-up; seconds. {r["ray_gpus"]:g} GPU(s) in Ray: \
{", ".join(r["machine"]["gpus"]) or "?"}; host: {r["machine"]["cores"]} cores, \
{r["machine"]["cpu"]}.

| framework | CPU training_time_s | GPU training_time_s | speed-up | CPU wall s | GPU wall s \
| wall speed-up |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Four PyTorch VGG-16s in one configuration at `gpu_fraction=0.25`: all done in \
{sh["wall_s"]:.1f} s; one alone on the whole GPU took {sh["one_alone_wall_s"]:.1f} s, so \
sharing is **{sh["speedup_vs_4_in_turn"]:.2f}x** faster than training the four in turn.

The CPU runs train in a 1-CPU Ray Train worker (OMP_NUM_THREADS=\
{threads["OMP_NUM_THREADS"]}, torch threads {threads["torch_threads"]}), as the library \
schedules them. Times as in `train.md`.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="30 (--gpu: 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="32 (--gpu: 64)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 epochs, 1 repeat")
    parser.add_argument("--gpu", action="store_true", help="GPU vs CPU (needs a GPU)")
    parser.add_argument("--gpu-samples", type=int, default=512)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeat, args.gpu_samples = 3 if not args.gpu else 1, 1, 64
    args.out.mkdir(parents=True, exist_ok=True)
    if args.gpu:
        result = run_gpu(args.gpu_samples, args.epochs or 2, args.batch_size or 64)
        write_json(args.out / "train_gpu.json", result)
        (args.out / "train_gpu.md").write_text(markdown_gpu(result))
        print(markdown_gpu(result))
        return
    result = run(args.epochs or 30, args.batch_size or 32, args.repeat)
    write_json(args.out / "train.json", result)
    (args.out / "train.md").write_text(markdown(result))
    plot(result, args.out / "train.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
