"""TensorFlow: a real small training run, oneDNN on vs off, and the Horovod path."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from validation.checks import GANChi2DropCheck, LossFiniteCheck, OneDNNCheck
from validation.results import load_run
from validation.stack import tf_onednn_primitives

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.training
ROOT = Path(__file__).resolve().parents[2]


def test_keras_gan_trains_and_improves_its_summary_statistics(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "validation",
        "run",
        "--suite",
        "gan",
        "--framework",
        "tensorflow",
        "--out",
        str(tmp_path),
        "--tag",
        "gan",
        "--epochs",
        "4",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = load_run(tmp_path, "gan")
    assert LossFiniteCheck().evaluate(run).verdict == "pass"
    result = GANChi2DropCheck().evaluate(run)
    assert result.verdict == "pass", result


def test_onednn_check_passes_when_enabled_and_fails_when_disabled() -> None:
    # TensorFlow turns oneDNN on by default only on CPUs with AVX512_VNNI/BF16/AMX; images
    # set TF_ENABLE_ONEDNN_OPTS=1, which is what this check must see working.
    on = {
        "framework": "tensorflow",
        "tensorflow": {"onednn": tf_onednn_primitives({"TF_ENABLE_ONEDNN_OPTS": "1"})},
    }
    off = {
        "framework": "tensorflow",
        "tensorflow": {"onednn": tf_onednn_primitives({"TF_ENABLE_ONEDNN_OPTS": "0"})},
    }
    assert OneDNNCheck().evaluate(on).verdict == "pass", on
    assert OneDNNCheck().evaluate(off).verdict == "fail", off


def horovod_python() -> str | None:
    """A Python with Horovod: this one, or $STACKBUILD_HOROVOD_PYTHON (e.g. a separate build)."""
    if importlib.util.find_spec("horovod") is not None:
        return sys.executable
    return os.environ.get("STACKBUILD_HOROVOD_PYTHON")


needs_horovod = pytest.mark.skipif(
    horovod_python() is None,
    reason="horovod is not installed (patched source build; or set STACKBUILD_HOROVOD_PYTHON)",
)


def horovod_run(tmp_path: Path, *args: str) -> list[dict]:
    """Run 2 ranks under horovodrun with --sync horovod; return the rank results."""
    python = str(horovod_python())
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": f"{Path(python).parent}{os.pathsep}{os.environ['PATH']}",
    }
    cmd = [
        "horovodrun",
        "-np",
        "2",
        "-H",
        "localhost:2",
        python,
        "-m",
        "validation",
        "run",
        "--sync",
        "horovod",
        "--out",
        str(tmp_path),
        "--tag",
        "hvd",
        "--steps",
        "4",
        *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    run = load_run(tmp_path, "hvd")
    assert [r["sync"] for r in run] == ["horovod", "horovod"]
    return run


@needs_horovod
@pytest.mark.parametrize(
    "args",
    [
        ("--suite", "cosmoflow"),
        ("--suite", "cosmoflow", "--framework", "tensorflow"),
        ("--suite", "gan", "--framework", "tensorflow"),
    ],
    ids=["pytorch-cosmoflow", "keras-cosmoflow-DistributedOptimizer", "tf-gan-GradientTape"],
)
def test_horovod_two_ranks_end_with_identical_parameters(tmp_path: Path, args: tuple) -> None:
    from validation.checks import ParamsIdenticalCheck

    run = horovod_run(tmp_path, *args)
    assert ParamsIdenticalCheck().evaluate(run).verdict == "pass"
