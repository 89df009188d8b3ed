"""Benchmark the GPU and KNL images beside the CPU ones: cold and warm build time, download
volume, runtime image size against its builder stage, disk use; optionally their validation.

Run as root. With --cold (the whole matrix side by side in one run):
    CONTAINERS_STORAGE_CONF=/work/bench/storage.conf STACKBUILD_CACHE=/work/bench/cache \\
    .venv/bin/python benchmarks/accel_build.py --cold --validate --out /work/bench/out \\
        gpu/tensorflow-gpu gpu/pytorch-gpu knl/pytorch-knl knl/tensorflow-knl \\
        cpu/pytorch-cpu cpu/tensorflow-cpu
each variant in turn starts from an empty image store (that store's images are all removed:
the script refuses the system store) and an empty stackbuild cache (base image, compiled
wheels, downloads), is built into OUT/RECIPE (timed) and measured, and is removed before the
next. Without --cold it measures earlier cold builds in OUT/RECIPE/VARIANT. Per variant:
- cold_build_s: the manifest's build_duration_s of that cold build;
- download_mb: what pip downloaded during it, summed from its log ("Downloading NAME
  (SIZE)"); the second stage installs from the build cache and downloads nothing;
- warm_rebuild_s: the same variant built again right after (every layer cached);
- runtime_over_builder: the runtime image against its builder stage (built with --target
  builder from the layer cache), the issue's goal being <= 0.6;
- with --cold, store_gb and cache_gb: the disk the store and the cache take after it;
- with --validate, `stackbuild validate` of the build folder: exit code, verdict and the
  checks that did not pass (a GPU image here must say "not validated on a GPU").
Writes benchmarks/results/accel_build.json after each variant; variants not named keep their
numbers. The machine is shared, so the load average is recorded next to the times.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_build import BUILDER, ROOT, now, podman_builder_stage, run

from stackbuild.build.images import inspect_image

RESULTS = ROOT / "benchmarks" / "results" / "accel_build.json"
UNITS = {"kB": 1e-3, "MB": 1.0, "GB": 1e3}
DOWNLOAD = re.compile(r"Downloading \S+ \((?P<size>[0-9.]+) (?P<unit>kB|MB|GB)\)")


def download_mb(log: Path) -> float:
    """Megabytes pip downloaded during the build that wrote this log."""
    total = 0.0
    for match in DOWNLOAD.finditer(log.read_text(encoding="utf-8", errors="replace")):
        total += float(match["size"]) * UNITS[match["unit"]]
    return round(total, 1)


def measure(out: Path, item: str) -> dict[str, Any]:
    """The numbers of one RECIPE/VARIANT, built cold into OUT/RECIPE/VARIANT."""
    recipe, variant = item.split("/", 1)
    folder = out / recipe / variant
    manifest = json.loads((folder / "manifest.json").read_text())
    logs = sorted((folder / "logs").glob("build-*.log"))
    numbers: dict[str, Any] = {
        "image": manifest["refs"][0],
        "cold_build_s": round(manifest["build_duration_s"]),
        "cold_build_at": manifest["built_at"],
        "download_mb": download_mb(logs[0]) if logs else None,
        "image_mib": round(manifest["size_bytes"] / 2**20),
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
    }
    numbers["warm_rebuild_s"] = run("build", recipe, "-V", variant, "-o", str(out / recipe))
    rebuilt = json.loads((folder / "manifest.json").read_text())
    numbers["warm_rebuild_same_image"] = rebuilt["image_id"] == manifest["image_id"]
    podman_builder_stage(folder)
    builder = inspect_image(BUILDER).size
    numbers["builder_mib"] = round(builder / 2**20)
    numbers["runtime_over_builder"] = round(manifest["size_bytes"] / builder, 3)
    # --no-prune: the builder stage's layers stay in the layer cache for the next build.
    subprocess.run(["podman", "rmi", "--no-prune", BUILDER], capture_output=True, check=False)
    return numbers | {"measured_at": now()}


def _gb(path: Path) -> float:
    done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return round(int(done.stdout.split()[0]) / 1e9, 2) if done.returncode == 0 else 0.0


def bench_store() -> tuple[Path, Path]:
    """The dedicated store and cache a --cold run empties; refuses the system ones."""
    conf, cache = os.environ.get("CONTAINERS_STORAGE_CONF"), os.environ.get("STACKBUILD_CACHE")
    if not conf or not cache:
        sys.exit(
            "--cold empties its image store and cache: set CONTAINERS_STORAGE_CONF (a store of"
            " its own) and STACKBUILD_CACHE"
        )
    graph = re.search(r'^graphroot\s*=\s*"([^"]+)"', Path(conf).read_text(), re.MULTILINE)
    if not graph or graph[1].rstrip("/") in ("/var/lib/containers/storage", ""):
        sys.exit(f"{conf}: --cold needs a graphroot of its own, not the system store")
    return Path(graph[1]), Path(cache)


def empty_store_and_cache(cache: Path) -> None:
    subprocess.run(["podman", "rmi", "--all", "--force"], capture_output=True, check=False)
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)


def cold_build(out: Path, item: str) -> None:
    recipe, variant = item.split("/", 1)
    shutil.rmtree(out / recipe / variant, ignore_errors=True)
    run("build", recipe, "-V", variant, "-o", str(out / recipe))


def validate(out: Path, item: str) -> dict[str, Any]:
    """`stackbuild validate` of the build folder: its exit code, verdict, unpassed checks."""
    recipe, variant = item.split("/", 1)
    folder, report = out / recipe / variant, out / "validation" / recipe / variant
    start = time.monotonic()
    done = subprocess.run(
        [str(ROOT / ".venv/bin/stackbuild"), "validate", str(folder), "-o", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if not (folder / "validation.json").exists():  # it did not get to a verdict
        return {"exit": done.returncode, "error": (done.stdout + done.stderr).strip()[-2000:]}
    record = json.loads((folder / "validation.json").read_text())
    unpassed = sorted(
        {
            f"{c['check']} ({c['category']}): {c['verdict']}"
            for path in report.rglob("report.json")
            for c in json.loads(path.read_text()).get("checks", [])
            if c.get("verdict") != "pass"
        }
    )
    return {
        "exit": done.returncode,
        "verdicts": record.get("verdicts"),
        "failed_checks": record.get("failed_checks"),
        "seconds": round(time.monotonic() - start),
        "checks_not_passed": unpassed,
    }


def main(args: list[str]) -> None:
    out = Path(args[args.index("--out") + 1]) if "--out" in args else ROOT / "out"
    items = [a for a in args if "/" in a and not a.startswith("--") and a != str(out)]
    cold = "--cold" in args
    graph, cache = bench_store() if cold else (Path(), Path())
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"variants": {}}
    for item in items:
        load_before = round(os.getloadavg()[0], 2)
        if cold:
            empty_store_and_cache(cache)
            try:
                cold_build(out, item)
            except subprocess.CalledProcessError as err:
                logs = sorted((out / item / "logs").glob("build-*.log"))
                results["variants"][item] = {
                    "build_failed": str(err),
                    "logs": [str(x) for x in logs],
                }
                RESULTS.write_text(json.dumps(results, indent=2) + "\n")
                print(f"{item}: cold build failed ({err}); see {logs}", flush=True)
                continue
        numbers = measure(out, item)
        if cold:
            numbers |= {"store_gb": _gb(graph), "cache_gb": _gb(cache), "from_empty": True}
            numbers["load_avg_1min_before_cold_build"] = load_before
        if "--validate" in args and not item.startswith("cpu/"):  # CI validates the CPU ones
            numbers["validation"] = validate(out, item)
        results["variants"][item] = numbers
        results |= {"when": now(), "machine": f"{os.cpu_count()} cpus"}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps({item: numbers}, indent=2), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
