"""Wall time of `stackbuild validate --native` on the small suite (all workloads, PyTorch at
1 and 2 ranks via torchrun, TensorFlow at 1 rank), with its pass/fail summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from validation_common import ROOT, save


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-c",
            "from stackbuild.commands.validate import validate_command; validate_command()",
            "--native",
            "--ranks",
            "1,2",
            "-o",
            tmp,
        ]
        start = time.time()
        # As images do: this CPU lacks AVX512_VNNI, so TensorFlow leaves oneDNN off unless asked.
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        wall = time.time() - start
        report = json.loads((Path(tmp) / "report.json").read_text())
    save(
        "validation_suite_time",
        {
            "command": "stackbuild validate --native --ranks 1,2 (small config)",
            "env": {"TF_ENABLE_ONEDNN_OPTS": "1"},
            "wall_s": wall,
            "exit_code": proc.returncode,
            "summary": report["summary"],
            "failed": [
                f"{c['check']} [{c['subject']}] {c['measured']}"
                for c in report["checks"]
                if c["verdict"] == "fail"
            ],
            "jobs": {j["tag"]: j["wall_s"] for j in report["jobs"]},
        },
    )


if __name__ == "__main__":
    main()
