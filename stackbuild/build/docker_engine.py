"""The Docker engine adapter: the daemon's images and containers through the `docker` Python
package, builds through the docker CLI (BuildKit), and what BuildKit lacks compared with
podman: build volumes, and a base image that is not pulled from a registry.

Why the CLI for builds: BuildKit's build secrets and RUN --mount need the CLI's gRPC session
with the daemon (it serves the context, the Dockerfile and the secrets); the Python package
only speaks the legacy builder API, which has neither.

Which CLI: $STACKBUILD_DOCKER, else Debian's /usr/bin/docker, the same version as its
dockerd (20.10), whose `docker build` has BuildKit built in. A newer static client elsewhere
on PATH (a 28.x in /usr/local/bin on some machines) talks to the same daemon by API
negotiation for run and inspect, but its `docker build` needs the buildx plugin, which
Debian 12 does not ship.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackbuild.build.base import bootstrap_tarball, rootfs_tarball
from stackbuild.build.hostconfig import apt_mirror
from stackbuild.build.images import LocalImage
from stackbuild.errors import StackbuildError, ToolError
from stackbuild.tools import run_tool

if TYPE_CHECKING:
    import docker

    from stackbuild.build.context import BuildSpec, BuildVolume

CLI_ENV = "STACKBUILD_DOCKER"
PACKAGED_CLI = Path("/usr/bin/docker")
START_HINT = "start the Docker engine: bash scripts/setup.d/30-docker.sh (as root)"
#: Snapshots of build volumes, one image per volume content (see `volume_images`).
VOLUME_REPOSITORY = "localhost/stackbuild/build-volume"
#: A RUN instruction at the start of a line (continuation lines never start with one here).
RUN_LINE = re.compile(r"^RUN(?=\s)")


def docker_cli() -> str:
    """The docker client that builds (see the module docstring for the order)."""
    chosen = os.environ.get(CLI_ENV)
    if chosen:
        return chosen
    if PACKAGED_CLI.is_file() and os.access(PACKAGED_CLI, os.X_OK):
        return str(PACKAGED_CLI)
    return shutil.which("docker") or "docker"


@cache
def docker_client() -> docker.DockerClient:
    """A client of the local daemon (API version negotiated), or an error naming the fix."""
    try:
        import docker
    except ImportError as exc:
        raise ToolError(
            "the docker Python package is not installed", hint="pip install docker"
        ) from exc
    try:
        client = docker.from_env(version="auto", timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        raise ToolError(
            f"the Docker engine is not available here (not running: {exc})", hint=START_HINT
        ) from exc
    return client


def check_docker() -> None:
    """The daemon answers and the build CLI builds with BuildKit; else a ToolError with the fix."""
    docker_client()
    cli = docker_cli()
    if shutil.which(cli) is None:
        raise ToolError(
            f"the Docker engine is not available here (no client {cli})", hint=START_HINT
        )
    probe = run_tool(
        [cli, "build", "--help"],
        check=False,
        timeout=30,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )
    if not probe.ok:
        raise ToolError(
            f"the Docker engine is not available here: {cli} cannot build with BuildKit "
            f"({probe.tail(1)})",
            hint=f"install Debian's docker.io (its client has BuildKit built in), or the buildx "
            f"plugin for this client, or point ${CLI_ENV} at a client that builds",
        )


def docker_image_exists(ref: str) -> bool:
    """True if ref (name:tag or ID) is in Docker's image store."""
    import docker

    try:
        docker_client().images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def inspect_docker_image(ref: str) -> LocalImage:
    """What Docker's store knows about one image (digest: its first RepoDigest, if pushed)."""
    import docker

    try:
        attrs: dict[str, Any] = docker_client().images.get(ref).attrs
    except docker.errors.ImageNotFound:
        raise StackbuildError(
            f"image {ref!r} is not in Docker's image store",
            hint="list images with `docker images`; build with `stackbuild build --engine docker`",
        ) from None
    repo_digests = attrs.get("RepoDigests") or []
    return LocalImage(
        id=str(attrs["Id"]).removeprefix("sha256:"),
        digest=str(repo_digests[0]).rpartition("@")[2] if repo_digests else "",
        names=tuple(attrs.get("RepoTags") or ()),
        size=int(attrs.get("Size") or 0),
        created=str(attrs.get("Created") or ""),
        labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
    )


def tag_docker_image(image_id: str, refs: list[str]) -> None:
    """Give an image in Docker's store its tags."""
    image = docker_client().images.get(image_id)
    for ref in refs:
        repository, _, tag = ref.rpartition(":")
        if not repository or "/" in tag:  # no tag given: docker's default
            repository, tag = ref, "latest"
        if not image.tag(repository, tag):
            raise ToolError(f"docker could not tag {image_id[:12]} as {ref}")


def run_in_docker_image(image: str, script: str) -> str | None:
    """Run a shell snippet in a throwaway container without network; None if it failed."""
    import docker

    try:
        out = docker_client().containers.run(
            image, ["-c", script], entrypoint="/bin/sh", network_mode="none", remove=True
        )
    except docker.errors.DockerException:
        return None
    return out.decode("utf-8", errors="replace") if isinstance(out, bytes) else None


def ensure_docker_bases(spec: BuildSpec, say: Callable[[str], None]) -> None:
    """Every FROM image is in Docker's store: import the debootstrapped rootfs, no registry."""
    for ref in spec.base_images:
        if docker_image_exists(ref):
            continue
        if spec.bootstrap is None or ref != spec.base_image:
            raise StackbuildError(
                f"base image {ref} is not in Docker's image store (and no registry is used)",
                hint=f"podman save {ref} | docker load; or give the recipe base.bootstrap",
            )
        boot = spec.bootstrap
        tarball = rootfs_tarball(boot.suite, boot.variant)
        if not tarball.is_file():
            mirror = boot.mirror or apt_mirror(boot.suite)
            say(f"debootstrap --variant={boot.variant} {boot.suite} from {mirror} (about a minute)")
            bootstrap_tarball(boot.suite, boot.variant, mirror, tarball)
        say(f"importing {tarball} into Docker as {ref}")
        import_docker_rootfs(tarball, ref, boot.suite, boot.variant)


def import_docker_rootfs(tarball: Path, ref: str, suite: str, variant: str) -> None:
    """docker import a rootfs tarball as ref, with the same CMD, PATH and label as podman's."""
    changes = [
        'CMD ["/bin/bash"]',
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"LABEL org.stackbuild.base={suite}-{variant}",
    ]
    _import(tarball, ref, changes)


def _import(tarball: Path, ref: str, changes: list[str] | None = None) -> None:
    """docker import tarball as ref (streamed from the file), or a ToolError saying why not."""
    import docker

    repository, _, tag = ref.rpartition(":")
    try:
        docker_client().api.import_image_from_file(
            str(tarball), repository=repository, tag=tag, changes=changes
        )
    except docker.errors.DockerException as exc:
        raise ToolError(f"docker import of {tarball} as {ref} failed: {exc}") from exc
    if not docker_image_exists(ref):
        raise ToolError(f"docker import of {tarball} did not create {ref}")


# --- build volumes ------------------------------------------------------------------------
# podman binds host folders into every RUN step (-v); BuildKit cannot bind host folders at
# all. Its nearest form is `RUN --mount=type=bind,from=IMAGE,target=...,rw`: each volume's
# host folder goes into a local image (no registry), mounted read-write with the writes
# thrown away after the step. So a Docker build reads the same wheelhouse, download cache and
# compiled Horovod wheels as podman's; a wheel it compiled is copied out of the built image
# afterwards (`keep_compiled_wheels`), new downloads stay in Docker's layer cache only.
# BuildKit keys a step by its mounts' content, so a snapshot holds only what this variant
# reads, and an unchanged one is reused by name: the steps stay cached until it changes.


def volume_paths(spec: BuildSpec, volume: BuildVolume) -> list[str] | None:
    """The paths below volume.host this variant's build reads; None: all of it."""
    if volume.name == "wheel_cache":
        try:
            data = json.loads((spec.context_dir / "variant.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        key = data.get("horovod_cache_key")
        return [f"horovod-{key}"] if isinstance(key, str) and key else None
    if volume.name == "pip_cache":
        # pip-env.sh names this variant's download folder: <target>/downloads/<key>.
        pip_env = spec.context_dir / "files" / "pip-env.sh"
        text = pip_env.read_text(encoding="utf-8") if pip_env.is_file() else ""
        pattern = re.escape(volume.target.rstrip("/")) + r"/(downloads/[0-9a-f]+)"
        return sorted(set(re.findall(pattern, text))) or None
    return None


def _files(host: Path, paths: list[str] | None) -> Iterator[Path]:
    """Every file and folder to snapshot, in a stable order."""
    if paths is None:
        yield from sorted(host.rglob("*"))
        return
    for top in (host / p for p in paths):
        if not top.exists():
            continue
        yield top
        if top.is_dir():
            yield from sorted(top.rglob("*"))


def volume_image(spec: BuildSpec, volume: BuildVolume, say: Callable[[str], None]) -> str:
    """The local image holding what the build reads of volume's host folder (made if new)."""
    paths = volume_paths(spec, volume)
    listing = hashlib.sha256(volume.name.encode())
    entries = list(_files(volume.host, paths))
    for path in entries:
        info = path.lstat()
        rel = path.relative_to(volume.host).as_posix()
        listing.update(f"{rel}\0{info.st_mode}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    ref = f"{VOLUME_REPOSITORY}:{volume.name}-{listing.hexdigest()[:16]}"
    if docker_image_exists(ref):
        return ref
    size = sum(p.lstat().st_size for p in entries if p.is_file())
    say(f"snapshot of build volume {volume.name} ({volume.host}, {size / 2**20:.0f} MiB) -> {ref}")
    fd, name = tempfile.mkstemp(prefix="stackbuild-volume-", suffix=".tar", dir=_scratch())
    os.close(fd)
    try:
        with tarfile.open(name, "w") as tar:
            # Leading folders first, so the mount shows the same tree as the host folder.
            tar.add(volume.host, arcname=".", recursive=False)
            for top in paths or []:
                parts = Path(top).parts
                for depth in range(1, len(parts)):
                    parent = volume.host.joinpath(*parts[:depth])
                    if parent.is_dir():
                        tar.add(parent, arcname="./" + "/".join(parts[:depth]), recursive=False)
            for path in entries:
                arcname = "./" + path.relative_to(volume.host).as_posix()
                tar.add(path, arcname=arcname, recursive=False)
        _import(Path(name), ref)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
    return ref


def keep_compiled_wheels(spec: BuildSpec, image_id: str, say: Callable[[str], None]) -> None:
    """Put the image's Horovod wheel into the host's wheel cache, as podman's build would.

    BuildKit threw away what the build wrote to /cache/wheels; the runtime stage keeps the
    wheel it installed (/opt/stackbuild/wheels), so it is copied out of the built image.
    Written as build-horovod.sh writes it: a temporary folder renamed into place.
    """
    import docker

    volume = next((v for v in spec.volumes if v.name == "wheel_cache"), None)
    paths = volume_paths(spec, volume) if volume is not None else None
    if volume is None or volume.read_only or not paths:
        return
    target = volume.host / paths[0]
    if target.exists():
        return
    container = docker_client().containers.create(image_id, entrypoint="/bin/true")
    try:
        stream, _stat = container.get_archive("/opt/stackbuild/wheels")
        with tempfile.TemporaryFile(dir=_scratch()) as raw:
            for chunk in stream:
                raw.write(chunk)
            raw.seek(0)
            with tarfile.open(fileobj=raw) as tar:
                wheels = [
                    m
                    for m in tar.getmembers()
                    if re.fullmatch(r"wheels/horovod-[^/]+\.whl", m.name)
                ]
                if len(wheels) != 1:
                    return  # not an image of our Horovod stage
                partial = target.with_name(f"{target.name}.tmp.{os.getpid()}")
                partial.mkdir(parents=True)
                source = tar.extractfile(wheels[0])
                assert source is not None
                (partial / Path(wheels[0].name).name).write_bytes(source.read())
        partial.rename(target)
        say(f"kept the compiled Horovod wheel in {target}")
    except (docker.errors.DockerException, OSError, tarfile.TarError) as exc:
        say(f"could not keep the Horovod wheel in {target}: {exc}")
    finally:
        container.remove(force=True)


def volume_mounts(images: dict[str, str], volumes: tuple[BuildVolume, ...]) -> str:
    """The RUN --mount options that stand in for podman's -v build volumes."""
    mode = {True: "", False: ",rw"}
    return " ".join(
        f"--mount=type=bind,from={images[v.name]},target={v.target}{mode[v.read_only]}"
        for v in volumes
    )


def docker_containerfile(text: str, mounts: str) -> str:
    """The Containerfile with the volume mounts added to every RUN step that runs pip.

    Those steps are the ones that mount the build secrets (pip's CA bundle and pip.conf):
    giving the other steps the volumes too would make their cache keys depend on the
    caches' content, and every apt step would rerun whenever a download was added.
    """
    if not mounts:
        return text
    out: list[str] = []
    instruction: list[str] = []
    for line in text.splitlines(keepends=True):
        instruction.append(line)
        if line.rstrip("\n").endswith("\\"):
            continue  # the instruction goes on on the next line
        if RUN_LINE.match(instruction[0]) and "--mount=type=secret" in "".join(instruction):
            instruction[0] = RUN_LINE.sub(f"RUN {mounts}", instruction[0], count=1)
        out.extend(instruction)
        instruction = []
    return "".join(out + instruction)


def _scratch() -> str:
    """A disk-backed temp directory for snapshots (hundreds of MB)."""
    return "/var/tmp" if Path("/var/tmp").is_dir() else tempfile.gettempdir()


def relabel_docker_image(image_id: str, labels: dict[str, str]) -> str:
    """A new image in Docker's store with image_id's layers and these labels added; its id.

    A `FROM image_id` + LABEL build: metadata only, no new layer, no network.
    """
    import docker

    lines = [
        f"FROM {image_id}",
        *(f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels.items()),
    ]
    try:
        image, _logs = docker_client().images.build(
            fileobj=io.BytesIO(("\n".join(lines) + "\n").encode()), pull=False, rm=True
        )
    except docker.errors.DockerException as exc:
        raise ToolError(f"docker could not relabel {image_id[:12]}: {exc}") from exc
    return str(image.id).removeprefix("sha256:")


def push_docker_image(
    image_id: str,
    dest: str,
    *,
    permanent: re.Pattern[str],
    attempts: int,
    backoff_s: float,
    say: Callable[[str], None],
) -> str:
    """Push image_id as dest through dockerd; the manifest digest the registry stored.

    dockerd decides TLS itself (its insecure-registries; loopback registries are insecure by
    default). The push needs dest as a local tag, which is removed again afterwards.
    """
    import docker

    client = docker_client()
    repository, _, tag = dest.rpartition(":")
    client.images.get(image_id).tag(repository, tag)
    error = ""
    attempt = 0
    try:
        for attempt in range(1, max(1, attempts) + 1):
            digest, error = "", ""
            try:
                for event in client.api.push(repository, tag=tag, stream=True, decode=True):
                    if event.get("error"):
                        error = str(event["error"])
                    digest = str((event.get("aux") or {}).get("Digest") or digest)
            except docker.errors.DockerException as exc:
                error = str(exc)
            if digest and not error:
                return digest
            error = error or "the push ended without a digest"
            if permanent.search(error):
                break
            if attempt < attempts:
                delay = backoff_s * 2 ** (attempt - 1)
                say(f"push to {dest} failed (try {attempt}/{attempts}); retrying in {delay:g} s")
                time.sleep(delay)
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            client.images.remove(dest, noprune=True)
    hint = "check that the registry is up and reachable, then publish again"
    if "HTTP response to HTTPS client" in error:
        hint = (
            "the registry speaks plain HTTP: add it to dockerd's insecure-registries "
            "(/etc/docker/daemon.json), then publish again"
        )
    raise ToolError(f"could not push {dest} after {attempt} tries: {error}", hint=hint)


def save_docker_image(image_id: str, refs: tuple[str, ...], output: Path) -> None:
    """`docker save` of image_id under its first tag that still names it (a docker-archive,
    what `docker load` and Apptainer's `Bootstrap: docker-archive` read), written atomically."""
    import docker

    client = docker_client()
    partial = output.with_name(f".{output.name}.partial")
    try:
        image = client.images.get(image_id)
        named = next((ref for ref in refs if ref in (image.tags or [])), False)
        with partial.open("wb") as out:
            for chunk in image.save(named=named):
                out.write(chunk)
        partial.replace(output)
    except docker.errors.DockerException as exc:
        raise ToolError(f"docker could not save {image_id[:12]}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
