"""CosmoFlow 3D CNN in Keras (MLPerf HPC reference layer list, REFERENCE.md)."""

from __future__ import annotations

import math
from typing import Any

from validation.config import CosmoFlowConfig


def build_cosmoflow(config: CosmoFlowConfig) -> Any:
    """A Keras model: (S, S, S, C) channels-last cubes -> n_targets in [-1.2, 1.2]."""
    from tensorflow import keras

    layers = keras.layers
    # PyTorch's default init, so both frameworks train the same recipe: weights and biases
    # uniform in +-1/sqrt(fan_in). Keras' glorot saturates the tanh head; its zero biases
    # are a different starting point from torch's.
    kernel_init = keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform")

    def bias_init(fan_in: int) -> Any:
        bound = 1 / math.sqrt(fan_in)
        return keras.initializers.RandomUniform(-bound, bound)

    inputs = keras.Input((config.size, config.size, config.size, config.channels))
    x = inputs
    for filters in config.filters:
        fan_in = 3**3 * x.shape[-1]
        x = layers.Conv3D(
            filters,
            3,
            padding="same",
            kernel_initializer=kernel_init,
            bias_initializer=bias_init(fan_in),
        )(x)
        x = layers.LeakyReLU(negative_slope=0.3)(x)
        x = layers.MaxPooling3D(2)(x)
    x = layers.Flatten()(x)
    for units in config.dense:
        dense = layers.Dense(
            units, kernel_initializer=kernel_init, bias_initializer=bias_init(x.shape[-1])
        )
        x = layers.LeakyReLU(negative_slope=0.3)(dense(x))
        if config.dropout > 0:
            x = layers.Dropout(config.dropout)(x)
    x = layers.Dense(
        config.n_targets,
        activation="tanh",
        kernel_initializer=kernel_init,
        bias_initializer=bias_init(x.shape[-1]),
    )(x)
    outputs = layers.Rescaling(1.2)(x)
    return keras.Model(inputs, outputs, name="cosmoflow")
