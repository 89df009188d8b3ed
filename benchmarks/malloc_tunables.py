"""PyTorch training samples/s in the image with the recipe's glibc malloc tunables vs without.

recipes/cpu.yaml sets GLIBC_TUNABLES in the PyTorch image (heap blocks up to 32 MiB, keep up
to 1 GiB of freed heap) because glibc's defaults make PyTorch's per-step activations
page-fault anew at every step. Each round runs the same 1-rank job twice, alternating, with
the image's value and with `GLIBC_TUNABLES=` (glibc's defaults), as `stackbuild validate`
starts it (podman, one thread, pinned). Ratio = median(with) / median(without).

    python benchmarks/malloc_tunables.py --image localhost/stackbuild/pytorch:2.13-cpu
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from validation_common import run_in_image, save

RATE = "samples_per_s_median_step"


def rate(out: Path, image: str, suite: str, tag: str, env: dict[str, str]) -> float:
    """Samples/s (median step) of one 1-rank run of `suite` in the image."""
    args = ("--suite", suite, "--framework", "pytorch", "--threads", "1")
    (result,) = run_in_image(out, image, tag, *args, env=env)
    return float(result[RATE])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", required=True)
    parser.add_argument("--suites", nargs="+", default=["cosmoflow", "climate", "gan"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sides = {"image": {}, "glibc_defaults": {"GLIBC_TUNABLES": ""}}
    rates: dict[str, dict[str, list[float]]] = {s: {k: [] for k in sides} for s in args.suites}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for suite in args.suites:
                for side, env in sides.items():
                    value = rate(Path(tmp), args.image, suite, f"{suite}-{side}-{round_}", env)
                    rates[suite][side].append(round(value, 1))
                    print(suite, side, rates[suite][side][-1], flush=True)
    ratio: dict[str, Any] = {
        s: round(statistics.median(r["image"]) / statistics.median(r["glibc_defaults"]), 3)
        for s, r in rates.items()
    }
    save(
        "malloc_tunables",
        {
            "image": args.image,
            "workload": "small configs, PyTorch, 1 rank, 1 thread pinned; samples/s median step",
            "samples_per_s": rates,
            "ratio_image_vs_glibc_defaults": ratio,
        },
    )


if __name__ == "__main__":
    main()
