"""Wall time of `stackbuild validate` on the small suite for one image (goal <= 10 minutes
on 2 cores), with the pass/fail summary of each pass.

For each image: all three workloads, 1 and 2 ranks, `--launcher auto` (PyTorch: DDP under
torchrun and Horovod under horovodrun; TensorFlow: Horovod), as the main job runs it.
`--native` also times this machine's Python (.venv, with the Horovod the set-up compiles).

    python benchmarks/validation_suite_time.py \\
        --image pytorch=localhost/stackbuild/pytorch:2.13-cpu \\
        --image tensorflow=localhost/stackbuild/tensorflow:2.21-cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from validation_common import ROOT, save


def time_validation(target: list[str], framework: str, out: Path) -> dict[str, Any]:
    """Run `stackbuild validate TARGET --framework F -o OUT`; wall time and each pass's verdict."""
    cmd = [sys.executable, "-m", "stackbuild.cli", "validate", *target, "--framework", framework]
    start = time.time()
    # As images do: this CPU lacks AVX512_VNNI, so TensorFlow leaves oneDNN off unless asked.
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}
    proc = subprocess.run(
        [*cmd, "-o", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    wall = time.time() - start
    passes = {}
    for path in sorted(out.glob("**/report.json")):
        report = json.loads(path.read_text())
        passes[report["request"]["launcher"]] = {
            "summary": report["summary"],
            "failed": [
                f"{c['check']} [{c['subject']}] {c['measured']}"
                for c in report["checks"]
                if c["verdict"] == "fail"
            ],
            "jobs": {j["tag"]: j["wall_s"] for j in report["jobs"]},
        }
    return {"wall_s": round(wall, 1), "exit_code": proc.returncode, "passes": passes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", action="append", default=[], help="FRAMEWORK=IMAGE")
    parser.add_argument("--native", action="store_true", help="also time --native")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.image:
            framework, image = item.split("=", 1)
            results[image] = time_validation([image], framework, Path(tmp) / framework)
            print(image, results[image]["wall_s"], "s", flush=True)
        if args.native:
            results["native"] = time_validation(["--native"], "pytorch,tensorflow", Path(tmp) / "n")
    save(
        "validation_suite_time",
        {
            "command": "stackbuild validate IMAGE --framework F (small config, ranks 1,2, "
            "launcher auto)",
            "env": {"TF_ENABLE_ONEDNN_OPTS": "1"},
            "goal_s": 600,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
