"""Builders: one class per engine that turns a BuildSpec into an image with its real tags.

Every build writes to a throwaway --iidfile and carries no tag; the real tags are added
only after the engine succeeded, so a failed, partial or interrupted build never leaves
a tag behind, and two concurrent builds of the same tag each produce a whole image.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from stackbuild.build.context import BuildSpec
from stackbuild.build.docker_engine import (
    check_docker,
    docker_cli,
    docker_containerfile,
    keep_compiled_wheels,
    tag_docker_image,
    volume_image,
    volume_mounts,
)
from stackbuild.errors import StackbuildError, ToolError
from stackbuild.tools import find_tool, run_tool, stream_tool

#: A build argument unique to each build: it tags the engine's working containers, so an
#: interrupted build can remove exactly its own. Unused by Containerfiles (cache unaffected).
BUILD_ID_ARG = "STACKBUILD_BUILD_ID"
FAILED_STEP = re.compile(r'building at STEP "(?P<step>.*)": (?P<why>.*)$')
STEP_LINE = re.compile(r"^STEP (?P<index>\d+/\d+): (?P<text>.*)$")


class BuildError(ToolError):
    """A build failed: names the failing step, the last log lines and the log file."""

    def __init__(self, message: str, *, step: str | None, tail: str, log_path: Path) -> None:
        super().__init__(
            f"{message}\n--- last lines of the build log ---\n{tail}\n--- full log: {log_path}",
            hint="fix the step in the recipe or template, re-render, and build again",
        )
        self.step = step
        self.log_path = log_path


class BuildInterrupted(StackbuildError):
    """The build was stopped (Ctrl-C / SIGTERM) before it finished; nothing was tagged."""

    exit_code = 130


@dataclass(frozen=True)
class BuildResult:
    """A finished, tagged build."""

    image_id: str
    refs: tuple[str, ...]
    engine: str
    duration_s: float
    log_path: Path


class Builder(ABC):
    """One container engine: builds the argument list, runs it, tags on success."""

    name: ClassVar[str]
    tool: ClassVar[str]

    def check_available(self) -> None:
        """Raise a ToolError naming the fix if this engine cannot run here."""
        find_tool(self.tool)

    @abstractmethod
    def build_argv(self, spec: BuildSpec, iidfile: Path, build_id: str = "") -> list[str]:
        """The engine command that builds spec and writes the image ID to iidfile."""

    def remove_leftovers(self, build_id: str) -> None:
        """Remove what an interrupted build left behind (nothing by default)."""
        return None  # docker and apptainer clean up after themselves

    def tag_argv(self, image_id: str, refs: list[str]) -> list[str]:
        """The command that gives a built image its tags."""
        return [self.tool, "tag", image_id, *refs]

    def tag(self, image_id: str, refs: list[str]) -> None:
        """Give a built image its tags."""
        run_tool(self.tag_argv(image_id, refs))

    def failing_step(self, lines: list[str]) -> tuple[str | None, str]:
        """The step that failed and why, from the build output."""
        return failing_step(lines)

    def build(
        self,
        spec: BuildSpec,
        *,
        log_path: Path,
        on_line: Callable[[str], None] | None = None,
    ) -> BuildResult:
        """Build spec, then tag it; raise BuildError or BuildInterrupted with no tag made."""
        self.check_available()
        workdir = Path(tempfile.mkdtemp(prefix="stackbuild-build-"))
        iidfile = workdir / "image-id"
        build_id = uuid.uuid4().hex
        started = time.monotonic()
        try:
            try:
                result = stream_tool(
                    self.build_argv(spec, iidfile, build_id), log_path=log_path, on_line=on_line
                )
            except KeyboardInterrupt:
                self.remove_leftovers(build_id)
                raise BuildInterrupted(
                    f"build of {', '.join(spec.image_refs)} was interrupted; no tag was created",
                    hint=f"run the build again; the partial log is {log_path}",
                ) from None
            if not result.ok or not iidfile.is_file():
                step, why = self.failing_step(result.stdout.splitlines())
                where = f" at {step}" if step else ""
                raise BuildError(
                    f"{self.name} build of {spec.image_refs[0]} failed{where} ({why})",
                    step=step,
                    tail="\n".join(result.stdout.splitlines()[-25:]),
                    log_path=log_path,
                )
            image_id = iidfile.read_text(encoding="utf-8").strip().removeprefix("sha256:")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.tag(image_id, spec.image_refs)
        return BuildResult(
            image_id=image_id,
            refs=tuple(spec.image_refs),
            engine=self.name,
            duration_s=round(time.monotonic() - started, 2),
            log_path=log_path,
        )


def failing_step(lines: list[str]) -> tuple[str | None, str]:
    """From build output: ('STEP i/n: INSTRUCTION', reason) of the step that failed."""
    last_step: str | None = None
    last_index: str | None = None
    why = "see the log"
    for line in lines:
        step = STEP_LINE.match(line)
        if step:
            last_index, last_step = step["index"], step["text"]
        failed = FAILED_STEP.search(line)
        if failed:
            why = failed["why"].strip()
            last_step = failed["step"]
    if last_step is None:
        return None, why
    prefix = f"STEP {last_index}: " if last_index else ""
    return prefix + last_step, why


class PodmanBuilder(Builder):
    """podman build (layers cached; secrets and build volumes for RUN steps only)."""

    name = "podman"
    tool = "podman"

    def build_argv(self, spec: BuildSpec, iidfile: Path, build_id: str = "") -> list[str]:
        """podman build --iidfile ... (no -t: tags are added after success)."""
        return [self.tool, "build", "--layers", *_common_build_options(spec, iidfile, build_id)]

    def remove_leftovers(self, build_id: str) -> None:
        """Remove this build's working containers (podman leaves them when stopped)."""
        remove_working_containers(build_id)


class BuildahBuilder(Builder):
    """buildah bud, with the same options as podman (they share the image store)."""

    name = "buildah"
    tool = "buildah"

    def build_argv(self, spec: BuildSpec, iidfile: Path, build_id: str = "") -> list[str]:
        """buildah bud --iidfile ... (no -t: tags are added after success)."""
        return [self.tool, "bud", "--layers", *_common_build_options(spec, iidfile, build_id)]

    def remove_leftovers(self, build_id: str) -> None:
        """Remove this build's working containers (buildah leaves them when stopped)."""
        remove_working_containers(build_id)


def _common_build_options(spec: BuildSpec, iidfile: Path, build_id: str) -> list[str]:
    """Options podman build and buildah bud share."""
    argv = ["--pull=missing", "--iidfile", str(iidfile), "-f", str(spec.containerfile)]
    if build_id:
        argv += ["--build-arg", f"{BUILD_ID_ARG}={build_id}"]
    for secret_id, path in sorted(spec.secrets.items()):
        argv += ["--secret", f"id={secret_id},src={path}"]
    for volume in spec.volumes:
        argv += ["-v", f"{volume.host}:{volume.target}" + (":ro" if volume.read_only else "")]
    for key, value in sorted(spec.build_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in sorted(spec.labels.items()):
        argv += ["--label", f"{key}={value}"]
    return [*argv, str(spec.context_dir)]


class DockerBuilder(Builder):
    """docker build with BuildKit (Debian's docker.io 20.10 has no buildx: the CLI builds).

    Images, tags and the base image go through the `docker` Python package
    (stackbuild/build/docker_engine.py); the build itself through the CLI, because BuildKit's
    secrets and RUN --mount need the CLI's session with the daemon. podman's build volumes
    become bind mounts of local snapshot images (docker_engine.volume_image).
    """

    name = "docker"
    tool = "docker"

    def __init__(self) -> None:
        self.volume_images: dict[str, str] = {}

    def check_available(self) -> None:
        """The daemon answers and the CLI builds with BuildKit."""
        check_docker()

    def build(
        self,
        spec: BuildSpec,
        *,
        log_path: Path,
        on_line: Callable[[str], None] | None = None,
    ) -> BuildResult:
        """Snapshot the build volumes into local images, then build as every engine does."""
        self.check_available()
        log_path.parent.mkdir(parents=True, exist_ok=True)

        def say(message: str) -> None:
            with log_path.open("a", encoding="utf-8") as log:
                log.write(f"[stackbuild] {message}\n")
            if on_line is not None:
                on_line(message)

        self.volume_images = {v.name: volume_image(spec, v, say) for v in spec.volumes}
        result = super().build(spec, log_path=log_path, on_line=on_line)
        keep_compiled_wheels(spec, result.image_id, say)
        return result

    def build_argv(self, spec: BuildSpec, iidfile: Path, build_id: str = "") -> list[str]:
        """env DOCKER_BUILDKIT=1 docker build --iidfile ... -f <Containerfile with mounts>."""
        containerfile = iidfile.with_name("Containerfile.docker")
        mounts = volume_mounts(self.volume_images, spec.volumes) if spec.volumes else ""
        text = spec.containerfile.read_text(encoding="utf-8")
        containerfile.write_text(docker_containerfile(text, mounts), encoding="utf-8")
        # Host networking: dockerd runs with --bridge=none here (no bridge, no iptables).
        argv = ["env", "DOCKER_BUILDKIT=1", docker_cli(), "build", "--progress=plain"]
        argv += ["--network=host", "--iidfile", str(iidfile), "-f", str(containerfile)]
        if build_id:
            argv += ["--build-arg", f"{BUILD_ID_ARG}={build_id}"]
        for secret_id, path in sorted(spec.secrets.items()):
            argv += ["--secret", f"id={secret_id},src={path}"]
        for key, value in sorted(spec.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        for key, value in sorted(spec.labels.items()):
            argv += ["--label", f"{key}={value}"]
        return [*argv, str(spec.context_dir)]

    def tag(self, image_id: str, refs: list[str]) -> None:
        """Tag through the Python package (no CLI version question)."""
        tag_docker_image(image_id, refs)

    def failing_step(self, lines: list[str]) -> tuple[str | None, str]:
        """From BuildKit's plain progress: ('[stage i/n] INSTRUCTION', reason) that failed."""
        steps: dict[str, str] = {}
        failed: tuple[str | None, str] = (None, "see the log")
        for line in lines:
            step = BUILDKIT_STEP.match(line)
            if step:
                steps[step["id"]] = step["text"]
            error = BUILDKIT_ERROR.match(line)
            if error and failed[0] is None:
                failed = (steps.get(error["id"]), error["why"].strip())
            # The summary repeats the step (` > [builder 7/9] RUN ...:`), for long step logs
            # whose first line is no longer in the tail.
            summary = BUILDKIT_SUMMARY.match(line)
            if summary and failed[0] is None:
                failed = (summary["text"], failed[1])
        return failed


#: BuildKit's plain progress: `#12 [runtime 3/9] RUN ...` and `#12 ERROR: executor failed ...`.
BUILDKIT_STEP = re.compile(r"^#(?P<id>\d+) (?P<text>\[[^\]]+\] .*)$")
BUILDKIT_ERROR = re.compile(r"^#(?P<id>\d+) ERROR: (?P<why>.*)$")
BUILDKIT_SUMMARY = re.compile(r"^ > (?P<text>\[[^\]]+\] .*):$")


class ApptainerBuilder(Builder):
    """apptainer build of <context>/apptainer.def into a SIF; argv only (not installed here)."""

    name = "apptainer"
    tool = "apptainer"
    definition_file: ClassVar[str] = "apptainer.def"

    def check_available(self) -> None:
        """Apptainer is not packaged for Debian 12: say so and name the fix."""
        if shutil.which(self.tool) is None:
            raise ToolError(
                "apptainer is not available here",
                hint="build with --builder podman and convert with `stackbuild export --to sif` "
                "on a machine with Apptainer (https://apptainer.org/docs/admin/main/installation.html)",
            )

    def build_argv(self, spec: BuildSpec, iidfile: Path, build_id: str = "") -> list[str]:
        """apptainer build --bind ... OUT.sif apptainer.def (the SIF lands beside iidfile)."""
        argv = [self.tool, "build", "--force"]
        for volume in spec.volumes:
            mode = ":ro" if volume.read_only else ""
            argv += ["--bind", f"{volume.host}:{volume.target}{mode}"]
        for secret_id, path in sorted(spec.secrets.items()):
            argv += ["--bind", f"{path}:/run/secrets/{secret_id}:ro"]
        # apptainer.def's {{ SOURCE_REVISION }} (its revision label) and other build args.
        for key, value in sorted(spec.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        sif = iidfile.with_name(f"{spec.variant}.sif")
        return [*argv, str(sif), str(spec.context_dir / self.definition_file)]


def remove_working_containers(build_id: str) -> list[str]:
    """Remove the builder containers whose build args carry build_id; return their IDs.

    Reads buildah's per-container state (buildah.json in the shared store), because
    neither podman 4.3 nor buildah 1.28 show a working container's build args.
    """
    removed: list[str] = []
    info = run_tool(
        ["podman", "info", "--format", "{{.Store.GraphRoot}} {{.Store.GraphDriverName}}"],
        check=False,
    )
    listing = run_tool(["buildah", "containers", "--json"], check=False) if info.ok else None
    if listing is None or not listing.ok:
        return removed
    root, driver = info.stdout.split()
    for container in json.loads(listing.stdout or "[]"):
        state = Path(root, f"{driver}-containers", container["id"], "userdata", "buildah.json")
        with contextlib.suppress(OSError, ValueError):
            args = json.loads(state.read_text(encoding="utf-8")).get("Args") or {}
            if args.get(BUILD_ID_ARG) == build_id:
                run_tool(["buildah", "rm", container["id"]], check=False)
                removed.append(container["id"])
    return removed


BUILDERS: dict[str, type[Builder]] = {
    cls.name: cls for cls in (PodmanBuilder, BuildahBuilder, DockerBuilder, ApptainerBuilder)
}


def get_builder(name: str) -> Builder:
    """The builder for an engine name, or an error listing the known ones."""
    try:
        return BUILDERS[name]()
    except KeyError:
        raise StackbuildError(
            f"unknown engine {name!r}", hint=f"choose one of: {', '.join(BUILDERS)}"
        ) from None


def default_builder() -> Builder:
    """The first engine, in BUILDERS order, that can build here; else podman's own error."""
    for cls in BUILDERS.values():
        builder = cls()
        try:
            builder.check_available()
        except StackbuildError:
            continue
        return builder
    builder = PodmanBuilder()
    builder.check_available()
    return builder
