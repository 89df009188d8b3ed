"""TensorFlow CosmoFlow small: samples/s with oneDNN custom ops on vs off."""

from __future__ import annotations

import tempfile
from pathlib import Path

from validation_common import run_ranks, save


def main() -> None:
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for flag in ("1", "0"):
            run = run_ranks(
                Path(tmp),
                f"onednn-{flag}",
                1,
                "--suite",
                "cosmoflow",
                "--framework",
                "tensorflow",
                "--epochs",
                "2",
                env={"TF_ENABLE_ONEDNN_OPTS": flag},
            )
            rates[flag] = run[0]["samples_per_s"]
    save(
        "validation_onednn",
        {
            "workload": "cosmoflow small, tensorflow-cpu, 1 rank, all cores",
            "samples_per_s_onednn_on": rates["1"],
            "samples_per_s_onednn_off": rates["0"],
            "speedup_on_vs_off": rates["1"] / rates["0"],
        },
    )


if __name__ == "__main__":
    main()
