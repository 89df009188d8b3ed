"""Reading a rendered build context (variant.json) into a BuildSpec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stackbuild.build import context as context_module
from stackbuild.build.context import ContextError, load_build_spec
from stackbuild.build.hostconfig import PipConfig


def variant(**build: Any) -> dict[str, Any]:
    return {
        "recipe": "tensorflow",
        "recipe_hash": "abc",
        "variant": "cpu",
        "image": {"repository": "localhost/stackbuild/tensorflow", "tags": ["2.21-cpu", "cpu"]},
        "base": {
            "image": "localhost/stackbuild/base:bookworm-minbase",
            "bootstrap": {"suite": "bookworm", "variant": "minbase"},
        },
        "build": build,
    }


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text("FROM scratch\n")
    (ctx / "variant.json").write_text(json.dumps(data))
    return ctx


@pytest.fixture
def host_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> PipConfig:
    """A host whose pip trusts tmp/ca.pem and finds wheels in tmp/wheels."""
    (tmp_path / "ca.pem").write_text("cert")
    (tmp_path / "wheels").mkdir()
    pip = PipConfig(tmp_path / "ca.pem", (str(tmp_path / "wheels"),), None)
    monkeypatch.setattr(context_module, "read_pip_config", lambda: pip)
    monkeypatch.setattr("stackbuild.build.hostconfig.read_pip_config", lambda: pip)
    return pip


def test_null_secrets_and_volumes_take_host_defaults(tmp_path: Path, host_pip: PipConfig) -> None:
    data = variant(
        secrets={"ca_bundle": None, "pip_conf": None},
        volumes={
            "wheelhouse": {"host": None, "target": "/wheelhouse"},
            "wheel_cache": {"host": None, "target": "/cache/wheels"},
        },
        build_args={"PYTHON": 3.11},
    )
    spec = load_build_spec(write(tmp_path, data), cache=tmp_path / "cache")
    assert spec.secrets["ca_bundle"] == host_pip.cert
    assert spec.secrets["pip_conf"].read_text() == "[global]\n"
    volumes = {v.name: v for v in spec.volumes}
    assert volumes["wheelhouse"].host == tmp_path / "wheels"
    assert volumes["wheelhouse"].read_only
    assert volumes["wheel_cache"].host == tmp_path / "cache" / "wheels"
    assert not volumes["wheel_cache"].read_only
    assert spec.image_refs == [
        "localhost/stackbuild/tensorflow:2.21-cpu",
        "localhost/stackbuild/tensorflow:cpu",
    ]
    assert spec.build_args == {"PYTHON": "3.11"}
    assert spec.bootstrap is not None and spec.bootstrap.suite == "bookworm"


def test_missing_secret_file_is_an_error_naming_the_key(tmp_path: Path) -> None:
    data = variant(secrets={"ca_bundle": str(tmp_path / "nope.pem")})
    with pytest.raises(ContextError, match=r"build\.secrets\.ca_bundle"):
        load_build_spec(write(tmp_path, data), cache=tmp_path / "cache")


def test_empty_tags_are_rejected(tmp_path: Path) -> None:
    data = variant()
    data["image"]["tags"] = []
    with pytest.raises(ContextError, match=r"image\.tags is empty"):
        load_build_spec(write(tmp_path, data), cache=tmp_path / "cache")


def test_missing_key_names_the_key_path(tmp_path: Path) -> None:
    data = variant()
    del data["image"]["repository"]
    with pytest.raises(ContextError, match=r"image\.repository"):
        load_build_spec(write(tmp_path, data), cache=tmp_path / "cache")


def test_context_without_containerfile_says_to_render(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="Containerfile does not exist") as info:
        load_build_spec(tmp_path)
    assert "stackbuild render" in str(info.value)
