"""DeepLabv3+ with an Xception-style encoder in Keras (DeepCAM, REFERENCE.md)."""

from __future__ import annotations

from typing import Any

from validation.config import ClimateConfig

# PyTorch's BN momentum 0.1 is Keras momentum 0.9; Keras' default 0.99 leaves the running
# statistics far from the batch statistics after a short run, which spoils evaluation.
BN_MOMENTUM = 0.9


def build_deeplab(config: ClimateConfig) -> Any:
    """A Keras model: (H, W, C) -> logits (H, W, n_classes)."""
    from tensorflow import keras

    L = keras.layers

    def cbr(x: Any, filters: int, k: int, stride: int = 1, dilation: int = 1) -> Any:
        x = L.Conv2D(
            filters, k, strides=stride, dilation_rate=dilation, padding="same", use_bias=False
        )(x)
        return L.ReLU()(L.BatchNormalization(momentum=BN_MOMENTUM)(x))

    def sep(x: Any, filters: int, stride: int = 1, dilation: int = 1) -> Any:
        x = L.DepthwiseConv2D(
            3, strides=stride, dilation_rate=dilation, padding="same", use_bias=False
        )(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM)(L.Conv2D(filters, 1, use_bias=False)(x))
        return L.ReLU()(x)

    def block(x: Any, filters: int, stride: int = 1, dilation: int = 1) -> Any:
        skip = x
        if x.shape[-1] != filters or stride != 1:
            skip = L.BatchNormalization(momentum=BN_MOMENTUM)(
                L.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
            )
        y = sep(sep(x, filters, dilation=dilation), filters, dilation=dilation)
        y = sep(y, filters, stride=stride, dilation=dilation)
        return L.Add()([y, skip])

    f = config.entry_filters
    inputs = keras.Input((config.height, config.width, config.channels))
    x = cbr(cbr(inputs, f[0], 3, stride=2), f[1], 3)
    stride, dilation, low = 2, 1, None
    for filters in f[2:]:
        step = 2 if stride < config.output_stride else 1
        dilation = dilation * 2 if step == 1 else dilation
        x = block(x, filters, stride=step, dilation=dilation if step == 1 else 1)
        stride *= step
        low = x if low is None else low
    for _ in range(config.middle_blocks):
        x = block(x, x.shape[-1], dilation=dilation)
    x = sep(
        block(x, config.exit_filters, dilation=dilation), config.exit_filters, dilation=dilation
    )
    branches = [cbr(x, config.aspp_filters, 1)]
    branches += [cbr(x, config.aspp_filters, 3, dilation=d) for d in config.aspp_dilations]
    pooled = L.GlobalAveragePooling2D(keepdims=True)(x)
    pooled = L.Conv2D(config.aspp_filters, 1, activation="relu")(pooled)
    pooled = L.UpSampling2D(size=tuple(x.shape[1:3]))(pooled)
    x = cbr(L.Concatenate()([*branches, pooled]), config.aspp_filters, 1)
    factor = (low.shape[1] // x.shape[1], low.shape[2] // x.shape[2])
    x = L.UpSampling2D(size=factor, interpolation="bilinear")(x)
    x = L.Concatenate()([x, cbr(low, config.low_level_filters, 1)])
    x = cbr(cbr(x, config.decoder_filters, 3), config.decoder_filters, 3)
    x = L.Conv2D(config.n_classes, 1)(x)
    up = (config.height // x.shape[1], config.width // x.shape[2])
    outputs = L.UpSampling2D(size=up, interpolation="bilinear")(x)
    return keras.Model(inputs, outputs, name="deeplabv3plus")
