"""The three workloads' TensorFlow/Keras steps and the engine that runs them in `train_loop`
(one rank, or Horovod ranks)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from validation.config import ClimateConfig, CosmoFlowConfig, GANConfig, WorkloadConfig
from validation.device import choose_device, gpu_target
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
)
from validation.spec import RunSpec
from validation.train_loop import EpochCallback, run_training

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

    def learning_rate(self) -> float:
        """The rate the optimizer holds now."""
        return float(np.asarray(self.model.optimizer.learning_rate))

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

    def placement(self) -> str:
        """The device TensorFlow holds the first weights on."""
        return str(_backing(self.model.trainable_variables)[0].device)


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

    def learning_rate(self) -> float:
        """The rate the discriminator's optimizer holds now (G's is the same)."""
        return float(np.asarray(self.opt_d.learning_rate))

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

    def placement(self) -> str:
        """The device TensorFlow holds the generator's first weights on."""
        return str(_backing(self.gen.trainable_variables)[0].device)


class KerasEngine:
    """TensorFlow on one rank (alone, or a Horovod rank), on its GPU or the CPU.

    TensorFlow places every op on the first visible GPU by itself; each rank is shown only
    its own (one GPU per local rank), and none where it trains on the CPU."""

    framework = "tensorflow"

    def __init__(self, spec: RunSpec) -> None:
        info = rank_info()
        self.threads = spec.threads or threads_per_rank(info.local_world_size)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self.tf = tf
        tf.config.threading.set_intra_op_parallelism_threads(self.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        gpus = tf.config.list_physical_devices("GPU")
        self.device = choose_device(spec.device, gpu_target(), len(gpus), info.local_rank)
        self.device_name = "CPU"
        if self.device.is_cuda:
            gpu = gpus[self.device.index or 0]
            tf.config.set_visible_devices([gpu], "GPU")
            # Grow the rank's memory as needed rather than take the whole GPU up front.
            tf.config.experimental.set_memory_growth(gpu, True)
            details = tf.config.experimental.get_device_details(gpu)
            self.device_name = str(details.get("device_name", gpu.name))
        elif gpus:
            tf.config.set_visible_devices([], "GPU")
        self.hvd: Any = None
        self.rank, self.world, self.sync = 0, 1, "none"
        self.comm_threads_idle: list[str] = []
        self.comm_backend = "none"
        if spec.sync == "horovod":
            from types import SimpleNamespace

            import horovod.tensorflow as hvd_tf
            import horovod.tensorflow.keras as hvd_keras

            idle = idle_comm_wanted(spec.comm_priority, self.threads, self.device.is_cuda)
            with idle_priority_threads(idle) as self.comm_threads_idle:
                hvd_tf.init()
            # horovod.tensorflow: broadcast, DistributedGradientTape; .keras: DistributedOptimizer
            self.hvd = SimpleNamespace(tf=hvd_tf, keras=hvd_keras)
            self.rank, self.world, self.sync = hvd_tf.rank(), hvd_tf.size(), "horovod"
            controller = "mpi" if hvd_tf.mpi_enabled() else "gloo"
            nccl = self.device.is_cuda and hvd_tf.nccl_built()
            self.comm_backend = f"horovod-nccl+{controller}" if nccl else f"horovod-{controller}"
        elif info.world_size > 1:
            raise ValueError("TensorFlow multi-rank runs need Horovod: pass --sync horovod")

    def layout(self, x: np.ndarray) -> np.ndarray:
        return _channels_last(x)

    def seed_init(self, seed: int) -> None:
        self.tf.keras.utils.set_random_seed(seed)

    def seed_steps(self, seed: int) -> None:
        # Keras draws its step noise from the stream seeded before the build: the seed
        # studies (benchmarks/results/validation_seeds*.json) measured it that way.
        return None

    def build(self, config: WorkloadConfig, lr: float) -> Any:
        if isinstance(config, GANConfig):
            return KerasGAN(config, lr, self.hvd)
        return KerasWorkload(config, lr, self.hvd)

    def batch(self, x: np.ndarray, y: np.ndarray | None) -> tuple[Any, Any]:
        return x, y  # train_on_batch and the GAN's tf.function copy them to the device

    def params(self, workload: Any) -> np.ndarray:
        return np.concatenate([w.reshape(-1).astype(np.float32) for w in workload.weights()])

    def placement(self, workload: Any) -> str:
        return str(workload.placement())

    def versions(self) -> dict[str, str]:
        return {"tensorflow": self.tf.__version__}

    def barrier(self) -> None:
        return None  # nothing is torn down after the result that a peer could still need

    def close(self) -> None:
        return None


def train(spec: RunSpec, on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    """Run one TensorFlow training job on this rank and write its result file; returns it.

    on_epoch: called after every epoch (`train_loop.run_steps`).
    """
    return run_training(spec, KerasEngine, on_epoch)
