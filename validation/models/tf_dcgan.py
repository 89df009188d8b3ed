"""CosmoGAN-style DCGAN in Keras (REFERENCE.md, GANs for science)."""

from __future__ import annotations

from typing import Any

from validation.config import GANConfig

# PyTorch's BN momentum 0.1 is Keras momentum 0.9; Keras' default 0.99 leaves the running
# statistics far from the batch statistics after a short run, which spoils evaluation.
BN_MOMENTUM = 0.9


def torch_init() -> Any:
    """PyTorch's default weight init (kaiming_uniform, a=sqrt(5): U(+-1/sqrt(fan_in))), so
    both frameworks start alike; Keras' glorot_uniform is wider for these layers, and with it
    the short small-config run learned the pixel histogram in fewer seeds."""
    from tensorflow import keras

    return keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")


def build_generator(config: GANConfig) -> Any:
    """z -> dense -> 4 x [ConvTranspose 5x5 stride 2, BN, ReLU] (last: tanh); (S, S, 1)."""
    from tensorflow import keras

    L = keras.layers
    base = config.image_size // 2 ** len(config.gen_filters)
    c0 = config.gen_filters[0]
    z = keras.Input((config.latent_dim,))
    x = L.Reshape((base, base, c0))(L.Dense(base * base * c0, kernel_initializer=torch_init())(z))
    x = L.ReLU()(L.BatchNormalization(momentum=BN_MOMENTUM)(x))
    for filters in config.gen_filters[1:]:
        x = L.Conv2DTranspose(
            filters, config.kernel, strides=2, padding="same", kernel_initializer=torch_init()
        )(x)
        x = L.ReLU()(L.BatchNormalization(momentum=BN_MOMENTUM)(x))
    x = L.Conv2DTranspose(
        1,
        config.kernel,
        strides=2,
        padding="same",
        activation="tanh",
        kernel_initializer=torch_init(),
    )(x)
    return keras.Model(z, x, name="generator")


def build_discriminator(config: GANConfig) -> Any:
    """4 x [Conv 5x5 stride 2, BN (not first), LeakyReLU 0.2] -> linear logit."""
    from tensorflow import keras

    L = keras.layers
    image = keras.Input((config.image_size, config.image_size, 1))
    x = image
    for i, filters in enumerate(config.disc_filters):
        x = L.Conv2D(
            filters, config.kernel, strides=2, padding="same", kernel_initializer=torch_init()
        )(x)
        if i > 0:
            x = L.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = L.LeakyReLU(negative_slope=0.2)(x)
    return keras.Model(
        image, L.Dense(1, kernel_initializer=torch_init())(L.Flatten()(x)), name="discriminator"
    )
