"""What is trained, and the plain side: the example model per framework (`FRAMEWORKS`), the
stream's partition counts and its ordered 80/10/10 split (`split`), the VGG-16 model code
of the GPU benchmark, and the plain baselines (`plain_torch`, `plain_keras`: the same model
code trained without us, on in-memory arrays)."""

from __future__ import annotations

import time

import numpy as np

from kafkaml_ray.ingest.dataset import split_sizes

__all__ = [
    "FRAMEWORKS",
    "PARTITIONS",
    "RATES",
    "SEED",
    "VGG16_PYTORCH",
    "VGG16_KERAS",
    "split",
    "plain_torch",
    "plain_keras",
    "PLAIN",
]

FRAMEWORKS = {"pytorch": "digits-cnn-pytorch", "tensorflow": "digits-cnn-keras"}
PARTITIONS = (1, 4)
RATES = (0.1, 0.1)  # validation, test
SEED = 0

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
def split(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
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

    from kafkaml_ray import frameworks

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
    model = frameworks.get("pytorch").build(code)
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
    from kafkaml_ray import frameworks
    from kafkaml_ray.frameworks.keras import import_tensorflow

    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(SEED)
    start = time.perf_counter()
    model = frameworks.get("tensorflow").build(code)
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
