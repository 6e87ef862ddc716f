# A regression MLP over 26 features (the paper's CEPSA virtual analyser shape), Kafka-ML style.
import keras
from keras import layers

model = keras.Sequential(
    [
        keras.Input(shape=(26,)),
        layers.Dense(64, activation="relu"),
        layers.Dense(32, activation="relu"),
        layers.Dense(1),
    ]
)
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae", "mse"])
