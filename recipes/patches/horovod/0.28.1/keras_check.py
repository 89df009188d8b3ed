#!/usr/bin/env python3
"""Horovod Keras check: does hvd.DistributedOptimizer really average gradients in model.fit?

Run under a launcher with 2+ ranks, e.g. ``horovodrun -np 2 --gloo python keras_check.py``.
With ``TF_USE_LEGACY_KERAS=1`` (and the ``tf-keras`` package installed) tf.keras is Keras 2.

Every rank trains the same tiny linear model (same initial weights, broadcast from rank 0)
with plain SGD on DIFFERENT data. If the wrapped optimizer allreduces the gradients the
weights stay identical on all ranks after ``model.fit``; if it does not, they diverge.
A ``model.fit`` that merely runs proves nothing, so the script compares the weights.

Exit status: 0 when the weights agree on all ranks, 1 otherwise (or on an exception).
"""

from __future__ import annotations

import sys

import numpy as np

BATCH, EPOCHS, SAMPLES = 16, 3, 64


def make_data(rank: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + rank)
    x = rng.normal(size=(SAMPLES, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [3.0], [0.5]], dtype="float32") + rank).astype("float32")
    return x, y


def reference_weights(w0: list[np.ndarray], data: list, lr: float) -> np.ndarray:
    """Dense(1) + MSE trained with SGD on gradients averaged over all ranks' batches."""
    kernel, bias = w0[0].astype("float64"), w0[1].astype("float64")
    for _ in range(EPOCHS):
        for start in range(0, SAMPLES, BATCH):
            gk, gb = np.zeros_like(kernel), np.zeros_like(bias)
            for x, y in data:
                xb, yb = x[start : start + BATCH], y[start : start + BATCH]
                err = xb @ kernel + bias - yb
                gk += 2.0 / len(xb) * xb.T @ err
                gb += 2.0 / len(xb) * err.sum(axis=0)
            kernel -= lr * gk / len(data)
            bias -= lr * gb / len(data)
    return np.concatenate([kernel.ravel(), bias.ravel()])


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-callbacks",
        action="store_true",
        help="skip BroadcastGlobalVariablesCallback and MetricAverageCallback (initial weights"
        " are still identical on all ranks: same seed)",
    )
    args = parser.parse_args()

    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    keras = tf.keras
    kver = getattr(keras, "__version__", "?")
    print(f"[rank {rank}] tf {tf.__version__}, tf.keras is {keras.__name__} {kver}", flush=True)

    keras.utils.set_random_seed(1234)
    data = [make_data(r) for r in range(size)]
    x, y = data[rank]  # different data on every rank

    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(1)])
    w0 = [np.array(w) for w in model.get_weights()]
    lr = 0.01 * size
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(learning_rate=lr))
    model.compile(loss="mse", optimizer=opt)
    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
    ]
    if args.no_callbacks:
        callbacks = []
    hist = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        callbacks=callbacks,
        verbose=2 if rank == 0 else 0,
    )
    print(f"[rank {rank}] loss history {[round(v, 4) for v in hist.history['loss']]}", flush=True)

    flat = np.concatenate([np.ravel(w) for w in model.get_weights()]).astype("float32")
    gathered = hvd.allgather(tf.constant(flat[None, :]), name="keras_check_weights").numpy()
    spread = float(np.max(np.abs(gathered - gathered[0:1])))
    ok = spread <= 1e-5
    verdict = "SYNCHRONIZED" if ok else "NOT synchronized (gradients were not allreduced)"
    print(
        f"[rank {rank}] weights max spread across {size} ranks = {spread:.3g}: {verdict}",
        flush=True,
    )
    # Synchronous data-parallel SGD computed by hand (gradients averaged over ranks)
    ref = reference_weights(w0, data, lr)
    err = float(np.max(np.abs(flat - ref)))
    ref_ok = err <= 1e-4
    print(
        f"[rank {rank}] max |weights - synchronous-SGD reference| = {err:.3g}: "
        f"{'MATCHES' if ref_ok else 'DIFFERS'}",
        flush=True,
    )
    hvd.shutdown()
    return 0 if ok and ref_ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(1)
