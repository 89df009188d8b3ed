"""Benchmark a real stack image: cold build, rebuilds, Horovod wheel cache, size, export.

Run as root right after a cold `stackbuild build cpu -V VARIANT -o out/cpu` (empty layer
and wheel caches): cold_build_s is read from that build's manifest, so any later build into
out/cpu (even a cached one) replaces it.
    .venv/bin/python benchmarks/stack_build.py [--horovod | --size-only] [VARIANT ...]
Writes benchmarks/results/stack_build.json:
- cached rebuild: the same recipe rendered elsewhere and built again (all layers cached);
- pin change: a copy of recipes/cpu.yaml whose top-level pin (h5py) differs: only the
  steps after the pin may run again; the ratio to the cold build is the issue's goal;
- size: the runtime image against the builder stage (a single-stage image of the same
  stack, with compilers and headers), built with --target builder from the layer cache;
- --horovod: the builder stage built twice with --no-cache, once with an empty compiled-
  wheel cache (Horovod compiles) and once with the filled one (cache hit: no compile);
- squashfs export time and size.
--size-only measures only the size ratio (after a cached build of this tree) and keeps the
variant's other numbers; a run without --horovod keeps its earlier miss/hit times, dated
(horovod_measured_at). Results of variants not named are kept.
The machine is shared, so the load average is recorded next to the times.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackbuild.build.context import BuildVolume, load_build_spec
from stackbuild.build.engines import PodmanBuilder
from stackbuild.build.images import inspect_image

ROOT = Path(__file__).resolve().parents[1]
BUILDER = "localhost/stackbuild-bench/builder"  # the builder stage, tagged for measuring
RESULTS = ROOT / "benchmarks" / "results" / "stack_build.json"
STACKBUILD = str(ROOT / ".venv" / "bin" / "stackbuild")


def run(*args: str) -> float:
    """Seconds one stackbuild command takes; raises if it fails."""
    start = time.monotonic()
    subprocess.run([STACKBUILD, *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return round(time.monotonic() - start, 1)


def podman_builder_stage(context: Path, *extra: str, wheel_cache: Path | None = None) -> float:
    """Seconds to build the builder stage of a rendered context (tagged bench-builder)."""
    spec = load_build_spec(context)
    if wheel_cache is not None:
        volumes = tuple(
            BuildVolume(v.name, wheel_cache, v.target, v.read_only)
            if v.target == "/cache/wheels"
            else v
            for v in spec.volumes
        )
        spec = dataclasses.replace(spec, volumes=volumes)
    with tempfile.TemporaryDirectory() as tmp:
        argv = PodmanBuilder().build_argv(spec, Path(tmp) / "iid")
        argv[-1:-1] = ["--target", "builder", "-t", BUILDER, *extra]
        start = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        return round(time.monotonic() - start, 1)


def pin_changed_recipe(folder: Path) -> Path:
    """A copy of recipes/ whose cpu.yaml pins another h5py (the top-level extra package)."""
    shutil.copytree(ROOT / "recipes", folder / "recipes")
    recipe = folder / "recipes" / "cpu.yaml"
    text = recipe.read_text()
    assert '"h5py==3.16.0"' in text, "benchmark expects the shipped h5py pin"
    text = text.replace('"h5py==3.16.0"', '"h5py==3.15.1"')
    # Its own image name, so the shipped tag keeps naming the shipped image.
    recipe.write_text(
        text.replace(
            "defaults:\n", 'defaults:\n  image: {name: "stackbuild-bench/{framework}"}\n', 1
        )
    )
    return recipe


def size_numbers(build_dir: Path, runtime_bytes: int) -> dict[str, Any]:
    """The runtime image against its builder stage (the same stack with compilers and
    headers), built with --target builder from the layer cache and left tagged BUILDER."""
    podman_builder_stage(build_dir)
    builder = inspect_image(BUILDER)
    return {
        "single_stage_equivalent_mib": round(builder.size / 2**20),
        "runtime_over_single_stage": round(runtime_bytes / builder.size, 3),
    }


def measure_size(variant: str) -> dict[str, Any]:
    """Only the size ratio, for the variant's image as a (cached) build of this tree makes it."""
    build_dir = ROOT / "out" / "cpu" / variant
    run("build", "cpu", "-V", variant, "-o", str(build_dir.parent))
    manifest = json.loads((build_dir / "manifest.json").read_text())
    numbers = {
        "image_mib": round(manifest["size_bytes"] / 2**20),
        **size_numbers(build_dir, manifest["size_bytes"]),
        "size_measured_at": now(),
    }
    # --no-prune: the builder stage's layers stay in the layer cache for the next build.
    subprocess.run(["podman", "rmi", "--no-prune", BUILDER], capture_output=True)
    return numbers


HOROVOD_KEYS = ("builder_no_cache_horovod_miss_s", "builder_no_cache_horovod_hit_s")


def measure(variant: str, horovod: bool) -> dict[str, Any]:
    """The numbers for one variant of recipes/cpu.yaml."""
    build_dir = ROOT / "out" / "cpu" / variant
    manifest = json.loads((build_dir / "manifest.json").read_text())
    numbers: dict[str, Any] = {
        "image": manifest["refs"][0],
        "cold_build_s": round(manifest["build_duration_s"]),
        "cold_build_at": manifest["built_at"],
        "image_mib": round(manifest["size_bytes"] / 2**20),
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="stack-bench-") as tmp:
        work = Path(tmp)
        numbers["cached_rebuild_s"] = run("build", "cpu", "-V", variant, "-o", str(work / "a"))
        rebuilt = json.loads((work / "a" / variant / "manifest.json").read_text())
        numbers["cached_rebuild_same_image"] = rebuilt["image_id"] == manifest["image_id"]
        recipe = pin_changed_recipe(work)
        numbers["pin_change_rebuild_s"] = run(
            "build", str(recipe), "-V", variant, "-o", str(work / "b")
        )
        pinned = json.loads((work / "b" / variant / "manifest.json").read_text())
        bench_images = [*pinned["refs"], BUILDER]
        numbers["pin_change_over_cold"] = round(
            numbers["pin_change_rebuild_s"] / numbers["cold_build_s"], 3
        )
        numbers |= size_numbers(build_dir, manifest["size_bytes"])
        if horovod:
            empty = work / "empty-wheel-cache"
            empty.mkdir()
            numbers["builder_no_cache_horovod_miss_s"] = podman_builder_stage(
                build_dir, "--no-cache", wheel_cache=empty
            )
            numbers["builder_no_cache_horovod_hit_s"] = podman_builder_stage(
                build_dir, "--no-cache"
            )
        sqsh = work / f"{variant}.sqsh"
        numbers["squashfs_export_s"] = run(
            "export", str(build_dir), "--to", "squashfs", "--output", str(sqsh)
        )
        numbers["squashfs_mib"] = round(sqsh.stat().st_size / 2**20, 1)
    subprocess.run(["podman", "rmi", *bench_images], check=False, capture_output=True)
    return numbers


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main(args: list[str]) -> None:
    horovod = "--horovod" in args
    variants = [a for a in args if not a.startswith("--")] or ["pytorch-cpu"]
    # Variants measured earlier keep their numbers (each carries its own times and load).
    earlier = json.loads(RESULTS.read_text())["variants"] if RESULTS.exists() else {}
    if "--size-only" in args:
        fresh = {v: {**earlier.get(v, {}), **measure_size(v)} for v in variants}
    else:
        fresh = {v: {**measure(v, horovod), "measured_at": now()} for v in variants}
        for v in variants:  # Horovod miss/hit times of an earlier --horovod run stay, dated
            kept = {k: earlier.get(v, {}).get(k) for k in HOROVOD_KEYS} if not horovod else {}
            if kept and all(kept.values()):
                fresh[v] |= kept | {"horovod_measured_at": earlier[v].get("measured_at")}
    results = {
        "when": now(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "variants": {**earlier, **fresh},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
