"""`stackbuild doctor`: is this machine ready to build? Each check says what to change."""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from stackbuild.build.base import default_base_ref
from stackbuild.build.hostconfig import read_pip_config
from stackbuild.build.images import image_exists
from stackbuild.tools import run_tool

DROP_IN = Path("/etc/containers/containers.conf.d/50-stackbuild.conf")


def engine_conf() -> Path:
    """The containers.conf file to edit: $CONTAINERS_CONF when set, else the drop-in."""
    return Path(os.environ.get("CONTAINERS_CONF") or DROP_IN)


SETUP = "scripts/setup.d/20-containers.sh (as root)"
#: What podman 4.3 asks for when containers.conf sets nothing (rootful).
PODMAN_DEFAULT_ULIMIT = 1048576
REQUIRED_TOOLS = ("podman", "runc", "skopeo", "mksquashfs", "unsquashfs", "debootstrap")
OPTIONAL_TOOLS = ("buildah", "umoci", "docker-registry")


@dataclass(frozen=True)
class Check:
    """One doctor verdict: ok, warn, fail or skip, with the detail and the fix."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def broken(self) -> bool:
        return self.status == "fail"


def run_doctor(image: str | None = None, index_host: str | None = None) -> list[Check]:
    """Run every check, in order: tools, runtime, ulimits, storage, container run, network, CA."""
    checks = [check_tools()]
    info = _podman_info()
    checks.append(check_runtime(info))
    checks.append(check_ulimit_config())
    checks.append(check_storage(info))
    image = image or default_base_ref("bookworm")
    pip = read_pip_config()
    host = index_host or urlparse(pip.index_url or "https://pypi.org/simple").hostname or "pypi.org"
    if info is None or not image_exists(image):
        why = "podman does not work" if info is None else f"no image {image}"
        for name in ("container run", "network"):
            checks.append(Check(name, "skip", why, "run `stackbuild base` first"))
    else:
        run = check_container_run(image)
        checks.append(run)
        if run.broken:
            checks.append(Check("network", "skip", "no container starts", "fix the checks above"))
        else:
            checks.append(check_network(image, host))
    checks.append(check_ca_bundle(pip.cert, host))
    return checks


def check_tools() -> Check:
    """The engine tools are on PATH."""
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    optional = [t for t in OPTIONAL_TOOLS if shutil.which(t) is None]
    if missing:
        return Check("tools", "fail", f"missing: {' '.join(missing)}", f"run {SETUP}")
    if optional:
        return Check("tools", "warn", f"optional tools missing: {' '.join(optional)}", SETUP)
    return Check("tools", "ok", "podman, buildah, runc, skopeo, umoci, squashfs-tools present")


def _podman_info() -> dict[str, Any] | None:
    """podman info as a dict, or None if podman is missing or broken."""
    if shutil.which("podman") is None:
        return None
    result = run_tool(["podman", "info", "--format", "json"], check=False, timeout=60)
    return json.loads(result.stdout) if result.ok else None


def check_runtime(info: dict[str, Any] | None) -> Check:
    """The OCI runtime is runc (crun fails here with 'cgroups in hybrid mode')."""
    if info is None:
        return Check("runtime", "fail", "`podman info` failed", f"run {SETUP}")
    runtime = info["host"]["ociRuntime"]["name"]
    cgroups = f"cgroups {info['host'].get('cgroupVersion', '?')}"
    if runtime != "runc":
        return Check(
            "runtime",
            "fail",
            f"OCI runtime is {runtime} ({cgroups}); crun fails on hybrid cgroups here",
            f'add [engine] runtime = "runc" to {engine_conf()}, or run {SETUP}',
        )
    return Check("runtime", "ok", f"runc ({cgroups})")


def effective_hard_limits() -> dict[str, int]:
    """The highest ulimits a container may ask for on this host."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    # podman's conmon runs with nproc capped at pid_max: a higher value fails in runc.
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text().strip())
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    nofile = PODMAN_DEFAULT_ULIMIT if nofile == resource.RLIM_INFINITY else nofile
    return {"nofile": nofile, "nproc": nproc}


def configured_ulimits(files: list[Path] | None = None) -> dict[str, tuple[int, int]]:
    """default_ulimits from containers.conf files (later files win), as {name: (soft, hard)}."""
    if files is None:
        files = [
            Path("/usr/share/containers/containers.conf"),
            Path("/etc/containers/containers.conf"),
        ]
        drop_ins = Path("/etc/containers/containers.conf.d")
        if drop_ins.is_dir():
            files += sorted(drop_ins.glob("*.conf"))
        if os.environ.get("CONTAINERS_CONF"):
            files = [Path(os.environ["CONTAINERS_CONF"])]
    limits: dict[str, tuple[int, int]] = {}
    for path in files:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        entries = data.get("containers", {}).get("default_ulimits")
        if entries is None:
            continue
        limits = {}
        for entry in entries:
            name, _, values = str(entry).partition("=")
            soft, _, hard = values.partition(":")
            limits[name.strip()] = (int(soft), int(hard or soft))
    return limits


def check_ulimit_config() -> Check:
    """Container ulimits (nofile, nproc) are at or below what this host allows."""
    allowed = effective_hard_limits()
    configured = configured_ulimits()
    too_high = []
    for name, limit in allowed.items():
        _soft, hard = configured.get(name, (PODMAN_DEFAULT_ULIMIT, PODMAN_DEFAULT_ULIMIT))
        if hard > limit:
            too_high.append(f"{name} {hard} > {limit}")
    wanted = ", ".join(f'"{n}={v}:{v}"' for n, v in allowed.items())
    if too_high:
        return Check(
            "ulimits",
            "fail",
            "containers would ask for more than the hard limit: " + "; ".join(too_high),
            f"put [containers] default_ulimits = [{wanted}] in {engine_conf()}, or run {SETUP}",
        )
    shown = ", ".join(f"{n}={configured.get(n, ('default',))[-1]}" for n in allowed)
    return Check("ulimits", "ok", f"{shown} (host allows {wanted})")


def check_storage(info: dict[str, Any] | None) -> Check:
    """The storage driver works and the store has room."""
    if info is None:
        return Check("storage", "fail", "`podman info` failed", f"run {SETUP}")
    store = info["store"]
    driver = store["graphDriverName"]
    root = store["graphRoot"]
    free_gib = shutil.disk_usage(root).free / 2**30 if Path(root).exists() else 0.0
    detail = f"{driver} at {root}, {free_gib:.0f} GiB free"
    if driver not in ("overlay", "vfs"):
        return Check("storage", "warn", detail, f'set driver = "overlay" in storage.conf ({SETUP})')
    if driver == "vfs":
        return Check("storage", "warn", detail + " (vfs copies every layer: slow, large)", SETUP)
    if free_gib < 10:
        return Check("storage", "warn", detail, "free space: `podman system prune`")
    return Check("storage", "ok", detail)


def check_container_run(image: str) -> Check:
    """A container starts (runtime + ulimits work together)."""
    result = run_tool(["podman", "run", "--rm", image, "true"], check=False, timeout=120)
    if result.ok:
        return Check("container run", "ok", f"podman run {image} true")
    tail = result.tail(3)
    fix = f"run {SETUP}"
    if "rlimit" in tail:
        fix = f"lower default_ulimits in {engine_conf()} to the hard limits ({SETUP})"
    elif "cgroup" in tail:
        fix = f'use runc: [engine] runtime = "runc" in {engine_conf()} ({SETUP})'
    return Check("container run", "fail", tail, fix)


def check_network(image: str, host: str) -> Check:
    """A container reaches the package index (DNS + TCP 443)."""
    script = f"exec 3<>/dev/tcp/{host}/443"
    result = run_tool(
        ["podman", "run", "--rm", image, "timeout", "15", "bash", "-c", script],
        check=False,
        timeout=120,
    )
    if result.ok:
        return Check("network", "ok", f"a container reaches {host}:443")
    return Check(
        "network",
        "fail",
        f"a container cannot reach {host}:443: {result.tail(2)}",
        "check DNS and the proxy for containers (podman's netavark network; "
        "`podman network ls`), or build with the wheelhouse only",
    )


def check_ca_bundle(cert: Path | None, host: str) -> Check:
    """pip's CA bundle exists and verifies the index's certificate (intercepting proxy)."""
    if cert is None:
        return Check(
            "CA bundle",
            "warn",
            "pip has no `cert` setting; builds use /etc/ssl/certs/ca-certificates.crt",
            "pip config set global.cert /etc/ssl/certs/ca-certificates.crt",
        )
    if not cert.is_file():
        return Check(
            "CA bundle",
            "fail",
            f"pip's cert {cert} does not exist",
            "pip config set global.cert PATH-TO-YOUR-CA-BUNDLE",
        )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with (
            socket.create_connection((host, 443), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            pass
    except ssl.SSLError as exc:
        return Check(
            "CA bundle",
            "fail",
            f"{cert} does not verify {host}: {exc.reason}",
            "point pip's cert at the bundle that holds your proxy's CA "
            "(pip config set global.cert PATH)",
        )
    except OSError as exc:
        return Check("CA bundle", "warn", f"{cert} exists; {host}:443 unreachable ({exc})")
    return Check("CA bundle", "ok", f"{cert} verifies {host} (passed to builds as a secret)")
