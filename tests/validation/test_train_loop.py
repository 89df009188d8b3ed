"""The one training loop: its learning-rate schedule, the device each rank trains on, and
both frameworks running it with the same rates and recording the device that ran."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from validation.config import lr_factor, workload_config
from validation.device import DeviceChoice, choose_device, gpu_target
from validation.results import load_run
from validation.spec import RunSpec, effective_config
from validation.train_loop import base_learning_rate, plan_schedule

ROOT = Path(__file__).resolve().parents[2]


def schedule_for(world: int, **spec_args: Any) -> Any:
    overrides = spec_args.pop("overrides", {})
    spec = RunSpec(suite="cosmoflow", framework="pytorch", overrides=overrides, **spec_args)
    config = effective_config(spec, world)
    return plan_schedule(spec, config, config.train_samples // world, world)


SGD = {"optimizer": "sgd", "lr": 0.01, "epochs": 3, "warmup_epochs": 1, "lr_decay": "cosine"}


def test_sgd_rate_scales_with_the_global_batch_under_weak_scaling() -> None:
    one = schedule_for(1, weak_scaling=True, overrides=SGD)
    four = schedule_for(4, weak_scaling=True, overrides=SGD)
    assert one.base_lr == 0.01 and four.base_lr == pytest.approx(0.04)
    # The same steps per rank, the same shape: only the peak grows.
    assert four.steps_per_epoch == one.steps_per_epoch
    for step in range(one.total):
        assert four.lr(step) == pytest.approx(4 * one.lr(step))


def test_adam_strong_scaling_and_frozen_keep_their_rates() -> None:
    adam = workload_config("cosmoflow", "small")  # Adam, warm-up, cosine
    spec = RunSpec(suite="cosmoflow", framework="pytorch", weak_scaling=True)
    assert base_learning_rate(spec, adam, 4) == adam.lr
    strong = RunSpec(suite="cosmoflow", framework="pytorch", overrides=SGD)
    assert base_learning_rate(strong, effective_config(strong, 4), 4) == 0.01
    frozen = RunSpec(suite="cosmoflow", framework="pytorch", fault="frozen")
    assert base_learning_rate(frozen, adam, 1) == 0.0


def test_schedule_warms_up_then_decays_and_cut_runs_keep_the_base_rate() -> None:
    full = schedule_for(2, weak_scaling=True, overrides=SGD)
    spe = full.steps_per_epoch
    config = effective_config(
        RunSpec(suite="cosmoflow", framework="pytorch", weak_scaling=True, overrides=SGD), 2
    )
    rates = [full.lr(s) for s in range(full.total)]
    assert rates[:spe] == pytest.approx([0.02 * (s + 1) / spe for s in range(spe)])
    assert rates == pytest.approx([0.02 * lr_factor(config, s, spe) for s in range(full.total)])
    assert rates[-1] < rates[spe]  # cosine decay after the warm-up
    assert full.untimed == spe  # the first epoch is not timed
    cut = schedule_for(2, weak_scaling=True, steps=5, overrides=SGD)
    assert not cut.scheduled and cut.total == 5
    assert [cut.lr(s) for s in range(5)] == [0.02] * 5
    assert cut.epochs == 1 and cut.untimed == 2  # within one epoch: the first 2 steps


def test_a_shard_smaller_than_one_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="no batch"):
        schedule_for(1, overrides={"train_samples": 4, "global_batch": 8})


def test_device_is_the_ranks_own_gpu_on_gpu_targets() -> None:
    assert choose_device("auto", True, 4, 2) == DeviceChoice(
        "cuda", 2, "GPU target, 4 GPU(s) visible"
    )
    assert choose_device("auto", True, 4, 2).name == "cuda:2"
    # srun --gpus-per-task: each task sees only its own GPU, whatever its local rank.
    assert choose_device("auto", True, 1, 3).name == "cuda:0"
    assert choose_device("cuda", False, 2, 1).name == "cuda:1"  # asked for explicitly
    assert choose_device("auto", None, 1, 0).is_cuda  # natively: the GPU if there is one


def test_device_falls_back_to_the_cpu_and_says_why() -> None:
    fallback = choose_device("auto", True, 0, 0)  # a GPU image on a machine without a GPU
    assert (fallback.name, fallback.reason) == ("cpu", "no GPU visible: CPU fallback")
    assert choose_device("auto", False, 8, 0).reason == "CPU target"
    assert choose_device("cpu", True, 8, 0) == DeviceChoice("cpu", None, "--device cpu")


def test_device_requests_that_cannot_be_met_are_errors() -> None:
    with pytest.raises(ValueError, match="no GPU is visible"):
        choose_device("cuda", True, 0, 0)
    with pytest.raises(ValueError, match="local rank 4 has no GPU of its own: 4 GPUs"):
        choose_device("auto", True, 4, 4)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        choose_device("tpu", None, 0, 0)


def test_gpu_target_comes_from_the_images_recipe_expectations(tmp_path: Path) -> None:
    info = tmp_path / "stackbuild-info.json"
    assert gpu_target(info) is None  # natively: no image, no target
    info.write_text(json.dumps({"expect": {"cuda": {"version": "13.0"}}}))
    assert gpu_target(info) is True
    info.write_text(json.dumps({"expect": {"cuda": None}}))
    assert gpu_target(info) is False
    info.write_text("{not json")
    assert gpu_target(info) is None


def test_torch_distributed_backend_follows_the_device() -> None:
    torch = pytest.importorskip("torch")
    from validation.torch_dist import backend_for

    assert backend_for(torch.device("cuda", 1)) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


def _validation(out: Path, tag: str, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "validation", "run", "--out", str(out), "--tag", tag,
        "--threads", "1", *args,
    ]  # fmt: skip


@pytest.mark.training
def test_a_cpu_run_records_the_cpu_fallback_and_cuda_without_a_gpu_is_refused(
    tmp_path: Path,
) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the fallback is tested where none is visible")
    proc = _run(_validation(tmp_path, "cpu", "--suite", "gan", "--steps", "3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = load_run(tmp_path, "cpu")
    assert result["device"] == "cpu" and result["placement"] == "cpu"
    assert result["device_reason"] == "no GPU visible: CPU fallback"
    assert result["comm_backend"] == "none"
    refused = _run(_validation(tmp_path, "cuda", "--suite", "gan", "--device", "cuda"))
    assert refused.returncode == 2
    assert "--device cuda: no GPU is visible" in refused.stderr
    assert "Traceback" not in refused.stderr


needs_horovod_tf = pytest.mark.skipif(
    importlib.util.find_spec("horovod") is None or importlib.util.find_spec("tensorflow") is None,
    reason="needs Horovod and TensorFlow in this Python",
)


@pytest.mark.training
@needs_horovod_tf
def test_both_frameworks_train_two_ranks_at_the_same_scaled_sgd_schedule(
    tmp_path: Path,
) -> None:
    # Weak scaling on 2 ranks with CosmoFlow's SGD: warm-up epoch, then cosine decay. Before
    # the loop was shared, Keras trained at the unscaled rate.
    args = (
        "--suite", "cosmoflow", "--weak-scaling", "--optimizer", "sgd", "--lr", "0.01",
        "--epochs", "2", "--train-samples", "32", "--sync", "horovod",
    )  # fmt: skip
    records = {}
    for framework in ("pytorch", "tensorflow"):
        cmd = ["horovodrun", "-np", "2", "-H", "localhost:2"]
        proc = _run(cmd + _validation(tmp_path, framework, *args, "--framework", framework))
        assert proc.returncode == 0, proc.stdout[-3000:]
        records[framework] = load_run(tmp_path, framework)
    config = workload_config("cosmoflow", "small", epochs=2)
    spe = 32 // (config.global_batch)  # 32 samples per rank, local batch 16: 2 steps
    expected_last = 0.02 * lr_factor(config, 2 * spe - 1, spe)
    for framework, run in records.items():
        for rank in run:
            assert rank["device"] == "cpu", framework
            # Where the framework itself says the weights are.
            assert rank["placement"] in ("cpu", "/job:localhost/replica:0/task:0/device:CPU:0")
            assert rank["comm_backend"].startswith("horovod-"), framework
            assert (rank["lr"], rank["steps"], rank["epochs"]) == (0.02, 4, 2), framework
            # Read back from the framework's own optimizer after the last step.
            assert math.isclose(rank["lr_final"], expected_last, rel_tol=1e-6), framework
            assert rank["timed_steps"] == 2, framework
