"""Host defaults: pip's settings, apt's Debian mirror, the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackbuild.build.hostconfig import (
    DEFAULT_MIRROR,
    apt_mirror,
    cache_dir,
    parse_pip_config_list,
)

PIP_LIST = """\
:env:.cert='/etc/ssl/env.crt'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.extra-index-url='file:///opt/pypi/simple'
global.index-url='https://mirror.example/simple'
"""


def test_pip_config_list_is_parsed_with_env_entries_winning() -> None:
    values = parse_pip_config_list(PIP_LIST)
    assert values["cert"] == "/etc/ssl/env.crt"
    assert values["find-links"] == "/opt/wheels"
    assert values["index-url"] == "https://mirror.example/simple"


def test_mirror_comes_from_a_deb822_sources_file(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert apt_mirror("bookworm", tmp_path) == "http://mirror.example/debian"


def test_mirror_comes_from_a_one_line_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64] http://mirror.example/debian bookworm main\n"
    )
    assert apt_mirror("bookworm", tmp_path) == "http://mirror.example/debian"


def test_mirror_falls_back_to_deb_debian_org(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://mirror.example/debian trixie main\n")
    assert apt_mirror("bookworm", tmp_path) == DEFAULT_MIRROR


def test_cache_outlives_the_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STACKBUILD_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "stackbuild"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "stackbuild"
    monkeypatch.setenv("STACKBUILD_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
