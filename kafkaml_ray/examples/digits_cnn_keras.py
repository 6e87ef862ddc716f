# A small CNN for scikit-learn's digits (8x8 grey images, 10 classes), Kafka-ML style:
# Keras code that defines a compiled `model`.
import keras
from keras import layers

model = keras.Sequential(
    [
        keras.Input(shape=(8, 8)),
        layers.Rescaling(1 / 16.0),
        layers.Reshape((8, 8, 1)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ]
)
model.compile(
    optimizer=keras.optimizers.Adam(2e-3),
    loss="sparse_categorical_crossentropy",
    metrics=["accuracy"],
)
