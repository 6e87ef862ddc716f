# A small CNN for scikit-learn's digits (8x8 grey images, 10 classes), Kafka-ML style:
# an nn.Module with loss_fn(), optimizer() and metrics() (Ignite metrics).
import torch
from ignite.metrics import Accuracy, Loss
from torch import nn


class DigitsCNN(nn.Module):
    input_shape = (8, 8)  # one sample, without the batch dimension

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.net(x.reshape(-1, 1, 8, 8) / 16.0)

    def loss_fn(self):
        return nn.CrossEntropyLoss()

    def optimizer(self):
        return torch.optim.Adam(self.parameters(), lr=2e-3)

    def metrics(self):
        return {"accuracy": Accuracy(), "loss": Loss(self.loss_fn())}
