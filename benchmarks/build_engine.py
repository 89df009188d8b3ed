"""Benchmark the engine layer on this machine: base import, tiny builds, exports.

Run as root after scripts/setup-host.sh:  .venv/bin/python benchmarks/build_engine.py
Writes benchmarks/results/build_engine.json. Tiny images on the minbase base only.
"""

from __future__ import annotations

import json
import platform
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackbuild.build.base import ensure_base_image, import_rootfs
from stackbuild.build.context import load_build_spec
from stackbuild.build.engines import BuildahBuilder, PodmanBuilder
from stackbuild.build.export import export_image
from stackbuild.build.images import remove_image

RESULTS = Path(__file__).resolve().parent / "results" / "build_engine.json"


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of fn takes."""
    start = time.monotonic()
    fn()
    return round(time.monotonic() - start, 2)


def tiny_context(folder: Path, base: str, repo: str, tag: str, stamp: str) -> Path:
    """A two-step context with secrets and build volumes, as the renderer writes it."""
    folder.mkdir(parents=True)
    secret = folder / "pip.conf"
    secret.write_text("[global]\n")
    (folder / "Containerfile").write_text(
        f"FROM {base}\n"
        "RUN --mount=type=secret,id=pip_conf,target=/etc/pip.conf "
        f"cat /etc/pip.conf > /dev/null && echo {stamp} > /cache/wheels/{stamp}\n"
        f"RUN echo {stamp} > /stamp\n"
    )
    variant = {
        "recipe": "bench",
        "recipe_hash": "0",
        "variant": tag,
        "image": {"repository": repo, "tags": [tag]},
        "base": {"image": base, "bootstrap": None},
        "build": {
            "secrets": {"ca_bundle": None, "pip_conf": str(secret)},
            "volumes": {"wheel_cache": {"host": str(folder / "wheels"), "target": "/cache/wheels"}},
        },
    }
    (folder / "variant.json").write_text(json.dumps(variant))
    return folder


def main() -> None:
    """Run every measurement once and write the results."""
    work = Path(tempfile.mkdtemp(prefix="stackbuild-bench-"))
    base = ensure_base_image().ref
    repo = f"localhost/stackbuild-bench/b{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}",
        "podman": subprocess.run(
            ["podman", "--version"], capture_output=True, text=True
        ).stdout.strip(),
    }
    tarball = work / "rootfs.tar"
    cid = subprocess.run(
        ["podman", "create", base, "true"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["podman", "export", "-o", str(tarball), cid], check=True)
    subprocess.run(["podman", "rm", cid], capture_output=True, check=False)
    ref = f"{repo}-base:import"
    results["base_import_from_tarball_s"] = timed(
        lambda: import_rootfs(tarball, ref, "bookworm", "minbase")
    )
    remove_image(ref)
    stamp = uuid.uuid4().hex
    for name, builder in (("podman", PodmanBuilder()), ("buildah", BuildahBuilder())):
        spec = load_build_spec(tiny_context(work / name, base, repo, name, f"{name}{stamp}"))
        log = work / f"{name}.log"
        results[f"{name}_tiny_build_cold_s"] = timed(
            lambda b=builder, s=spec, lg=log: b.build(s, log_path=lg)
        )
        results[f"{name}_tiny_build_cached_s"] = timed(
            lambda b=builder, s=spec, lg=log: b.build(s, log_path=lg)
        )
    image = f"{repo}:podman"
    for fmt, suffix in (("squashfs", "sqsh"), ("oci-archive", "tar")):
        out = work / f"image.{suffix}"
        results[f"export_{fmt}_s"] = timed(lambda f=fmt, o=out: export_image(image, f, o))
        results[f"export_{fmt}_mib"] = round(out.stat().st_size / 2**20, 1)
    for tag in ("podman", "buildah"):
        remove_image(f"{repo}:{tag}")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
