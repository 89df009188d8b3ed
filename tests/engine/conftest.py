"""Fixtures for the container-engine tests: tiny build contexts, a built image, a registry."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stackbuild.build.context import BuildSpec, load_build_spec
from stackbuild.build.engines import PodmanBuilder
from stackbuild.build.manifest import build_manifest, write_manifest
from tests.engine.engine_helpers import (
    TEST_RECIPE,
    TINY_CONTAINERFILE,
    TinyBuild,
    free_port,
    plant_secrets,
    write_context,
)


@pytest.fixture(scope="session")
def test_repository() -> Iterator[str]:
    """A repository name unique to this test session; every image in it is removed after."""
    repo = f"localhost/stackbuild-test/t{uuid.uuid4().hex[:10]}"
    yield repo
    if shutil.which("podman") is None:
        return
    names = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", repo],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    # Also the untagged ones (e.g. the loser of the concurrent-build test), found by label.
    names += subprocess.run(
        ["podman", "images", "-q", "--filter", f"label=org.stackbuild.recipe={TEST_RECIPE}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    for name in dict.fromkeys(names):
        subprocess.run(["podman", "rmi", "--force", name], capture_output=True, check=False)


@pytest.fixture(scope="session")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(scope="session")
def tiny_build(base_image: str, test_repository: str, build_root: Path) -> TinyBuild:
    """One tiny image built with podman, shared by the manifest/secret/export/publish tests."""
    planted = plant_secrets(build_root / "secrets")
    wheel_cache = build_root / "wheel-cache"
    wheel_cache.mkdir()
    context = write_context(
        build_root / "tiny",
        TINY_CONTAINERFILE.format(base=base_image, stamp=uuid.uuid4().hex),
        repository=test_repository,
        tags=["tiny", "tiny-extra"],
        base=base_image,
        planted=planted,
        wheel_cache=wheel_cache,
    )
    spec = load_build_spec(context, cache=build_root / "cache")
    out = build_root / "tiny-out"
    result = PodmanBuilder().build(spec, log_path=out / "build.log")
    manifest = build_manifest(spec, result)
    write_manifest(manifest, out)
    return TinyBuild(spec, result, out, manifest, planted, wheel_cache)


@pytest.fixture
def context_factory(
    base_image: str, test_repository: str, tmp_path: Path
) -> Callable[..., BuildSpec]:
    """make(containerfile_body, tags=[...]) -> BuildSpec for a new context in tmp_path."""

    def make(body: str, tags: list[str], name: str = "ctx", wheel_cache: Path | None = None):
        planted = plant_secrets(tmp_path / "secrets")
        cache = wheel_cache or tmp_path / "wheel-cache"
        cache.mkdir(exist_ok=True)
        context = write_context(
            tmp_path / name,
            f"FROM {base_image}\n{body}",
            repository=test_repository,
            tags=tags,
            base=base_image,
            planted=planted,
            wheel_cache=cache,
        )
        return load_build_spec(context, cache=tmp_path / "cache")

    return make


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """Debian's docker-registry on a loopback port: yields HOST:PORT (plain HTTP)."""
    exe = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(exe).exists():
        pytest.skip("docker-registry not installed (scripts/setup-host.sh)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry-data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (tmp_path / "registry.log").open("w")
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start; see {log.name}") from None
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
