"""Real training runs (small configs) and the fault-injected runs that make each check fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from validation.checks import (
    CosmoFlowMAECheck,
    GANChi2DropCheck,
    LossDecreasingCheck,
    LossFiniteCheck,
    OneVsManyCheck,
    ParamsIdenticalCheck,
    SegmentationIoUCheck,
    ShardsDisjointCheck,
    WeakScalingCheck,
)
from validation.results import load_params, load_run

pytest.importorskip("torch")
pytestmark = pytest.mark.training
ROOT = Path(__file__).resolve().parents[2]


def train(out: Path, tag: str, ranks: int, *args: str) -> list[dict[str, Any]]:
    """Run `python -m validation run` on `ranks` ranks (torchrun) and load what they wrote."""
    cmd = [
        sys.executable,
        "-m",
        "validation",
        "run",
        "--out",
        str(out),
        "--tag",
        tag,
        "--threads",
        "1",
        *args,
    ]
    if ranks > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={ranks}",
            "--no-python",
            *cmd,
        ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = load_run(out, tag)
    assert len(run) == ranks
    return run


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="module")
def cosmo_r1(out: Path) -> list[dict[str, Any]]:
    return train(out, "cosmo-r1", 1, "--suite", "cosmoflow")


def test_cosmoflow_learns_on_one_rank(cosmo_r1: list[dict[str, Any]]) -> None:
    for check in (LossFiniteCheck(), LossDecreasingCheck(), CosmoFlowMAECheck()):
        result = check.evaluate(cosmo_r1)
        assert result.verdict == "pass", result


def test_shuffled_targets_fail_the_mae_check(out: Path) -> None:
    run = train(
        out,
        "cosmo-shuffled",
        1,
        "--suite",
        "cosmoflow",
        "--fault",
        "shuffled-targets",
        "--epochs",
        "3",
    )
    assert CosmoFlowMAECheck().evaluate(run).verdict == "fail"


def test_frozen_weights_fail_the_loss_falling_check(out: Path) -> None:
    run = train(
        out, "cosmo-frozen", 1, "--suite", "cosmoflow", "--fault", "frozen", "--epochs", "2"
    )
    assert LossFiniteCheck().evaluate(run).verdict == "pass"
    assert LossDecreasingCheck().evaluate(run).verdict == "fail"


def test_two_ranks_ddp_pass_distributed_and_scaling_checks(
    out: Path, cosmo_r1: list[dict[str, Any]]
) -> None:
    run = train(out, "cosmo-r2", 2, "--suite", "cosmoflow", "--weak-scaling")
    for check in (ParamsIdenticalCheck(), ShardsDisjointCheck()):
        assert check.evaluate(run).verdict == "pass"
    assert CosmoFlowMAECheck().evaluate(run).verdict == "pass"
    scaling = WeakScalingCheck().evaluate(cosmo_r1, run)
    assert isinstance(scaling.measured, float) and scaling.measured > 0.3  # noisy shared CPU


def test_straggler_fails_weak_scaling(out: Path, cosmo_r1: list[dict[str, Any]]) -> None:
    run = train(
        out,
        "cosmo-straggler",
        2,
        "--suite",
        "cosmoflow",
        "--weak-scaling",
        "--fault",
        "straggler",
        "--epochs",
        "2",
    )
    assert WeakScalingCheck().evaluate(cosmo_r1, run).verdict == "fail"


@pytest.mark.parametrize("fault", ["no-broadcast", "no-allreduce"])
def test_missing_broadcast_or_allreduce_breaks_replica_equality(out: Path, fault: str) -> None:
    run = train(out, f"cosmo-{fault}", 2, "--suite", "cosmoflow", "--fault", fault, "--steps", "4")
    assert ParamsIdenticalCheck().evaluate(run).verdict == "fail"


def test_same_shard_fails_disjointness(out: Path) -> None:
    run = train(
        out, "cosmo-same-shard", 2, "--suite", "cosmoflow", "--fault", "same-shard", "--steps", "2"
    )
    assert ShardsDisjointCheck().evaluate(run).verdict == "fail"


CONSISTENCY = (
    "--suite",
    "cosmoflow",
    "--steps",
    "6",
    "--global-batch",
    "8",
    "--no-shuffle",
    "--save-params",
    "--dropout",
    "0",
    "--optimizer",
    "sgd",
    "--lr",
    "0.01",
)
# SGD on purpose: Adam is invariant to a constant gradient scale, so it would hide grad-sum.


def test_one_vs_two_ranks_agree_and_summed_gradients_do_not(out: Path) -> None:
    train(out, "cons-r1", 1, *CONSISTENCY)
    train(out, "cons-r2", 2, *CONSISTENCY)
    train(out, "cons-sum", 2, *CONSISTENCY, "--fault", "grad-sum")
    single = load_params(out, "cons-r1", 0)
    good = OneVsManyCheck().evaluate("c", single, load_params(out, "cons-r2", 0))
    assert good.verdict == "pass", good
    summed = load_run(out, "cons-sum")
    assert ParamsIdenticalCheck().evaluate(summed).verdict == "pass"  # only 1-vs-N can see it
    assert OneVsManyCheck().evaluate("c", single, load_params(out, "cons-sum", 0)).verdict == "fail"


def test_climate_segmentation_beats_background_and_shuffled_labels_do_not(out: Path) -> None:
    good = train(out, "climate", 1, "--suite", "climate")
    assert SegmentationIoUCheck().evaluate(good).verdict == "pass"
    bad = train(
        out,
        "climate-shuffled",
        1,
        "--suite",
        "climate",
        "--fault",
        "shuffled-targets",
        "--epochs",
        "2",
    )
    assert SegmentationIoUCheck().evaluate(bad).verdict == "fail"


def test_gan_chi2_falls_and_frozen_generator_does_not(out: Path) -> None:
    good = train(out, "gan", 1, "--suite", "gan")
    assert LossFiniteCheck().evaluate(good).verdict == "pass"
    assert GANChi2DropCheck().evaluate(good).verdict == "pass", GANChi2DropCheck().evaluate(good)
    frozen = train(out, "gan-frozen", 1, "--suite", "gan", "--fault", "frozen", "--epochs", "1")
    assert GANChi2DropCheck().evaluate(frozen).verdict == "fail"
