"""Horovod's TensorFlow and Keras API (horovod.tensorflow, horovod.tensorflow.keras), checked
family by family on every rank against references each rank computes from all ranks' data."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from validation.horovod_api.results import Checks


def rank_data(rank: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """The input rank `rank` holds: different on every rank, reproducible on every rank."""
    rng = np.random.default_rng(1000 * seed + rank)
    return rng.normal(loc=rank, scale=1.0 + rank, size=shape).astype(np.float32)


def adasum_pair(data: list[np.ndarray]) -> np.ndarray:
    """Adasum of two ranks' vectors a, b: (1 - a.b/2|a|^2) a + (1 - a.b/2|b|^2) b
    (Maleki et al., arXiv:2006.02924)."""
    a, b = (d.ravel().astype(np.float64) for d in data)
    dot = a @ b
    return (1 - dot / (2 * a @ a)) * a + (1 - dot / (2 * b @ b)) * b


def check_collectives(hvd: Any, tf: Any, c: Checks) -> None:
    """allreduce with every reduction op, compression, scaling, dtypes, sparse and tf.function."""
    n, r = c.size, c.rank
    data = [rank_data(i, (3, 2)) for i in range(n)]
    stack = np.stack(data)
    x = tf.constant(data[r])
    refs = {
        "Sum": stack.sum(0),
        "Average": stack.mean(0),
        "Min": stack.min(0),
        "Max": stack.max(0),
        "Product": stack.prod(0),
    }
    for op, want in refs.items():
        got = hvd.allreduce(x, op=getattr(hvd, op), name=f"api_tf_{op}")
        c.close("collectives", f"allreduce(op={op})", got.numpy(), want)
    if not hvd.mpi_enabled():
        c.unsupported(
            "collectives",
            "allreduce(op=Adasum) under Gloo",
            lambda: hvd.allreduce(x, op=hvd.Adasum),
            "horovod.tensorflow.allreduce(op=hvd.Adasum)",
        )
    elif n == 2:
        c.close(
            "collectives",
            "allreduce(op=Adasum)",
            hvd.allreduce(x, op=hvd.Adasum, name="api_tf_adasum").numpy().ravel(),
            adasum_pair(data),
            atol=1e-4,
        )
    got = hvd.allreduce(x, op=hvd.Average, compression=hvd.Compression.fp16, name="api_tf_fp16")
    c.true(
        "collectives", "allreduce(compression=fp16) dtype", got.dtype == tf.float32, str(got.dtype)
    )
    c.close(
        "collectives",
        "allreduce(compression=fp16)",
        got.numpy(),
        refs["Average"],
        atol=2e-2,
        rtol=1e-2,
    )
    got = hvd.allreduce(
        x, op=hvd.Sum, prescale_factor=2.0, postscale_factor=0.25, name="api_tf_scale"
    )
    c.close("collectives", "allreduce(prescale=2, postscale=0.25)", got.numpy(), refs["Sum"] * 0.5)
    ints = tf.constant([r + 1, 10 * (r + 1)], dtype=tf.int32)
    got = hvd.allreduce(ints, op=hvd.Sum, name="api_tf_int")
    c.close(
        "collectives", "allreduce(int32, Sum)", got.numpy(), [n * (n + 1) // 2, 5 * n * (n + 1)]
    )
    # Sparse gradients (tf.IndexedSlices) are allgathered: the dense result is the average.
    dense_rows = np.zeros((n + 1, 2), np.float32)
    for i in range(n):
        dense_rows[i] += data[i][0]
        dense_rows[n] += data[i][1]
    slices = tf.IndexedSlices(
        tf.constant(data[r][:2]), tf.constant([r, n]), tf.constant([n + 1, 2])
    )
    got = hvd.allreduce(slices, op=hvd.Average, name="api_tf_sparse")
    c.close(
        "collectives", "allreduce(IndexedSlices)", tf.convert_to_tensor(got).numpy(), dense_rows / n
    )
    fn = tf.function(lambda t: hvd.allreduce(t, op=hvd.Sum, name="api_tf_fn"))
    c.close("collectives", "tf.function allreduce", fn(x).numpy(), refs["Sum"])


def check_grouped(hvd: Any, tf: Any, c: Checks) -> None:
    """grouped_allreduce: one fused request for several tensors."""
    n, r = c.size, c.rank
    a = [rank_data(i, (4,), seed=1) for i in range(n)]
    b = [rank_data(i, (2, 3), seed=2) for i in range(n)]
    got = hvd.grouped_allreduce(
        [tf.constant(a[r]), tf.constant(b[r])], op=hvd.Sum, name="api_tf_grp"
    )
    c.close("grouped", "grouped_allreduce[0]", got[0].numpy(), np.sum(a, 0))
    c.close("grouped", "grouped_allreduce[1]", got[1].numpy(), np.sum(b, 0))
    got = hvd.grouped_allreduce(
        [tf.constant(a[r]), tf.constant(b[r])], op=hvd.Average, compression=hvd.Compression.fp16
    )
    c.close(
        "grouped",
        "grouped_allreduce(Average, fp16)[1]",
        got[1].numpy(),
        np.mean(b, 0),
        atol=2e-2,
        rtol=1e-2,
    )


def check_allgather(hvd: Any, tf: Any, c: Checks) -> None:
    """allgather and grouped_allgather with a different first dimension on every rank."""
    n, r = c.size, c.rank
    parts = [rank_data(i, (i + 1, 2), seed=3) for i in range(n)]
    got = hvd.allgather(tf.constant(parts[r]), name="api_tf_gather")
    c.close("allgather", "allgather(rows = rank+1)", got.numpy(), np.concatenate(parts))
    ids = [np.arange(i + 2, dtype=np.float32) * (i + 1) for i in range(n)]  # one dtype per group
    got = hvd.grouped_allgather([tf.constant(parts[r]), tf.constant(ids[r])])
    c.close("allgather", "grouped_allgather[0]", got[0].numpy(), np.concatenate(parts))
    c.close("allgather", "grouped_allgather[1]", got[1].numpy(), np.concatenate(ids))


def check_broadcast(hvd: Any, tf: Any, c: Checks) -> None:
    """broadcast from the last rank, broadcast_variables in place (tf and Keras variables)."""
    n, r = c.size, c.rank
    root = n - 1
    got = hvd.broadcast(tf.constant(rank_data(r, (3,))), root_rank=root, name="api_tf_bcast")
    c.close("broadcast", f"broadcast(root_rank={root})", got.numpy(), rank_data(root, (3,)))
    var = tf.Variable(rank_data(r, (2, 2), seed=4))
    hvd.broadcast_variables([var], root_rank=0)
    c.close(
        "broadcast", "broadcast_variables(tf.Variable)", var.numpy(), rank_data(0, (2, 2), seed=4)
    )
    kvar = tf.keras.Variable(rank_data(r, (3,), seed=5))
    hvd.broadcast_variables([kvar], root_rank=root)
    c.close(
        "broadcast",
        "broadcast_variables(keras.Variable)",
        kvar.numpy(),
        rank_data(root, (3,), seed=5),
    )
    var = tf.Variable(rank_data(r, (2,), seed=6))
    hvd.broadcast_([var], root_rank=root)
    c.close("broadcast", "broadcast_(in place)", var.numpy(), rank_data(root, (2,), seed=6))


def check_alltoall(hvd: Any, tf: Any, c: Checks) -> None:
    """alltoall with explicit splits (rank r sends j+1 rows to rank j) and equal splits."""
    n, r = c.size, c.rank
    rows = np.concatenate([np.full((j + 1, 2), 10 * r + j, np.float32) for j in range(n)])
    got, received = hvd.alltoall(
        tf.constant(rows), splits=tf.constant(list(range(1, n + 1)), tf.int32)
    )
    want = np.concatenate([np.full((r + 1, 2), 10 * i + r, np.float32) for i in range(n)])
    c.close("alltoall", "alltoall(splits)", got.numpy(), want)
    c.close("alltoall", "alltoall received_splits", received.numpy(), [r + 1] * n)
    even = np.arange(2 * n, dtype=np.float32) + 100 * r
    got = hvd.alltoall(tf.constant(even))
    want = np.concatenate(
        [np.arange(2 * r, 2 * r + 2, dtype=np.float32) + 100 * i for i in range(n)]
    )
    c.close("alltoall", "alltoall(equal splits)", got.numpy(), want)


def check_reducescatter(hvd: Any, tf: Any, c: Checks) -> None:
    """reducescatter (Sum, Average) and grouped_reducescatter: rank r keeps rows 2r, 2r+1."""
    n, r = c.size, c.rank
    data = [rank_data(i, (2 * n, 3), seed=7) for i in range(n)]
    mine = slice(2 * r, 2 * r + 2)
    got = hvd.reducescatter(tf.constant(data[r]), op=hvd.Sum)
    c.close("reducescatter", "reducescatter(Sum)", got.numpy(), np.sum(data, 0)[mine])
    got = hvd.reducescatter(tf.constant(data[r]), op=hvd.Average)
    c.close("reducescatter", "reducescatter(Average)", got.numpy(), np.mean(data, 0)[mine])
    got = hvd.grouped_reducescatter([tf.constant(data[r]), tf.constant(2 * data[r])], op=hvd.Sum)
    c.close("reducescatter", "grouped_reducescatter[1]", got[1].numpy(), 2 * np.sum(data, 0)[mine])


def check_objects(hvd: Any, tf: Any, c: Checks) -> None:
    """allgather_object and broadcast_object (pickled Python objects)."""
    n, r = c.size, c.rank
    got = hvd.allgather_object({"rank": r, "name": "x" * (r + 1)})
    want = [{"rank": i, "name": "x" * (i + 1)} for i in range(n)]
    c.true("objects", "allgather_object", got == want, f"got={got}")
    got = hvd.broadcast_object({"from": r, "payload": list(range(r + 3))}, root_rank=n - 1)
    want = {"from": n - 1, "payload": list(range(n + 2))}
    c.true("objects", "broadcast_object(root_rank=last)", got == want, f"got={got}")


def check_join(hvd: Any, tf: Any, c: Checks) -> None:
    """join(): the ranks that joined contribute zeros; it returns the last rank to join."""
    r = c.rank
    if r == 0:
        time.sleep(0.5)  # rank 0 joins last, after one more allreduce than the others
        got = hvd.allreduce(tf.constant([5.0, 7.0]), op=hvd.Sum, name="api_tf_join_extra")
        c.close("join", "allreduce while others joined", got.numpy(), [5.0, 7.0])
    last = int(hvd.join())
    c.true("join", "join() returns last joined rank", last == 0, f"got={last}")


def check_barrier(hvd: Any, tf: Any, c: Checks) -> None:
    """barrier(): no rank leaves before the last one arrived."""
    n, r = c.size, c.rank
    if r == n - 1:
        time.sleep(1.0)
    arrived = time.time()
    hvd.barrier()
    left = time.time()
    times = hvd.allgather_object((arrived, left))
    latest_arrival = max(a for a, _ in times)
    ok = all(leave >= latest_arrival for _, leave in times)
    c.true("barrier", "barrier() waits for the last rank", ok, f"arrive/leave={times}")


def _model(tf: Any, seed: int) -> Any:
    """Dense(3) -> Dense(1), same initial weights on every rank."""
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((4,)),
            tf.keras.layers.Dense(3, name="shared"),
            tf.keras.layers.Dense(1, name="head"),
        ]
    )
    return model


def _var_name(var: Any) -> str:
    """layer/variable, without the model's name (Keras numbers models: sequential_3)."""
    return var.path.split("/", 1)[-1]


def _local_grads(tf: Any, model: Any, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - y) ** 2)
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def _all_local_grads(tf: Any, model: Any, n: int, seed: int) -> list[list[np.ndarray]]:
    """Each rank's own gradient, computed here for every rank (the reference)."""
    return [
        _local_grads(tf, model, rank_data(i, (8, 4), seed), rank_data(i, (8, 1), seed + 1))
        for i in range(n)
    ]


def check_tape(hvd: Any, tf: Any, c: Checks) -> None:
    """DistributedGradientTape averages the gradients of Keras model variables."""
    n, r = c.size, c.rank
    model = _model(tf, 11)
    refs = _all_local_grads(tf, model, n, 20)
    x, y = rank_data(r, (8, 4), 20), rank_data(r, (8, 1), 21)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - y) ** 2)
    tape = hvd.DistributedGradientTape(tape)
    grads = tape.gradient(loss, model.trainable_variables)
    for i, (g, v) in enumerate(zip(grads, model.trainable_variables, strict=True)):
        want = np.mean([ref[i] for ref in refs], 0)
        c.close("tape", f"DistributedGradientTape {_var_name(v)}", g.numpy(), want)
    for groups in (2, [model.trainable_variables[:2]]):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        grads = hvd.DistributedGradientTape(tape, groups=groups).gradient(
            loss, model.trainable_variables
        )
        got = np.concatenate([g.numpy().ravel() for g in grads])
        want = np.concatenate(
            [np.mean([ref[i] for ref in refs], 0).ravel() for i in range(len(grads))]
        )
        c.close(
            "tape",
            f"DistributedGradientTape(groups={'list' if isinstance(groups, list) else groups})",
            got,
            want,
        )
    v = tf.Variable([1.0, 2.0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(v * float(r + 1))
    got = hvd.DistributedGradientTape(tape, op=hvd.Sum).gradient(loss, [v])[0]
    c.close(
        "tape", "DistributedGradientTape(op=Sum) tf.Variable", got.numpy(), [n * (n + 1) / 2] * 2
    )


def check_partial_tape(hvd: Any, tf: Any, c: Checks) -> None:
    """PartialDistributedGradientTape: local layers and local sources are not reduced."""
    n, r = c.size, c.rank
    model = _model(tf, 12)
    refs = _all_local_grads(tf, model, n, 30)
    x, y = rank_data(r, (8, 4), 30), rank_data(r, (8, 1), 31)
    head = model.get_layer("head")
    for scale in (True, False):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        ptape = hvd.PartialDistributedGradientTape(
            tape, local_layers=[head], scale_local_gradients=scale
        )
        grads = ptape.gradient(loss, model.trainable_variables)
        for i, (g, v) in enumerate(zip(grads, model.trainable_variables, strict=True)):
            local = any(v is w for w in head.trainable_variables)
            want = (
                refs[r][i] / (n if scale else 1) if local else np.mean([ref[i] for ref in refs], 0)
            )
            kind = "local" if local else "reduced"
            c.close(
                "partial_tape", f"local_layers scale={scale} {kind} {_var_name(v)}", g.numpy(), want
            )
    # The reported failure: a Keras 3 variable registered as a local source.
    shared = tf.keras.Variable(np.ones(2, np.float32), name="shared_w")
    private = tf.keras.Variable(np.ones(2, np.float32), name="private_w")
    with tf.GradientTape(persistent=True) as tape:  # two gradient() calls below
        loss = tf.reduce_sum(shared * float(r + 1)) + tf.reduce_sum(private * float(10 * (r + 1)))
    ptape = hvd.PartialDistributedGradientTape(tape, scale_local_gradients=False)
    ptape.register_local_source(private)
    g_shared, g_private = ptape.gradient(loss, [shared, private])
    c.close(
        "partial_tape",
        "register_local_source(keras.Variable) reduced",
        g_shared.numpy(),
        [(n + 1) / 2] * 2,
    )
    c.close(
        "partial_tape",
        "register_local_source(keras.Variable) local",
        g_private.numpy(),
        [10.0 * (r + 1)] * 2,
    )
    local_pairs, global_pairs = ptape.get_local_and_global_gradients(loss, [shared, private])
    c.true(
        "partial_tape",
        "get_local_and_global_gradients",
        [s.name for s, _ in local_pairs] == ["private_w"]
        and [s.name for s, _ in global_pairs] == ["shared_w"],
        f"local={[s.name for s, _ in local_pairs]} global={[s.name for s, _ in global_pairs]}",
    )


def _fit_data(n: int, steps: int, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (rank_data(i, (steps * batch, 4), 40), rank_data(i, (steps * batch, 1), 41))
        for i in range(n)
    ]


def _linear_sgd(
    w: np.ndarray,
    b: np.ndarray,
    data: list,
    lr: float,
    batch: int,
    passes: int,
    average_passes: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense(1) + MSE, SGD on rank-averaged gradients accumulated over `passes` batches."""
    w, b = w.astype(np.float64), b.astype(np.float64)
    steps = len(data[0][0]) // batch
    acc_w, acc_b = np.zeros_like(w), np.zeros_like(b)
    for step in range(steps):
        for x, y in data:
            xb, yb = x[step * batch : (step + 1) * batch], y[step * batch : (step + 1) * batch]
            err = xb @ w + b - yb
            acc_w += 2.0 / batch * xb.T @ err / len(data)
            acc_b += 2.0 / batch * err.sum(0) / len(data)
        if (step + 1) % passes == 0:
            scale = 1.0 / passes if average_passes else 1.0
            w, b = w - lr * scale * acc_w, b - lr * scale * acc_b
            acc_w, acc_b = np.zeros_like(w), np.zeros_like(b)
    return w, b


def check_optimizer(hvd: Any, tf: Any, c: Checks) -> None:
    """DistributedOptimizer: apply_gradients / apply in a custom loop, model.fit with
    backward_passes_per_step, against hand-computed synchronous SGD."""
    import horovod.tensorflow.keras as hvd_k

    n, r = c.size, c.rank
    model = _model(tf, 13)
    refs = _all_local_grads(tf, model, n, 50)
    start = [v.numpy() for v in model.trainable_variables]
    local = [tf.constant(g) for g in refs[r]]
    for how in ("apply_gradients", "apply"):
        for v, s in zip(model.trainable_variables, start, strict=True):
            v.assign(s)
        opt = hvd.DistributedOptimizer(tf.keras.optimizers.SGD(0.5))
        if how == "apply":
            opt.apply(local, model.trainable_variables)
        else:
            opt.apply_gradients(zip(local, model.trainable_variables, strict=True))
        for i, v in enumerate(model.trainable_variables):
            want = start[i] - 0.5 * np.mean([ref[i] for ref in refs], 0)
            c.close("optimizer", f"DistributedOptimizer.{how} {_var_name(v)}", v.numpy(), want)

    # TF1-style optimizers (tf.compat.v1.train), eagerly
    v = tf.Variable([1.0, 2.0])
    legacy = hvd.DistributedOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.5))
    legacy.apply_gradients(
        legacy.compute_gradients(lambda: tf.reduce_sum(v * float(r + 1)), var_list=[v])
    )
    c.close(
        "optimizer",
        "DistributedOptimizer(tf.compat.v1.train optimizer)",
        v.numpy(),
        np.array([1.0, 2.0]) - 0.5 * (n + 1) / 2,
    )
    # Sparse (embedding) gradients, densified before the allreduce
    emb = tf.keras.layers.Embedding(n + 1, 2)
    emb.build((None,))
    before = emb.embeddings.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(emb(tf.constant([r])))
    grads = tape.gradient(loss, emb.trainable_variables)
    hvd.DistributedOptimizer(tf.keras.optimizers.SGD(1.0), sparse_as_dense=True).apply_gradients(
        zip(grads, emb.trainable_variables, strict=True)
    )
    want = np.zeros((n + 1, 2))
    want[:n] = 1.0 / n  # each rank looked up its own row
    c.close(
        "optimizer",
        "DistributedOptimizer(sparse_as_dense=True) embedding",
        before - emb.embeddings.numpy(),
        want,
    )

    batch, steps = 4, 4
    data = _fit_data(n, steps, batch)
    for passes, average in ((1, False), (2, False), (2, True)):
        tf.keras.utils.set_random_seed(14)
        lin = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        w0, b0 = (v.numpy() for v in lin.trainable_variables)
        opt = hvd_k.DistributedOptimizer(
            tf.keras.optimizers.SGD(0.05),
            backward_passes_per_step=passes,
            average_aggregated_gradients=average,
        )
        lin.compile(optimizer=opt, loss="mse")
        lin.fit(*data[r], batch_size=batch, epochs=1, shuffle=False, verbose=0)
        want_w, want_b = _linear_sgd(w0, b0, data, 0.05, batch, passes, average)
        got = np.concatenate([v.numpy().ravel() for v in lin.trainable_variables])
        c.close(
            "optimizer",
            f"model.fit backward_passes_per_step={passes} average={average}",
            got,
            np.concatenate([want_w.ravel(), want_b.ravel()]),
            atol=1e-5,
        )

    # hvd.load_model: the saved optimizer comes back wrapped, with its state
    folder = hvd.broadcast_object(tempfile.mkdtemp() if r == 0 else None, root_rank=0)
    path = os.path.join(folder, "model.keras")
    if r == 0:
        lin.save(path)
    hvd.barrier()
    loaded = hvd_k.load_model(path)
    hvd.barrier()
    if r == 0:
        os.unlink(path)
        os.rmdir(folder)
    same = all(
        np.array_equal(a, b) for a, b in zip(loaded.get_weights(), lin.get_weights(), strict=True)
    )
    c.true(
        "optimizer",
        "load_model restores weights, wrapped optimizer, its state",
        same
        and hasattr(loaded.optimizer, "_allreduce_grads")
        and int(loaded.optimizer.iterations) == int(lin.optimizer.iterations),
        f"weights equal={same} optimizer={type(loaded.optimizer).__module__}."
        f"{type(loaded.optimizer).__name__} iterations={int(loaded.optimizer.iterations)}",
    )


def check_keras_callbacks(hvd: Any, tf: Any, c: Checks) -> None:
    """Broadcast of initial state, metric averaging, learning-rate warm-up and schedule."""
    import horovod.tensorflow.keras as hvd_k

    n, r = c.size, c.rank
    batch, steps = 4, 3
    x, y = _fit_data(n, steps, batch)[r]

    tf.keras.utils.set_random_seed(100 + r)  # different initial weights on every rank
    model = tf.keras.Sequential(
        [tf.keras.Input((4,)), tf.keras.layers.Dense(2), tf.keras.layers.Dense(1)]
    )
    root_weights = hvd.broadcast_object([w for w in model.get_weights()], root_rank=0)
    model.compile(optimizer=hvd_k.DistributedOptimizer(tf.keras.optimizers.SGD(0.0)), loss="mse")

    class Record(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.logs: list[dict[str, float]] = []

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.logs.append({k: float(v) for k, v in (logs or {}).items()})

    before, after = Record(), Record()
    model.fit(
        x,
        y,
        batch_size=batch,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[
            hvd_k.callbacks.BroadcastGlobalVariablesCallback(0),
            before,
            hvd_k.callbacks.MetricAverageCallback(),
            after,
        ],
    )
    got = np.concatenate([w.ravel() for w in model.get_weights()])
    c.close(
        "keras_callbacks",
        "BroadcastGlobalVariablesCallback(0) (lr=0)",
        got,
        np.concatenate([w.ravel() for w in root_weights]),
    )
    local_losses = hvd.allgather_object(before.logs[0]["loss"])
    c.close(
        "keras_callbacks",
        "MetricAverageCallback loss",
        after.logs[0]["loss"],
        np.mean(local_losses),
    )

    class LearningRates(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.rates: list[float] = []

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.rates.append(float(np.asarray(self.model.optimizer.learning_rate)))

    base, epochs, warmup = 0.1 * n, 3, 2
    for kind in ("warmup", "schedule"):
        lin = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        lin.compile(
            optimizer=hvd_k.DistributedOptimizer(tf.keras.optimizers.SGD(base, momentum=0.9)),
            loss="mse",
        )
        rates = LearningRates()
        if kind == "warmup":
            cb = hvd_k.callbacks.LearningRateWarmupCallback(
                initial_lr=base, warmup_epochs=warmup, steps_per_epoch=steps
            )
            # Goyal et al. (arXiv:1706.02677): from base/size up to base over the warm-up epochs
            want = [
                base / n * ((e + (b + 1) / steps) * (n - 1) / warmup + 1) if e < warmup else base
                for e in range(epochs)
                for b in range(steps)
            ]
        else:
            cb = hvd_k.callbacks.LearningRateScheduleCallback(
                initial_lr=base, multiplier=0.5, start_epoch=1
            )
            want = [
                base * 0.5 ** (e - 1) if e >= 1 else base
                for e in range(epochs)
                for _ in range(steps)
            ]
        lin.fit(
            x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0, callbacks=[cb, rates]
        )
        c.close(
            "keras_callbacks",
            f"LearningRate{kind.title()}Callback lr per batch",
            rates.rates,
            want,
            atol=1e-6,
        )


def check_sync_batch_norm(hvd: Any, tf: Any, c: Checks) -> None:
    """SyncBatchNormalization: batch statistics and gradients are those of the global batch."""
    n, r = c.size, c.rank
    parts = [rank_data(i, (4 + i, 3), seed=60) for i in range(n)]  # unequal local batches
    whole = np.concatenate(parts)
    mean, var = whole.mean(0), whole.var(0)
    layer = hvd.SyncBatchNormalization(momentum=0.5, epsilon=1e-3)
    weights = [rank_data(i, (4 + i, 3), seed=61) for i in range(n)]
    x = tf.constant(parts[r])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, training=True)
        loss = tf.reduce_sum(out * weights[r])
    grad = tape.gradient(loss, x)
    c.close(
        "sync_batch_norm",
        "output = global-batch normalised",
        out.numpy(),
        (parts[r] - mean) / np.sqrt(var + 1e-3),
        atol=1e-4,
    )
    c.close("sync_batch_norm", "moving_mean", layer.moving_mean.numpy(), 0.5 * mean, atol=1e-5)
    c.close(
        "sync_batch_norm",
        "moving_variance",
        layer.moving_variance.numpy(),
        0.5 + 0.5 * var,
        atol=1e-4,
    )
    # Reference gradient: ordinary batch norm over the whole global batch, in one process.
    ref_bn = tf.keras.layers.BatchNormalization(momentum=0.5, epsilon=1e-3)
    xs = tf.constant(whole)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        loss = tf.reduce_sum(ref_bn(xs, training=True) * np.concatenate(weights))
    offset = sum(len(p) for p in parts[:r])
    want = tape.gradient(loss, xs).numpy()[offset : offset + len(parts[r])]
    c.close(
        "sync_batch_norm", "input gradient = global batch norm's", grad.numpy(), want, atol=1e-4
    )
    c.close(
        "sync_batch_norm",
        "inference uses moving statistics",
        layer(x, training=False).numpy(),
        (parts[r] - 0.5 * mean) / np.sqrt(0.5 + 0.5 * var + 1e-3),
        atol=1e-4,
    )


def check_process_sets(hvd: Any, tf: Any, c: Checks, first: Any) -> None:
    """Collectives restricted to a process set: rank 0 alone (given to init), the others
    (added after init)."""
    n, r = c.size, c.rank
    rest_ranks = list(range(1, n))
    c.true(
        "process_sets",
        "static set included()/ranks",
        first.included() == (r == 0) and first.ranks == [0],
        f"included={first.included()} ranks={first.ranks}",
    )
    rest = hvd.add_process_set(rest_ranks)
    mine, members = (first, [0]) if r == 0 else (rest, rest_ranks)
    got = hvd.allreduce(tf.constant([float(r + 1)]), op=hvd.Sum, process_set=mine)
    c.close("process_sets", "allreduce within my set", got.numpy(), [sum(i + 1 for i in members)])
    got = hvd.allgather(tf.constant([float(r)]), process_set=mine)
    c.close("process_sets", "allgather within my set", got.numpy(), [float(i) for i in members])
    got = hvd.broadcast(tf.constant([float(r)]), root_rank=members[-1], process_set=mine)
    c.close("process_sets", "broadcast within my set", got.numpy(), [float(members[-1])])
    c.true(
        "process_sets",
        "set size()/rank()",
        mine.size() == len(members) and mine.rank() == members.index(r),
        f"size={mine.size()} rank={mine.rank()}",
    )
    c.true(
        "process_sets", "remove_process_set", hvd.remove_process_set(rest), "dynamic set removed"
    )


def check_elastic(hvd: Any, tf: Any, c: Checks) -> None:
    """Elastic state objects: commit/restore roll back, sync copies rank 0's state."""
    n, r = c.size, c.rank
    tf.keras.utils.set_random_seed(200 + r)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    opt = tf.keras.optimizers.SGD(0.1, momentum=0.9)
    model.compile(optimizer=opt, loss="mse")
    model.fit(*_fit_data(n, 1, 4)[r], verbose=0)  # creates the optimizer's slots
    state = hvd.elastic.TensorFlowKerasState(model, opt, epoch=r, batch=10 + r)
    state.sync()
    root = hvd.broadcast_object([w for w in model.get_weights()], root_rank=0)
    weights = np.concatenate([w.ravel() for w in model.get_weights()])
    c.close(
        "elastic",
        "TensorFlowKerasState.sync model = rank 0's",
        weights,
        np.concatenate([w.ravel() for w in root]),
    )
    c.true(
        "elastic",
        "TensorFlowKerasState.sync attributes",
        (state.epoch, state.batch) == (0, 10),
        f"epoch={state.epoch} batch={state.batch}",
    )
    state.epoch = 3
    state.commit()
    committed = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1.0 for w in committed])
    state.epoch = 4
    state.restore()
    got = np.concatenate([w.ravel() for w in model.get_weights()])
    c.close(
        "elastic",
        "TensorFlowKerasState.restore model",
        got,
        np.concatenate([w.ravel() for w in committed]),
    )
    c.true(
        "elastic",
        "TensorFlowKerasState.restore attributes",
        state.epoch == 3,
        f"epoch={state.epoch}",
    )

    var = tf.Variable(rank_data(r, (3,), seed=70))
    tstate = hvd.elastic.TensorFlowState([var], step=r)
    tstate.sync()
    c.close("elastic", "TensorFlowState.sync", var.numpy(), rank_data(0, (3,), seed=70))
    tstate.commit()
    var.assign_add(tf.ones(3))
    tstate.restore()
    c.close("elastic", "TensorFlowState.restore", var.numpy(), rank_data(0, (3,), seed=70))

    @hvd.elastic.run
    def train(state: Any) -> int:
        state.step += 1
        state.commit()
        return state.step

    c.true(
        "elastic",
        "elastic.run (sync, then the function)",
        train(
            hvd.elastic.ObjectState(
                bcast_object=hvd.broadcast_object, get_rank=hvd.rank, step=10 * r
            )
        )
        == 1,
        "rank 0's step + 1",
    )
    import horovod.tensorflow.keras as hvd_k

    model.compile(optimizer=hvd_k.DistributedOptimizer(tf.keras.optimizers.SGD(0.1)), loss="mse")
    kstate = hvd_k.elastic.KerasState(model, batch=0, epoch=0)
    callbacks = [
        hvd_k.elastic.CommitStateCallback(kstate),
        hvd_k.elastic.UpdateBatchStateCallback(kstate),
        hvd_k.elastic.UpdateEpochStateCallback(kstate),
    ]
    model.fit(*_fit_data(n, 4, 2)[r], batch_size=2, epochs=2, callbacks=callbacks, verbose=0)
    c.true(
        "elastic",
        "KerasState + Commit/UpdateBatch/UpdateEpoch callbacks",
        (kstate.epoch, kstate.batch) == (2, 0),
        f"epoch={kstate.epoch} batch={kstate.batch}",
    )


def timeline_events(path: str) -> list[dict[str, Any]]:
    """The events of a Horovod timeline (a Chrome trace: a JSON list, maybe left unclosed)."""
    with open(path) as trace:
        text = trace.read().strip().rstrip(",")
    return json.loads(text if text.endswith("]") else text + "]")


def timeline_shows_allreduce(events: list[dict[str, Any]], tensor: str) -> bool:
    """The tensor has a timeline row (process `tensor`) with an ALLREDUCE activity on it."""
    pids = {
        e["pid"]
        for e in events
        if e.get("ph") == "M" and tensor in str(e.get("args", {}).get("name", ""))
    }
    return any(e.get("name") == "ALLREDUCE" and e.get("pid") in pids for e in events)


def check_timeline(hvd: Any, tf: Any, c: Checks) -> None:
    """start_timeline/stop_timeline: rank 0 writes a Chrome trace with the op's activities."""
    path = os.path.join(tempfile.gettempdir(), f"hvd-api-timeline-{os.getpid()}.json")
    path = hvd.broadcast_object(path, root_rank=0)
    hvd.start_timeline(path, mark_cycles=True)
    hvd.allreduce(tf.constant([1.0]), op=hvd.Sum)
    hvd.stop_timeline()
    if c.rank == 0:
        events = timeline_events(path)
        os.unlink(path)
        c.true(
            "timeline",
            "timeline has the allreduce",
            timeline_shows_allreduce(events, "HorovodAllreduce"),
            f"{len(events)} events",
        )
    else:
        c.true("timeline", "timeline started and stopped", True, "rank 0 writes the file")


def check_unsupported(hvd: Any, tf: Any, c: Checks) -> None:
    """APIs Horovod 0.28.1 cannot offer with Keras 3: they must say so."""
    c.unsupported(
        "unsupported",
        "DistributedOptimizer(op=Adasum) with Keras",
        lambda: hvd.DistributedOptimizer(tf.keras.optimizers.SGD(0.1), op=hvd.Adasum),
        "Adasum is not supported yet with Keras",
        errors=(ValueError,),
    )


def run(c_factory: Callable[[int, int], Checks], only: set[str]) -> tuple[Checks, str]:
    """Initialise Horovod (with a static process set), run every family, shut down."""
    os.environ.setdefault("HOROVOD_DYNAMIC_PROCESS_SETS", "1")  # add_process_set after init
    os.environ.setdefault("HOROVOD_TIMELINE", "DYNAMIC")  # start_timeline() needs it at init
    import horovod.tensorflow as hvd
    import tensorflow as tf

    first = hvd.ProcessSet([0])
    hvd.init(process_sets=[first])
    c = c_factory(hvd.rank(), hvd.size())
    families: list[tuple[str, Callable[..., None]]] = [
        ("collectives", check_collectives),
        ("grouped", check_grouped),
        ("allgather", check_allgather),
        ("broadcast", check_broadcast),
        ("alltoall", check_alltoall),
        ("reducescatter", check_reducescatter),
        ("objects", check_objects),
        ("join", check_join),
        ("barrier", check_barrier),
        ("tape", check_tape),
        ("partial_tape", check_partial_tape),
        ("optimizer", check_optimizer),
        ("keras_callbacks", check_keras_callbacks),
        ("sync_batch_norm", check_sync_batch_norm),
        ("elastic", check_elastic),
        ("timeline", check_timeline),
        ("unsupported", check_unsupported),
        ("process_sets", lambda hvd, tf, c: check_process_sets(hvd, tf, c, first)),
    ]
    for name, check in families:
        if only and name not in only:
            continue
        with c.family(name):
            check(hvd, tf, c)
    controller = "mpi" if hvd.mpi_enabled() else "gloo" if hvd.gloo_enabled() else "unknown"
    hvd.shutdown()
    return c, controller
