"""CosmoFlow small: training samples/s in the image vs natively on the same host, same run.

Both sides run the same harness (`python -m validation run`, 1 rank, same threads, same
seed and steps) with the same framework version: natively with this machine's .venv,
in the image with `podman run` exactly as `stackbuild validate` starts it. Runs alternate
(native, image, native, image, ...) so that drift in the machine's load hits both sides;
the ratio is median(image) / median(native). Goal >= 0.98 (issue 4).

    python benchmarks/validation_image_vs_native.py \\
        --image pytorch=localhost/stackbuild/pytorch:2.13-cpu \\
        --image tensorflow=localhost/stackbuild/tensorflow:2.21-cpu --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from validation_common import ROOT, save

from validation.launch import CONTAINER_OUT, LaunchPlan, build_command
from validation.results import load_run

THREADS = 2


def one(out: Path, framework: str, image: str | None, tag: str, epochs: int) -> float:
    """Samples/s of one 1-rank CosmoFlow small run (first epoch excluded by the harness)."""
    if image is None:
        plan = LaunchPlan(python=sys.executable)
        where = out
    else:
        plan = LaunchPlan(runtime="podman", image=image, mounts=((str(out), CONTAINER_OUT),))
        where = Path(CONTAINER_OUT)
    args = ["run", "--suite", "cosmoflow", "--framework", framework, "--threads", str(THREADS)]
    args += ["--epochs", str(epochs), "--out", str(where), "--tag", tag]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_ENABLE_ONEDNN_OPTS": "1"}
    subprocess.run(build_command(plan, args), env=env, check=True, stdout=subprocess.DEVNULL)
    (result,) = load_run(out, tag)
    return float(result["samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", action="append", required=True, help="FRAMEWORK=IMAGE")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    images = dict(item.split("=", 1) for item in args.image)
    started = time.time()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        os.chmod(out, 0o777)  # the container's user writes its rank files here
        for framework, image in images.items():
            native, inside = [], []
            for i in range(args.repeats):
                native.append(one(out, framework, None, f"{framework}-native-{i}", args.epochs))
                inside.append(one(out, framework, image, f"{framework}-image-{i}", args.epochs))
                print(f"{framework} #{i}: native {native[-1]:.1f}, image {inside[-1]:.1f}")
            results[framework] = {
                "image": image,
                "native_samples_per_s": native,
                "image_samples_per_s": inside,
                "ratio_image_over_native": statistics.median(inside) / statistics.median(native),
            }
    save(
        "validation_image_vs_native",
        {
            "workload": f"cosmoflow small, 1 rank, {THREADS} threads, alternating runs",
            "goal": ">= 0.98",
            "wall_s": round(time.time() - started, 1),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
