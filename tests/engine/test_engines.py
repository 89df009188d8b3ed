"""Builders: argument lists, failure reports, and real podman/buildah builds."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stackbuild.build.context import BuildSpec, BuildVolume
from stackbuild.build.docker_engine import docker_client, docker_containerfile
from stackbuild.build.engines import (
    ApptainerBuilder,
    BuildahBuilder,
    BuildError,
    BuildResult,
    DockerBuilder,
    PodmanBuilder,
    default_builder,
    failing_step,
    get_builder,
)
from stackbuild.build.images import image_exists, inspect_image
from stackbuild.errors import StackbuildError, ToolError
from tests.engine.engine_helpers import image_names

SPEC = BuildSpec(
    context_dir=Path("/ctx"),
    recipe="tensorflow",
    recipe_hash="abc",
    variant="cpu",
    repository="localhost/stackbuild/tensorflow",
    tags=("2.21-cpu",),
    base_image="localhost/stackbuild/base:bookworm-minbase",
    bootstrap=None,
    secrets={"ca_bundle": Path("/etc/ssl/ca.pem"), "pip_conf": Path("/tmp/pip.conf")},
    volumes=(
        BuildVolume("wheelhouse", Path("/opt/wheels"), "/wheelhouse", True),
        BuildVolume("wheel_cache", Path("/c/wheels"), "/cache/wheels", False),
    ),
    build_args={"PY": "3.11"},
)


@pytest.mark.parametrize("builder", [PodmanBuilder(), BuildahBuilder()])
def test_podman_and_buildah_bind_secrets_and_volumes_and_never_tag(builder) -> None:
    argv = builder.build_argv(SPEC, Path("/tmp/x/iid"), "b123")
    joined = " ".join(argv)
    assert argv[1] in ("build", "bud")
    assert "--secret id=ca_bundle,src=/etc/ssl/ca.pem" in joined
    assert "--secret id=pip_conf,src=/tmp/pip.conf" in joined
    assert "-v /opt/wheels:/wheelhouse:ro" in joined
    assert "-v /c/wheels:/cache/wheels " in joined
    assert "--iidfile /tmp/x/iid" in joined
    assert "--build-arg PY=3.11" in joined
    assert "--build-arg STACKBUILD_BUILD_ID=b123" in joined
    assert "--label org.stackbuild.recipe-hash=abc" in joined
    assert "-t" not in argv and "--tag" not in argv
    assert argv[-1] == "/ctx"


def test_docker_argv_builds_with_buildkit_and_mounts_volume_snapshots(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Containerfile").write_text(
        "FROM b\nRUN apt-get update\nRUN --mount=type=secret,id=ca_bundle \\\n    pip install x\n"
    )
    builder = DockerBuilder()
    builder.volume_images = {"wheelhouse": "img-wh", "wheel_cache": "img-wc"}
    spec = dataclasses.replace(SPEC, context_dir=context)
    argv = builder.build_argv(spec, tmp_path / "iid")
    assert argv[:2] == ["env", "DOCKER_BUILDKIT=1"] and argv[3] == "build"
    assert "--network=host" in argv and "-v" not in argv and "-t" not in argv
    assert "id=ca_bundle,src=/etc/ssl/ca.pem" in argv
    dockerfile = Path(argv[argv.index("-f") + 1]).read_text()
    # Only the pip step (it mounts the secrets) gets the volumes; rw only where podman's is.
    assert "RUN apt-get update\n" in dockerfile
    assert (
        "RUN --mount=type=bind,from=img-wh,target=/wheelhouse "
        "--mount=type=bind,from=img-wc,target=/cache/wheels,rw --mount=type=secret"
    ) in dockerfile
    assert argv[-1] == str(context)


def test_apptainer_argv_binds_volumes_and_secrets() -> None:
    argv = ApptainerBuilder().build_argv(SPEC, Path("/tmp/x/iid"))
    assert argv[:3] == ["apptainer", "build", "--force"]
    assert "/etc/ssl/ca.pem:/run/secrets/ca_bundle:ro" in argv
    assert argv[-1] == "/ctx/apptainer.def"


def test_docker_without_a_daemon_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    docker_client.cache_clear()
    try:
        with pytest.raises(ToolError, match=r"not available here \(not running") as info:
            DockerBuilder().check_available()
    finally:
        docker_client.cache_clear()
    assert "30-docker.sh" in (info.value.hint or "")


@pytest.mark.parametrize("builder", [DockerBuilder(), ApptainerBuilder()])
def test_missing_engines_say_they_are_not_available(
    builder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    with pytest.raises(ToolError, match="not available here") as info:
        builder.check_available()
    assert info.value.hint


def test_unknown_engine_lists_the_known_ones() -> None:
    with pytest.raises(StackbuildError, match="unknown engine") as info:
        get_builder("kaniko")
    assert "podman" in str(info.value)


def test_failing_step_is_found_in_buildkit_output_even_without_its_first_line() -> None:
    error = "#12 ERROR: executor failed running [/bin/sh -c sh build.sh]: exit code: 2"
    full = ["#11 [builder 6/7] COPY files/horovod /h", "#12 [builder 7/7] RUN sh build.sh", error]
    tail = ["#12 1.0 make: *** [all] Error 2", error, "------", " > [builder 7/7] RUN sh build.sh:"]
    for lines in (full, tail):
        step, why = DockerBuilder().failing_step(lines)
        assert step == "[builder 7/7] RUN sh build.sh"
        assert why.endswith("exit code: 2")


def test_docker_volume_mounts_go_only_to_the_pip_steps_of_a_containerfile() -> None:
    text = "FROM b\nRUN a \\\n  && b\nRUN --mount=type=secret,id=x \\\n  c\nCOPY x y\n"
    out = docker_containerfile(text, "--mount=type=bind,from=v,target=/c,rw")
    assert out == text.replace(
        "RUN --mount=type=secret", "RUN --mount=type=bind,from=v,target=/c,rw --mount=type=secret"
    )
    assert docker_containerfile(text, "") == text


def test_failing_step_is_found_in_podman_and_buildah_output() -> None:
    podman = [
        "STEP 1/3: FROM base",
        "STEP 2/3: RUN make",
        'Error: building at STEP "RUN make": while running runtime: exit status 2',
    ]
    assert failing_step(podman) == ("STEP 2/3: RUN make", "while running runtime: exit status 2")
    buildah = ["STEP 1/2: FROM base", "STEP 2/2: RUN x", 'error building at STEP "RUN x": boom']
    assert failing_step(buildah) == ("STEP 2/2: RUN x", "boom")
    assert failing_step(["nothing useful"]) == (None, "see the log")


# --- real builds -------------------------------------------------------------------------


def build(spec: BuildSpec, builder=None) -> BuildResult:
    return (builder or PodmanBuilder()).build(spec, log_path=spec.context_dir / "build.log")


@pytest.mark.engine
def test_failing_run_step_names_the_step_and_creates_no_tag(
    context_factory: Callable[..., BuildSpec], test_repository: str
) -> None:
    spec = context_factory(
        "RUN echo first\nRUN echo about-to-fail && exit 3\nRUN echo never\n", tags=["failing"]
    )
    with pytest.raises(BuildError) as info:
        build(spec)
    message = str(info.value)
    step = info.value.step or ""
    assert step.startswith("STEP 3/") and step.endswith(": RUN echo about-to-fail && exit 3")
    assert "about-to-fail" in message
    assert str(info.value.log_path) in message
    assert info.value.log_path.is_file()
    assert not image_exists(f"{test_repository}:failing")


@pytest.mark.engine
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_interrupted_build_creates_no_tag(
    sig: signal.Signals, context_factory: Callable[..., BuildSpec], test_repository: str
) -> None:
    tag = f"interrupted-{sig.name.lower()}"
    # SIGKILL leaves stackbuild no chance to stop the RUN step: keep that one short.
    sleep = 120 if sig == signal.SIGTERM else 6
    spec = context_factory(f"RUN echo $((6*7))-{tag} && sleep {sleep}\n", tags=[tag])
    out = spec.context_dir / "out"
    code = (
        "import sys; from stackbuild.cli import cli, main; "
        "from stackbuild.commands.build import BUILD_COMMANDS\n"
        "for c in BUILD_COMMANDS:\n    cli.commands.setdefault(c.name, c)\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "STACKBUILD_CACHE": str(spec.context_dir.parent / "cache")}
    initial_containers = _builder_containers()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "build", str(spec.context_dir), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    # Wait until the RUN step is really running (its output, not the STEP line, is logged).
    while not any(f"42-{tag}" in p.read_text() for p in out.glob("logs/*.log")):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "the build never reached its RUN step"
        time.sleep(0.2)
    ours = _builder_containers() - initial_containers
    assert ours, "the build has no working container yet"
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "no tag was created" in output
    deadline = time.monotonic() + 40
    while _run_step_alive(tag):
        assert time.monotonic() < deadline, "the RUN step kept running after the build stopped"
        time.sleep(0.5)
    if sig == signal.SIGTERM:
        assert time.monotonic() < deadline - 25, "the RUN step was not stopped promptly"
        assert not ours & _builder_containers(), "the working container was left behind"
    assert not image_exists(f"{test_repository}:{tag}")
    assert not (out / "manifest.json").exists()
    if sig == signal.SIGKILL:  # nobody was left to clean up: do it for the next run
        for container in ours & _builder_containers():
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def _builder_containers() -> set[str]:
    out = subprocess.run(
        ["buildah", "containers", "--quiet", "--notruncate"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return set(out.split())


def _run_step_alive(tag: str) -> bool:
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return any(f"-{tag} && sleep" in line for line in procs.splitlines())


@pytest.mark.engine
def test_concurrent_builds_of_one_tag_each_make_a_whole_image(
    context_factory: Callable[..., BuildSpec], test_repository: str
) -> None:
    specs = [
        context_factory(f"RUN sleep 2 && echo {who} > /who\n", tags=["shared"], name=who)
        for who in ("alpha", "beta")
    ]
    results: dict[str, BuildResult] = {}
    errors: list[BaseException] = []

    def run(spec: BuildSpec) -> None:
        try:
            results[spec.variant] = build(spec)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert results["alpha"].image_id != results["beta"].image_id
    tagged = inspect_image(f"{test_repository}:shared").id
    assert tagged in {r.image_id for r in results.values()}
    for who, result in results.items():
        out = subprocess.run(
            ["podman", "run", "--rm", result.image_id, "cat", "/who"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == who


@pytest.mark.engine
def test_wheel_cache_written_by_a_run_step_persists_on_the_host_across_builds(
    context_factory: Callable[..., BuildSpec], tmp_path: Path
) -> None:
    cache = tmp_path / "shared-wheel-cache"
    first = context_factory(
        "RUN echo one > /cache/wheels/first.whl\n", tags=["wc1"], name="wc1", wheel_cache=cache
    )
    build(first)
    second = context_factory(
        "RUN test -f /cache/wheels/first.whl && echo two > /cache/wheels/second.whl\n",
        tags=["wc2"],
        name="wc2",
        wheel_cache=cache,
    )
    result = build(second)
    assert (cache / "first.whl").read_text() == "one\n"
    assert (cache / "second.whl").read_text() == "two\n"
    inside = subprocess.run(
        ["podman", "run", "--rm", result.image_id, "ls", "-A", "/cache/wheels"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert inside.strip() == "", "cache content leaked into the image"


@pytest.mark.engine
def test_buildah_builds_and_tags_like_podman(
    context_factory: Callable[..., BuildSpec], test_repository: str
) -> None:
    spec = context_factory("RUN echo from-buildah > /who\n", tags=["buildah-a", "buildah-b"])
    result = build(spec, BuildahBuilder())
    assert result.engine == "buildah"
    assert set(image_names(test_repository)) >= set(spec.image_refs)
    assert inspect_image(f"{test_repository}:buildah-b").id == result.image_id


@pytest.mark.engine
def test_the_default_builder_is_one_that_works_here() -> None:
    builder = default_builder()
    builder.check_available()
    assert builder.name in ("podman", "buildah")  # docker and apptainer are not installed here
