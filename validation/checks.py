"""Checks in the ReFrame style: each measures one thing, compares it with a documented
reference, and returns a CheckResult that the report prints."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from validation.plan import DEFAULT_MIN_SCALING_EFFICIENCY

RankResults = list[dict[str, Any]]

PASS, FAIL, SKIP, NOT_RUN = "pass", "fail", "skip", "not-run"


@dataclass(frozen=True)
class CheckResult:
    """One verdict with the numbers behind it."""

    check: str
    category: str
    subject: str
    verdict: str
    measured: float | str | None
    reference: float | str | None
    threshold: str
    source: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


class Check:
    """Base: subclasses set name/category/source and implement `evaluate`."""

    name = "check"
    category = "correctness"
    source = ""

    def result(
        self,
        subject: str,
        ok: bool | None,
        measured: Any,
        reference: Any,
        threshold: str,
        detail: str = "",
        verdict: str | None = None,
    ) -> CheckResult:
        """Build a CheckResult; ok=None means skip unless `verdict` says otherwise."""
        if verdict is None:
            verdict = SKIP if ok is None else (PASS if ok else FAIL)
        return CheckResult(
            self.name,
            self.category,
            subject,
            verdict,
            _num(measured),
            _num(reference),
            threshold,
            self.source,
            detail,
        )


def _num(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def subject_of(run: RankResults) -> str:
    """'suite/framework xN' for a run."""
    r = run[0]
    return f"{r['suite']}/{r['framework']} x{r['world_size']}"


def _rank0(run: RankResults) -> dict[str, Any]:
    return next(r for r in run if r["rank"] == 0)


# --- correctness -------------------------------------------------------------------------


class LossFiniteCheck(Check):
    """Every recorded loss on every rank is a finite number."""

    name = "loss-finite"
    source = "sanity: a NaN/inf loss means training diverged"

    def evaluate(self, run: RankResults) -> CheckResult:
        bad = sum(1 for r in run for v in r["step_loss"].get("loss", []) if not math.isfinite(v))
        total = sum(len(r["step_loss"].get("loss", [])) for r in run)
        return self.result(
            subject_of(run),
            bad == 0 and total > 0,
            bad,
            0,
            "non-finite losses == 0",
            f"{total} losses recorded",
        )


class LossDecreasingCheck(Check):
    """Mean loss over the last quarter of steps is clearly below the first quarter's."""

    name = "loss-falling"
    source = "judgement: a learnable synthetic signal must cut the loss by >= 10% in a short run"
    min_drop = 0.10

    def evaluate(self, run: RankResults) -> CheckResult:
        r0 = _rank0(run)
        if r0["suite"] == "gan":
            return self.result(
                subject_of(run),
                None,
                None,
                None,
                "n/a",
                "adversarial losses need not fall; GAN quality checks apply",
            )
        losses = np.asarray(r0["step_loss"].get("loss", []), dtype=float)
        if len(losses) < 4:
            return self.result(
                subject_of(run), False, None, None, ">= 4 steps", "too few steps to judge"
            )
        q = max(1, len(losses) // 4)
        first, last = float(np.mean(losses[:q])), float(np.mean(losses[-q:]))
        drop = 1 - last / first if first > 0 else 0.0
        return self.result(
            subject_of(run),
            drop >= self.min_drop,
            round(drop, 4),
            self.min_drop,
            "relative drop >=",
            f"first-quarter {first:.4g}, last-quarter {last:.4g}",
        )


class CosmoFlowMAECheck(Check):
    """Validation MAE well below the best constant (predict-the-median) baseline."""

    name = "cosmoflow-mae"
    source = (
        "judgement: MAE <= 0.8 x no-skill baseline on the synthetic set "
        "(MLPerf HPC target 0.124 applies to the full data set)"
    )
    max_ratio = 0.8

    def evaluate(self, run: RankResults) -> CheckResult:
        m = _rank0(run)["metrics"]
        ratio = m["val_mae"] / m["baseline_mae"]
        return self.result(
            subject_of(run),
            ratio <= self.max_ratio,
            round(ratio, 4),
            self.max_ratio,
            "val MAE / baseline MAE <=",
            f"val MAE {m['val_mae']:.4f}, baseline {m['baseline_mae']:.4f}",
        )


class SegmentationIoUCheck(Check):
    """Mean IoU well above the all-background baseline."""

    name = "climate-miou"
    source = (
        "REFERENCE.md: compare with the all-background baseline; margin 0.25 is judgement "
        "(MLPerf HPC target 0.82 applies to the full data set)"
    )
    min_margin = 0.25

    def evaluate(self, run: RankResults) -> CheckResult:
        m = _rank0(run)["metrics"]
        margin = m["val_miou"] - m["baseline_miou"]
        return self.result(
            subject_of(run),
            margin >= self.min_margin,
            round(m["val_miou"], 4),
            round(m["baseline_miou"] + self.min_margin, 4),
            "mIoU >= baseline + 0.25",
            f"baseline (all background) {m['baseline_miou']:.4f}",
        )


class GANChi2DropCheck(Check):
    """Both summary chi^2 values fall by a large factor from the untrained generator."""

    name = "gan-chi2-drop"
    source = (
        "CosmoGAN (arXiv:1706.02390) judges by histogram and power-spectrum chi^2; "
        "factor 2 is judgement for a ~30 s CPU run of the small config"
    )
    min_factor = 2.0

    def evaluate(self, run: RankResults) -> CheckResult:
        m = _rank0(run)["metrics"]
        factors = {
            s: m[f"untrained_{s}"] / max(m[s], 1e-12) for s in ("hist_chi2", "spectrum_chi2")
        }
        worst = min(factors.values())
        return self.result(
            subject_of(run),
            worst >= self.min_factor,
            round(worst, 3),
            self.min_factor,
            "untrained / trained chi^2 >= (both)",
            ", ".join(f"{k} x{v:.2f}" for k, v in factors.items()),
        )


class GANRealGapCheck(Check):
    """The generator closes part of the (log) gap to real-vs-real chi^2."""

    name = "gan-approaches-real"
    source = (
        "judgement, calibrated on known-good small runs here (0.095-0.175 after ~20 s): in "
        "log chi^2, trained maps close >= 5% of the gap between the untrained generator "
        "and two disjoint sets of real maps; an untrained generator closes 0"
    )
    min_closed = 0.05

    def evaluate(self, run: RankResults) -> CheckResult:
        m = _rank0(run)["metrics"]
        closed = {}
        for s in ("hist_chi2", "spectrum_chi2"):
            lo, hi, now = (
                math.log(max(v, 1e-12)) for v in (m[f"real_{s}"], m[f"untrained_{s}"], m[s])
            )
            closed[s] = (hi - now) / (hi - lo) if hi > lo else 0.0
        worst = min(closed.values())
        return self.result(
            subject_of(run),
            worst >= self.min_closed,
            round(worst, 3),
            self.min_closed,
            "fraction of log gap closed >= (both)",
            ", ".join(f"{k} {v:.2f}" for k, v in closed.items()),
        )


QUALITY_CHECKS: dict[str, list[type[Check]]] = {
    "cosmoflow": [CosmoFlowMAECheck],
    "climate": [SegmentationIoUCheck],
    "gan": [GANChi2DropCheck, GANRealGapCheck],
}


# --- distributed -------------------------------------------------------------------------


class ParamsIdenticalCheck(Check):
    """All ranks hold bit-identical parameters after training."""

    name = "params-identical"
    category = "distributed"
    source = "data parallelism: broadcast + averaged gradients keep replicas equal"

    def evaluate(self, run: RankResults) -> CheckResult:
        if run[0]["world_size"] < 2:
            return self.result(subject_of(run), None, None, None, "n/a", "single rank")
        digests = {r["param_digest"] for r in run}
        expected = run[0]["world_size"]
        ok = len(digests) == 1 and len(run) == expected
        return self.result(
            subject_of(run),
            ok,
            len(digests),
            1,
            "distinct digests ==",
            f"{len(run)}/{expected} ranks reported",
        )


class ShardsDisjointCheck(Check):
    """Ranks read disjoint shards that together cover the training set."""

    name = "shards-disjoint"
    category = "distributed"
    source = "data parallelism: each sample is read by exactly one rank per epoch"

    def evaluate(self, run: RankResults) -> CheckResult:
        if len(run) < 2:
            return self.result(subject_of(run), None, None, None, "n/a", "single rank")
        sets = [set(r["shard"]["indices"] or []) for r in run]
        total = sum(len(s) for s in sets)
        union = len(set().union(*sets))
        return self.result(
            subject_of(run),
            total == union and total > 0,
            total - union,
            0,
            "samples read by more than one rank ==",
            f"{union} distinct samples",
        )


class OneVsManyCheck(Check):
    """1 rank and N ranks with the same global batch end at the same parameters."""

    name = "one-vs-n-ranks"
    category = "distributed"
    source = (
        "judgement: float32 reduction order changes results by ~1e-6 relative over a few "
        "steps; summed or missing gradient averaging gives O(1e-2) or more"
    )
    tolerance = 1e-3

    def evaluate(
        self, subject: str, single: np.ndarray | None, many: np.ndarray | None
    ) -> CheckResult:
        if single is None or many is None:
            return self.result(
                subject, False, None, self.tolerance, "relative L2 <=", "parameter files missing"
            )
        rel = float(np.linalg.norm(single - many) / max(np.linalg.norm(single), 1e-30))
        return self.result(
            subject, rel <= self.tolerance, rel, self.tolerance, "relative L2 difference <="
        )


# --- scaling -----------------------------------------------------------------------------


class WeakScalingCheck(Check):
    """Per-rank throughput at N ranks relative to 1 rank (weak scaling, fixed local batch)."""

    name = "weak-scaling"
    category = "scaling"
    source = (
        "cosmoflow-benchmark: 93.5% at 2 KNL nodes (REFERENCE.md); default threshold 0.6 is "
        "judgement for ranks on one node (--min-scaling-efficiency); rates at the median step "
        "(robust to other tenants' bursts on shared machines); each rank, the 1-rank "
        "baseline included, pinned to its own share of the cores (launch_env.rank_cores)"
    )

    def __init__(self, min_efficiency: float = DEFAULT_MIN_SCALING_EFFICIENCY) -> None:
        self.min_efficiency = min_efficiency

    @staticmethod
    def rate(rank: dict[str, Any]) -> float | None:
        """A rank's samples/s at its median step (metrics.throughput); the mean rate for
        results written before the median was recorded."""
        return rank.get("samples_per_s_median_step") or rank.get("samples_per_s")

    def evaluate(self, single: RankResults, many: RankResults) -> CheckResult:
        base = self.rate(_rank0(single))
        found = [self.rate(r) for r in many]
        subject = subject_of(many)
        rates = [v for v in found if v]
        if not base or len(rates) != len(found):
            return self.result(
                subject, False, None, self.min_efficiency, "efficiency >=", "throughput missing"
            )
        eff = sum(rates) / (len(rates) * base)
        detail = f"median step: 1 rank {base:.2f}/s; per rank "
        detail += ", ".join(f"{v:.2f}" for v in rates) + "/s"
        means = [_rank0(single).get("samples_per_s"), *(r.get("samples_per_s") for r in many)]
        if all(means):
            detail += f"; mean-rate efficiency {sum(means[1:]) / (len(rates) * means[0]):.3f}"
        idle = _rank0(many).get("comm_threads_idle")
        if idle:
            detail += f"; communication threads at idle priority: {', '.join(idle)}"
        return self.result(
            subject,
            eff >= self.min_efficiency,
            round(eff, 4),
            self.min_efficiency,
            "efficiency >=",
            detail,
        )


# --- stack -------------------------------------------------------------------------------


class OneDNNCheck(Check):
    """TensorFlow executes convolutions through oneDNN."""

    name = "tf-onednn"
    category = "stack"
    source = "REFERENCE.md: CPU TensorFlow optimised with MKL-DNN/oneDNN; seen via ONEDNN_VERBOSE"

    def evaluate(self, probe: dict[str, Any]) -> CheckResult:
        tf = probe.get("tensorflow")
        if not tf:
            return self.result("tensorflow", None, None, None, "n/a", "TensorFlow not probed")
        onednn = tf["onednn"]
        prims = onednn.get("primitives", {})
        conv = prims.get("convolution", 0)
        hint = ""
        if conv == 0 and onednn.get("TF_ENABLE_ONEDNN_OPTS") is None:
            hint = (
                "; TensorFlow enables oneDNN by default only on CPUs with AVX512_VNNI/BF16/AMX: "
                "set TF_ENABLE_ONEDNN_OPTS=1 in the image"
            )
        return self.result(
            "tensorflow",
            conv > 0,
            conv,
            1,
            "oneDNN convolution executions >=",
            f"TF_ENABLE_ONEDNN_OPTS={onednn.get('TF_ENABLE_ONEDNN_OPTS')}, primitives {prims}"
            + hint,
        )


class CudaCheck(Check):
    """GPUs are visible to the framework on GPU targets."""

    name = "cuda-visible"
    category = "stack"
    source = "REFERENCE.md: GPU nodes run CUDA + NCCL"

    def evaluate(self, probe: dict[str, Any], expect_gpu: bool) -> CheckResult:
        fw = probe["framework"]
        gpus = probe[fw].get("gpu_count", 0)
        if not expect_gpu:
            return self.result(fw, None, gpus, None, "n/a", "CPU target: GPU checks skipped")
        return self.result(fw, gpus > 0, gpus, 1, "GPUs >=")


class NcclCheck(Check):
    """NCCL is available to torch.distributed on GPU targets."""

    name = "nccl-available"
    category = "stack"
    source = "REFERENCE.md: NCCL inside a node for GPU all-reduce"

    def evaluate(self, probe: dict[str, Any], expect_gpu: bool) -> CheckResult:
        fw = probe["framework"]
        if not expect_gpu:
            return self.result(fw, None, None, None, "n/a", "CPU target: GPU checks skipped")
        if fw != "pytorch":
            return self.result(fw, None, None, None, "n/a", "checked through PyTorch/Horovod")
        info = probe["pytorch"]
        ok = bool(info.get("nccl_available")) and bool(info.get("cuda_available"))
        return self.result(fw, ok, info.get("nccl_version"), "any", "NCCL usable")


class HorovodCheck(Check):
    """Horovod was built with the requested frameworks, controllers and tensor operations."""

    name = "horovod-build"
    category = "stack"
    source = "REFERENCE.md: `horovodrun --check-build` lists frameworks, controllers, ops"

    def evaluate(self, probe: dict[str, Any], wanted: dict[str, list[str]]) -> CheckResult:
        hvd = probe.get("horovod", {})
        if not hvd.get("available"):
            return self.result(
                "horovod",
                None,
                None,
                None,
                "n/a",
                hvd.get("reason", "horovod not importable"),
                verdict=NOT_RUN,
            )
        built = hvd.get("check_build", {})
        missing = [
            f"{section}:{item}"
            for section, items in wanted.items()
            for item in items
            if not built.get(section, {}).get(item, False)
        ]
        want = ", ".join(f"{s}:{i}" for s, items in wanted.items() for i in items)
        return self.result(
            "horovod",
            not missing,
            ", ".join(missing) or "none missing",
            want,
            "all requested built",
            hvd.get("version", ""),
        )


def summarise(results: list[CheckResult]) -> dict[str, int]:
    """Count verdicts."""
    out = {PASS: 0, FAIL: 0, SKIP: 0, NOT_RUN: 0}
    for r in results:
        out[r.verdict] = out.get(r.verdict, 0) + 1
    return out
