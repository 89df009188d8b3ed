"""Every check passes on good measurements and fails on its negative control."""

from __future__ import annotations

from typing import Any

import numpy as np

from validation.checks import (
    CosmoFlowMAECheck,
    CudaCheck,
    GANChi2DropCheck,
    GANRealGapCheck,
    HorovodCheck,
    LossDecreasingCheck,
    LossFiniteCheck,
    NcclCheck,
    OneDNNCheck,
    OneVsManyCheck,
    ParamsIdenticalCheck,
    ShardsDisjointCheck,
    WeakScalingCheck,
)


def rank(r: int = 0, world: int = 1, suite: str = "cosmoflow", **kw: Any) -> dict[str, Any]:
    base = {
        "suite": suite,
        "framework": "pytorch",
        "rank": r,
        "world_size": world,
        "step_loss": {"loss": list(np.linspace(1.0, 0.3, 20))},
        "metrics": {},
        "param_digest": "abc",
        "shard": {"indices": list(range(r, 8, world))},
        "samples_per_s": 10.0,
    }
    base.update(kw)
    return base


def test_loss_finite_fails_on_nan() -> None:
    assert LossFiniteCheck().evaluate([rank()]).verdict == "pass"
    bad = rank(step_loss={"loss": [1.0, float("nan")]})
    assert LossFiniteCheck().evaluate([bad]).verdict == "fail"


def test_loss_falling_fails_on_flat_loss_and_skips_gans() -> None:
    assert LossDecreasingCheck().evaluate([rank()]).verdict == "pass"
    flat = rank(step_loss={"loss": [1.0] * 20})
    assert LossDecreasingCheck().evaluate([flat]).verdict == "fail"
    assert LossDecreasingCheck().evaluate([rank(suite="gan")]).verdict == "skip"


def test_cosmoflow_mae_fails_at_the_no_skill_baseline() -> None:
    good = rank(metrics={"val_mae": 0.2, "baseline_mae": 0.5})
    bad = rank(metrics={"val_mae": 0.5, "baseline_mae": 0.5})
    assert CosmoFlowMAECheck().evaluate([good]).verdict == "pass"
    assert CosmoFlowMAECheck().evaluate([bad]).verdict == "fail"


def test_segmentation_iou_fails_near_background_baseline() -> None:
    from validation.checks import SegmentationIoUCheck

    good = rank(suite="climate", metrics={"val_miou": 0.8, "baseline_miou": 0.3})
    bad = rank(suite="climate", metrics={"val_miou": 0.35, "baseline_miou": 0.3})
    assert SegmentationIoUCheck().evaluate([good]).verdict == "pass"
    assert SegmentationIoUCheck().evaluate([bad]).verdict == "fail"


def gan_metrics(hist: float, spec: float) -> dict[str, float]:
    return {
        "hist_chi2": hist,
        "spectrum_chi2": spec,
        "untrained_hist_chi2": 0.2,
        "untrained_spectrum_chi2": 1000.0,
        "real_hist_chi2": 0.0003,
        "real_spectrum_chi2": 0.003,
    }


def test_gan_checks_fail_when_the_generator_did_not_improve() -> None:
    trained = [rank(suite="gan", metrics=gan_metrics(0.02, 20.0))]
    untrained = [rank(suite="gan", metrics=gan_metrics(0.2, 1000.0))]
    assert GANChi2DropCheck().evaluate(trained).verdict == "pass"
    assert GANRealGapCheck().evaluate(trained).verdict == "pass"
    assert GANChi2DropCheck().evaluate(untrained).verdict == "fail"
    assert GANRealGapCheck().evaluate(untrained).verdict == "fail"


def test_params_identical_fails_when_a_rank_differs() -> None:
    same = [rank(0, 2), rank(1, 2)]
    assert ParamsIdenticalCheck().evaluate(same).verdict == "pass"
    assert (
        ParamsIdenticalCheck().evaluate([rank(0, 2), rank(1, 2, param_digest="x")]).verdict
        == "fail"
    )
    assert ParamsIdenticalCheck().evaluate([rank(0, 2)]).verdict == "fail"  # a rank is missing


def test_shards_disjoint_fails_when_ranks_read_the_same_samples() -> None:
    assert ShardsDisjointCheck().evaluate([rank(0, 2), rank(1, 2)]).verdict == "pass"
    dup = rank(1, 2, shard={"indices": [0, 2, 4, 6]})
    assert ShardsDisjointCheck().evaluate([rank(0, 2), dup]).verdict == "fail"


def test_one_vs_many_fails_beyond_tolerance() -> None:
    p = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    assert OneVsManyCheck().evaluate("s", p, p + 1e-7).verdict == "pass"
    assert OneVsManyCheck().evaluate("s", p, 1.05 * p).verdict == "fail"
    assert OneVsManyCheck().evaluate("s", p, None).verdict == "fail"


def test_weak_scaling_fails_with_a_straggler() -> None:
    single = [rank()]
    good = [rank(0, 2, samples_per_s=9.0), rank(1, 2, samples_per_s=9.0)]
    slow = [rank(0, 2, samples_per_s=3.0), rank(1, 2, samples_per_s=3.0)]
    assert WeakScalingCheck().evaluate(single, good).verdict == "pass"
    assert WeakScalingCheck().evaluate(single, slow).verdict == "fail"


def test_weak_scaling_judges_the_median_step_rate_where_recorded() -> None:
    single = [rank(samples_per_s_median_step=10.0)]
    # mean rates look fine, but the typical (median) step at 2 ranks is three times slower
    slow = [rank(r, 2, samples_per_s=9.0, samples_per_s_median_step=3.0) for r in (0, 1)]
    result = WeakScalingCheck().evaluate(single, slow)
    assert result.verdict == "fail" and result.measured == 0.3


def tf_probe(conv: int) -> dict[str, Any]:
    return {
        "framework": "tensorflow",
        "tensorflow": {
            "gpu_count": 0,
            "onednn": {"primitives": {"convolution": conv}, "TF_ENABLE_ONEDNN_OPTS": None},
        },
    }


def test_onednn_fails_without_onednn_convolutions() -> None:
    assert OneDNNCheck().evaluate(tf_probe(1)).verdict == "pass"
    assert OneDNNCheck().evaluate(tf_probe(0)).verdict == "fail"


def test_gpu_checks_skip_on_cpu_and_fail_on_gpu_targets_without_gpus() -> None:
    probe = {
        "framework": "pytorch",
        "pytorch": {"gpu_count": 0, "nccl_available": False, "cuda_available": False},
    }
    assert CudaCheck().evaluate(probe, expect_gpu=False).verdict == "skip"
    assert CudaCheck().evaluate(probe, expect_gpu=True).verdict == "fail"
    assert NcclCheck().evaluate(probe, expect_gpu=False).verdict == "skip"
    assert NcclCheck().evaluate(probe, expect_gpu=True).verdict == "fail"
    gpu = {
        "framework": "pytorch",
        "pytorch": {
            "gpu_count": 4,
            "nccl_available": True,
            "cuda_available": True,
            "nccl_version": "2.21",
        },
    }
    assert CudaCheck().evaluate(gpu, True).verdict == "pass"
    assert NcclCheck().evaluate(gpu, True).verdict == "pass"


def test_horovod_check_fails_on_a_missing_framework_and_reports_not_run() -> None:
    built = {"frameworks": {"TensorFlow": True, "PyTorch": False}, "controllers": {"Gloo": True}}
    probe = {"horovod": {"available": True, "check_build": built}}
    wanted_ok = {"frameworks": ["TensorFlow"], "controllers": ["Gloo"]}
    assert HorovodCheck().evaluate(probe, wanted_ok).verdict == "pass"
    assert HorovodCheck().evaluate(probe, {"frameworks": ["PyTorch"]}).verdict == "fail"
    missing = {"horovod": {"available": False, "reason": "No module named 'horovod'"}}
    result = HorovodCheck().evaluate(missing, wanted_ok)
    assert result.verdict == "not-run" and "horovod" in result.detail
