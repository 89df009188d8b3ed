"""What the host already knows: pip's CA bundle and find-links, apt's Debian mirror, the cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MIRROR = "http://deb.debian.org/debian"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def cache_dir() -> Path:
    """The stackbuild cache: $STACKBUILD_CACHE, else $XDG_CACHE_HOME/stackbuild (by default
    ~/.cache/stackbuild), which outlives a checkout: a fresh clone reuses the base image
    and the compiled wheels of an earlier one on the same machine."""
    env = os.environ.get("STACKBUILD_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "stackbuild"


@dataclass(frozen=True)
class PipConfig:
    """The pip settings a build borrows from the host."""

    cert: Path | None
    find_links: tuple[str, ...]
    index_url: str | None


def parse_pip_config_list(text: str) -> dict[str, str]:
    """Parse `pip config list` output into {key: value}; env entries win over files."""
    values: dict[str, str] = {}
    env_values: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^(?P<scope>[^.=]*)\.(?P<key>[\w-]+)='(?P<value>.*)'$", line.strip())
        if not match:
            continue
        target = env_values if match["scope"] == ":env:" else values
        target.setdefault(match["key"], match["value"])
    return {**values, **env_values}


def read_pip_config() -> PipConfig:
    """Ask the host's pip for its settings (cert, find-links, index-url)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        values = parse_pip_config_list(proc.stdout)
    except (OSError, subprocess.TimeoutExpired):
        values = {}
    cert = values.get("cert") or os.environ.get("REQUESTS_CA_BUNDLE")
    links = tuple(values.get("find-links", "").split())
    return PipConfig(Path(cert) if cert else None, links, values.get("index-url"))


def host_ca_bundle(pip: PipConfig | None = None) -> Path | None:
    """The CA bundle pip trusts on this host, else the system bundle, else None."""
    pip = pip or read_pip_config()
    for candidate in (pip.cert, SYSTEM_CA_BUNDLE):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def host_wheelhouse(pip: PipConfig | None = None) -> Path | None:
    """The first local directory among pip's find-links, if any."""
    pip = pip or read_pip_config()
    for link in pip.find_links:
        path = Path(link.removeprefix("file://"))
        if "://" not in link.removeprefix("file://") and path.is_dir():
            return path
    return None


def apt_mirror(suite: str, sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's apt uses for `suite` (falls back to deb.debian.org)."""
    files = [sources_dir / "sources.list"]
    listdir = sources_dir / "sources.list.d"
    if listdir.is_dir():
        files += sorted(listdir.iterdir())
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".sources":
            uri = _deb822_mirror(text, suite)
        else:
            uri = _one_line_mirror(text, suite)
        if uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _deb822_mirror(text: str, suite: str) -> str | None:
    """The first URI of a deb822 stanza of Types deb listing `suite`."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def _one_line_mirror(text: str, suite: str) -> str | None:
    """The URI of the first `deb URI suite ...` line."""
    for line in text.splitlines():
        parts = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
        if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
            return parts[1]
    return None
