"""How many gradient all-reduces a DDP GAN step makes (in-process, 1-rank gloo group)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import pytest

torch = pytest.importorskip("torch")
dist = torch.distributed

from validation.config import SMALL  # noqa: E402
from validation.torch_dist import TorchSync  # noqa: E402
from validation.train_torch import GANWorkload  # noqa: E402

pytestmark = pytest.mark.training


@pytest.fixture
def ddp_sync() -> Iterator[TorchSync]:
    """A TorchSync in DDP mode over a real (1-rank) gloo process group."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        sync = TorchSync("none")
        sync.mode = "ddp"  # what a multi-rank run picks; DDP runs its reducer at any size
        yield sync
    finally:
        dist.destroy_process_group()


def count_allreduces(gan: GANWorkload) -> Counter[str]:
    """Count each model's gradient all-reduces through a DDP comm hook."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    calls: Counter[str] = Counter()
    for name, model in (("disc", gan.disc), ("gen", gan.gen)):
        # (no annotations: DDP checks that `bucket` is unannotated or a GradBucket)
        def hook(state, bucket, name=name):  # type: ignore[no-untyped-def]
            calls[name] += 1
            return allreduce_hook(None, bucket)

        model.register_comm_hook(None, hook)
    return calls


def gan_steps(gan: GANWorkload, steps: int) -> None:
    real = torch.randn(4, 1, 32, 32)
    for _ in range(steps):
        gan.train_step(real, None)


def test_ddp_gan_step_all_reduces_each_model_once(ddp_sync: TorchSync) -> None:
    gan = GANWorkload(SMALL["gan"], ddp_sync, 1e-3)  # type: ignore[arg-type]
    assert isinstance(gan.disc, torch.nn.parallel.DistributedDataParallel)
    calls = count_allreduces(gan)
    gan_steps(gan, 3)
    # Each small model fits one DDP bucket: one all-reduce per model per step.
    assert calls == {"disc": 3, "gen": 3}
    for model in (gan.disc, gan.gen):
        assert not model.will_sync_module_buffers()  # no buffer broadcast at each forward


def test_without_no_sync_the_discriminator_is_all_reduced_twice(
    ddp_sync: TorchSync, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ddp_sync, "local_backward", lambda model: contextlib.nullcontext())
    gan = GANWorkload(SMALL["gan"], ddp_sync, 1e-3)  # type: ignore[arg-type]
    calls = count_allreduces(gan)
    gan_steps(gan, 3)
    assert calls == {"disc": 6, "gen": 3}
