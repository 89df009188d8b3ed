"""Keras and PyTorch CosmoFlow train the same recipe: same initialisation, optimizer and
loss, so given the same weights and batches their losses track each other."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from validation.config import lr_factor, workload_config
from validation.data.sources import load_arrays

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")


def torch_layers(model: Any) -> list[Any]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.Linear)]


def keras_layers(model: Any) -> list[Any]:
    return [layer for layer in model.layers if layer.get_weights()]


def copy_torch_into_keras(net: Any, keras_model: Any, config: Any) -> None:
    """Give the Keras model the torch model's weights (channels-last layouts)."""
    side = config.size // 2 ** len(config.filters)
    first_dense = True
    for t, k in zip(torch_layers(net), keras_layers(keras_model), strict=True):
        w, b = t.weight.detach().numpy(), t.bias.detach().numpy()
        if w.ndim == 5:  # (out, in, d, h, w) -> (d, h, w, in, out)
            k.set_weights([w.transpose(2, 3, 4, 1, 0), b])
            continue
        if first_dense:  # torch flattens (C, D, H, W), Keras (D, H, W, C)
            c = config.filters[-1]
            w = w.reshape(-1, c, side, side, side).transpose(0, 2, 3, 4, 1).reshape(len(w), -1)
            first_dense = False
        k.set_weights([w.T, b])


def test_keras_initialises_weights_and_biases_like_torch() -> None:
    from tensorflow import keras

    from validation.models.tf_cosmoflow import build_cosmoflow
    from validation.models.torch_cosmoflow import CosmoFlowNet

    config = workload_config("cosmoflow", "small")
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    net = CosmoFlowNet(config)
    for t, k in zip(torch_layers(net), keras_layers(build_cosmoflow(config)), strict=True):
        bound = 1 / np.sqrt(t.weight[0].numel())  # torch: U(+-1/sqrt(fan_in)) for both
        for torch_param, keras_param in zip((t.weight, t.bias), k.get_weights(), strict=True):
            for values in (torch_param.detach().numpy(), keras_param):
                assert np.abs(values).max() <= bound
                assert np.count_nonzero(values) == values.size  # Keras' default bias is 0
                if values.size >= 256:  # enough values for a stable spread
                    assert values.std() == pytest.approx(bound / np.sqrt(3), rel=0.1)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_weights_and_batches_give_the_same_losses(optimizer: str) -> None:
    from validation.torch_dist import TorchSync
    from validation.train_tf import KerasWorkload
    from validation.train_torch import CosmoFlowWorkload

    config = workload_config("cosmoflow", "small")  # Adam with warm-up and decay
    if optimizer == "sgd":
        # At a constant rate only: under a changing rate torch's momentum (v = mu v + g;
        # p -= lr v) and Keras' (v = mu v - lr g; p += v) differ by design.
        config = workload_config(
            "cosmoflow", "small", optimizer="sgd", lr=1e-2, warmup_epochs=0, lr_decay="constant"
        )
    x, y = load_arrays(config, 5, np.arange(4 * 8), "train", None)
    torch.manual_seed(0)
    torch_run = CosmoFlowWorkload(config, TorchSync("none"), config.lr)
    keras_run = KerasWorkload(config, config.lr, None)
    copy_torch_into_keras(torch_run.model, keras_run.model, config)
    x_last = np.moveaxis(x, 1, -1).copy()
    for step in range(4):
        batch = slice(8 * step, 8 * step + 8)
        lr = config.lr * lr_factor(config, step, 16)
        torch_run.set_lr(lr)
        keras_run.set_lr(lr)
        torch_loss = torch_run.train_step(torch.from_numpy(x[batch]), torch.from_numpy(y[batch]))
        keras_loss = keras_run.train_step(x_last[batch], y[batch])
        assert keras_loss["loss"] == pytest.approx(torch_loss["loss"], rel=1e-3), step
