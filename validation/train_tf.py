"""Training loops for the three workloads in TensorFlow/Keras (one rank, or Horovod ranks)."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from typing import Any

import numpy as np

from validation.config import ClimateConfig, CosmoFlowConfig, GANConfig, lr_factor
from validation.data.sources import load_arrays
from validation.launch_env import (
    idle_comm_wanted,
    idle_priority_threads,
    rank_info,
    threads_per_rank,
)
from validation.metrics import (
    background_baseline_iou,
    class_iou,
    confusion_matrix,
    constant_baseline_mae,
    histogram_chi2,
    mean_absolute_error,
    mean_iou,
    spectrum_chi2,
    throughput,
)
from validation.progress import Progress
from validation.results import save_params, write_rank_result
from validation.spec import VAL_OFFSET, RunSpec, effective_config, epoch_order, indices_digest
from validation.spec import shard_indices as shard_of

# torch.optim.Adam's default (Keras' is 1e-7), so both frameworks run the same CosmoFlow recipe.
TORCH_ADAM_EPSILON = 1e-8


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1).copy()


def broadcast_from_rank0(hvd_tf: Any, variables: list[Any]) -> None:
    """Copy rank 0's values into every rank's variables, eagerly, one by one.

    hvd.broadcast_variables assigns inside a tf.function, which Keras 3 variables
    (not tf.Variable) do not support."""
    import tensorflow as tf

    for i, var in enumerate(variables):
        var.assign(hvd_tf.broadcast(tf.convert_to_tensor(var), root_rank=0, name=f"init.{i}"))


def _backing(variables: list[Any]) -> list[Any]:
    """The tf.Variables behind Keras 3 variables (Horovod's tape needs tf.Variable.ref)."""
    return [getattr(v, "value", v) for v in variables]


class KerasWorkload:
    """CosmoFlow or climate: a compiled Keras model trained with train_on_batch."""

    def __init__(self, config: CosmoFlowConfig | ClimateConfig, lr: float, hvd: Any) -> None:
        from tensorflow import keras

        self.config = config
        if isinstance(config, CosmoFlowConfig):
            from validation.models.tf_cosmoflow import build_cosmoflow

            self.model = build_cosmoflow(config)
            opt: Any = (
                keras.optimizers.Adam(lr, epsilon=TORCH_ADAM_EPSILON)
                if config.optimizer == "adam"
                else keras.optimizers.SGD(lr, momentum=config.momentum)
            )
            loss: Any = "mse"
        else:
            from validation.models.tf_deeplab import build_deeplab

            self.model = build_deeplab(config)
            opt = keras.optimizers.Adam(lr)
            loss = self._weighted_ce(config.class_weights)
        if hvd is not None:
            opt = hvd.keras.DistributedOptimizer(opt)
            broadcast_from_rank0(hvd.tf, self.model.variables)
        self.model.compile(optimizer=opt, loss=loss)

    @staticmethod
    def _weighted_ce(weights: tuple[float, ...]) -> Any:
        import tensorflow as tf

        w = tf.constant(weights, dtype=tf.float32)

        def loss(y_true: Any, logits: Any) -> Any:
            labels = tf.cast(tf.reshape(y_true, tf.shape(logits)[:-1]), tf.int32)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            pw = tf.gather(w, labels)
            return tf.reduce_sum(ce * pw) / tf.reduce_sum(pw)  # same as torch's weighted mean

        return loss

    def set_lr(self, lr: float) -> None:
        """Train the next steps at `lr` (the config's schedule)."""
        self.model.optimizer.learning_rate = lr

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        out = self.model.train_on_batch(x, y)
        return {"loss": float(out[0] if isinstance(out, list | tuple) else out)}

    def evaluate(self, x: np.ndarray, y: np.ndarray, _ref: Any) -> dict[str, Any]:
        pred = self.model.predict(x, batch_size=16, verbose=0)
        if isinstance(self.config, CosmoFlowConfig):
            return {
                "val_mae": mean_absolute_error(pred, y),
                "baseline_mae": constant_baseline_mae(y),
            }
        conf = confusion_matrix(pred.argmax(axis=-1), y, self.config.n_classes)
        return {
            "val_miou": mean_iou(conf),
            "baseline_miou": background_baseline_iou(y, self.config.n_classes),
            "val_iou_per_class": [None if np.isnan(v) else float(v) for v in class_iou(conf)],
        }

    def weights(self) -> list[np.ndarray]:
        return [w.numpy() for w in self.model.trainable_weights]


class KerasGAN:
    """DCGAN trained with GradientTape (Horovod: DistributedGradientTape)."""

    def __init__(self, config: GANConfig, lr: float, hvd: Any) -> None:
        import tensorflow as tf
        from tensorflow import keras

        from validation.models.tf_dcgan import build_discriminator, build_generator

        self.tf, self.config, self.hvd = tf, config, hvd
        self.gen, self.disc = build_generator(config), build_discriminator(config)
        self.opt_g = keras.optimizers.Adam(lr, beta_1=config.beta1)
        self.opt_d = keras.optimizers.Adam(lr, beta_1=config.beta1)
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        if hvd is not None:
            broadcast_from_rank0(hvd.tf, self.gen.variables + self.disc.variables)
        self.untrained: dict[str, float] = {}
        self._step = tf.function(self._train_step)

    def _tape(self, tape: Any) -> Any:
        return self.hvd.tf.DistributedGradientTape(tape) if self.hvd is not None else tape

    def _train_step(self, real: Any) -> tuple[Any, Any]:
        tf = self.tf
        b = tf.shape(real)[0]
        z = tf.random.normal((b, self.config.latent_dim))
        flip = self.config.label_flip
        with tf.GradientTape() as tape:
            fake = self.gen(z, training=True)
            ones = tf.where(tf.random.uniform((b, 1)) < flip, 0.0, 1.0)
            zeros = tf.where(tf.random.uniform((b, 1)) < flip, 1.0, 0.0)
            d_loss = self.bce(ones, self.disc(real, training=True)) + self.bce(
                zeros, self.disc(tf.stop_gradient(fake), training=True)
            )
        grads = self._tape(tape).gradient(d_loss, _backing(self.disc.trainable_variables))
        self.opt_d.apply_gradients(zip(grads, self.disc.trainable_variables, strict=True))
        with tf.GradientTape() as tape:
            fake = self.gen(z, training=True)
            g_loss = self.bce(tf.ones((b, 1)), self.disc(fake, training=True))
        grads = self._tape(tape).gradient(g_loss, _backing(self.gen.trainable_variables))
        self.opt_g.apply_gradients(zip(grads, self.gen.trainable_variables, strict=True))
        return d_loss, g_loss

    def train_step(self, x: np.ndarray, _y: Any) -> dict[str, float]:
        d_loss, g_loss = self._step(self.tf.constant(x))
        return {"loss": float(d_loss), "g_loss": float(g_loss)}

    def summary(self, real: np.ndarray) -> dict[str, float]:
        z = self.tf.random.stateless_normal((len(real), self.config.latent_dim), seed=(9, 9))
        fake = self.gen(z, training=True).numpy()
        return {
            "hist_chi2": histogram_chi2(fake, real),
            "spectrum_chi2": spectrum_chi2(np.moveaxis(fake, -1, 1), np.moveaxis(real, -1, 1)),
        }

    def evaluate(self, x: np.ndarray, _y: Any, ref: np.ndarray | None) -> dict[str, Any]:
        out: dict[str, Any] = self.summary(x)
        out.update({f"untrained_{k}": v for k, v in self.untrained.items()})
        if ref is not None:
            out["real_hist_chi2"] = histogram_chi2(ref, x)
            out["real_spectrum_chi2"] = spectrum_chi2(
                np.moveaxis(ref, -1, 1), np.moveaxis(x, -1, 1)
            )
        return out

    def weights(self) -> list[np.ndarray]:
        return [w.numpy() for w in self.gen.trainable_weights + self.disc.trainable_weights]


def train(spec: RunSpec) -> dict[str, Any]:
    """Run one TensorFlow training job on this rank and write its result file."""
    started = time.time()
    info = rank_info()
    threads = spec.threads or threads_per_rank(info.local_world_size)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    hvd: Any = None
    rank, world, sync = 0, 1, "none"
    demoted: list[str] = []
    if spec.sync == "horovod":
        from types import SimpleNamespace

        import horovod.tensorflow as hvd_tf
        import horovod.tensorflow.keras as hvd_keras

        gpu = bool(tf.config.list_physical_devices("GPU"))
        with idle_priority_threads(idle_comm_wanted(spec.comm_priority, threads, gpu)) as demoted:
            hvd_tf.init()
        # horovod.tensorflow: broadcast, DistributedGradientTape; .keras: DistributedOptimizer
        hvd = SimpleNamespace(tf=hvd_tf, keras=hvd_keras)
        rank, world, sync = hvd_tf.rank(), hvd_tf.size(), "horovod"
    elif info.world_size > 1:
        raise ValueError("TensorFlow multi-rank runs need Horovod: pass --sync horovod")
    config = effective_config(spec, world)
    local_batch = config.global_batch // world
    progress = Progress(f"{spec.suite}/tensorflow {rank}/{world}", enabled=rank == 0)
    progress.say(
        f"{spec.size} config, sync={sync}, {threads} threads/rank, "
        f"global batch {config.global_batch}, fault={spec.fault}"
    )
    shard = shard_of(config.train_samples, rank, world, spec.fault)
    x, y = load_arrays(config, spec.seed, shard, "train", spec.data_dir)
    x = _channels_last(x)
    if spec.fault == "shuffled-targets" and y is not None:
        y = y[np.random.default_rng([spec.seed, rank, 13]).permutation(len(y))]
    tf.keras.utils.set_random_seed(spec.seed + rank)
    lr = 0.0 if spec.fault == "frozen" else config.lr
    workload: Any = (
        KerasGAN(config, lr, hvd)
        if isinstance(config, GANConfig)
        else KerasWorkload(config, lr, hvd)
    )
    val_x = val_y = ref_x = None
    if rank == 0:
        idx = VAL_OFFSET + np.arange(config.val_samples)
        val_x, val_y = load_arrays(config, spec.seed, idx, "val", spec.data_dir)
        val_x = _channels_last(val_x)
        if isinstance(config, GANConfig):
            ref_x = _channels_last(
                load_arrays(config, spec.seed, idx + VAL_OFFSET, "ref", spec.data_dir)[0]
            )
            workload.untrained = workload.summary(val_x)

    steps_per_epoch = len(shard) // local_batch
    epochs = config.epochs if spec.steps is None else -(-spec.steps // steps_per_epoch)
    total = steps_per_epoch * epochs if spec.steps is None else spec.steps
    warmup = steps_per_epoch if epochs > 1 else min(2, total - 1)
    # The schedule spans the configured epochs; runs cut to --steps keep the base rate.
    scheduled = isinstance(config, CosmoFlowConfig) and spec.steps is None
    history: dict[str, list[float]] = {}
    epoch_loss: list[float] = []
    positions = np.arange(len(shard))
    step_seconds: list[float] = []
    step = 0
    for epoch in range(epochs):
        order = epoch_order(positions, spec.seed, epoch, rank, spec.shuffle)
        losses = []
        for s in range(steps_per_epoch):
            if step >= total:
                break
            pick = order[s * local_batch : (s + 1) * local_batch]
            if scheduled:
                workload.set_lr(lr * lr_factor(config, step, steps_per_epoch))
            t0 = time.perf_counter()
            values = workload.train_step(x[pick], y[pick] if y is not None else None)
            if spec.fault == "straggler" and rank > 0:
                time.sleep(max(0.05, 2 * (time.perf_counter() - t0)))
            dt = time.perf_counter() - t0
            step += 1
            if step > warmup:
                step_seconds.append(dt)
            for k, v in values.items():
                history.setdefault(k, []).append(v)
            losses.append(values["loss"])
            progress.step(epoch, epochs, step, total, values["loss"])
        epoch_loss.append(float(np.mean(losses)) if losses else float("nan"))

    metrics: dict[str, Any] = {}
    if rank == 0 and val_x is not None:
        metrics = workload.evaluate(val_x, val_y, ref_x)
        progress.say(
            "validation "
            + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        )
    params = np.concatenate([w.reshape(-1).astype(np.float32) for w in workload.weights()])
    if spec.save_params:
        save_params(spec.out_dir, spec.tag, rank, params)
    result = {
        "suite": spec.suite,
        "framework": "tensorflow",
        "size": spec.size,
        "tag": spec.tag,
        "rank": rank,
        "world_size": world,
        "sync": sync,
        "fault": spec.fault,
        "seed": spec.seed,
        "threads": threads,
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "comm_threads_idle": demoted,
        "local_batch": local_batch,
        "global_batch": config.global_batch,
        "weak_scaling": spec.weak_scaling,
        "steps": step,
        "epochs": epochs,
        "step_loss": history,
        "epoch_loss": epoch_loss,
        **throughput(local_batch, step_seconds),
        "timed_steps": len(step_seconds),
        "metrics": metrics,
        "param_digest": hashlib.sha256(params.tobytes()).hexdigest(),
        "param_count": int(params.size),
        "shard": {
            "n": len(shard),
            "digest": indices_digest(shard),
            "indices": shard.tolist() if len(shard) <= 100_000 else None,
        },
        "versions": {"tensorflow": tf.__version__, "numpy": np.__version__},
        "host": socket.gethostname(),
        "wall_s": time.time() - started,
    }
    write_rank_result(spec.out_dir, spec.tag, rank, result)
    return result
