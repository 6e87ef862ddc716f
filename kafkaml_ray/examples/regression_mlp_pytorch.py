# A regression MLP over 26 features (the paper's CEPSA virtual analyser shape), Kafka-ML style.
import torch
from ignite.metrics import Loss, MeanAbsoluteError, MeanSquaredError
from torch import nn


class RegressionMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(26, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1)
        )

    def forward(self, x):
        return self.net(x)

    def loss_fn(self):
        return nn.MSELoss()

    def optimizer(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def metrics(self):
        return {"mae": MeanAbsoluteError(), "mse": MeanSquaredError(), "loss": Loss(self.loss_fn())}
