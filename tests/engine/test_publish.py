"""Publishing: validation gate, each tag pushed with digest, retries when the registry is down."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from stackbuild.build.manifest import SCHEMA
from stackbuild.build.publish import (
    PublishRefused,
    PublishSource,
    check_validation,
    destination,
    publish,
    resolve_source,
)
from stackbuild.errors import ToolError
from stackbuild.render.pin import immutable_tag
from tests.engine.engine_helpers import TinyBuild, free_port

MANIFEST = {
    "schema": SCHEMA,
    "image_id": "sha256:" + "b" * 64,
    "digest": "sha256:aaa",
    "refs": ["localhost/stackbuild/tf:cpu"],
}


def source_in(folder: Path, record: dict[str, object] | None) -> PublishSource:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(MANIFEST))
    if record is not None:
        (folder / "validation.json").write_text(json.dumps(record))
    return resolve_source(str(folder))


def test_destination_keeps_the_image_name_and_tag() -> None:
    assert destination("localhost/stackbuild/tensorflow:2.21-cpu", "reg.example:5000/hpc/") == (
        "reg.example:5000/hpc/tensorflow:2.21-cpu"
    )


def test_publish_is_refused_without_a_validation_record(tmp_path: Path) -> None:
    with pytest.raises(PublishRefused, match="no validation record") as info:
        publish(source_in(tmp_path, None), "127.0.0.1:1/ns")
    assert "--force" in str(info.value)


def test_publish_is_refused_when_validation_failed(tmp_path: Path) -> None:
    with pytest.raises(PublishRefused, match="validation failed"):
        check_validation(source_in(tmp_path, {"image_digest": "sha256:aaa", "passed": False}))


def test_a_gpu_image_checked_without_a_gpu_is_refused_naming_the_verdict(tmp_path: Path) -> None:
    record = {
        "image_digest": "sha256:aaa",
        "passed": False,
        "verdicts": ["stack checked; not validated on a GPU"],
    }
    with pytest.raises(
        PublishRefused, match="not validated: stack checked; not validated on a GPU"
    ):
        check_validation(source_in(tmp_path, record))


def test_publish_is_refused_when_the_record_is_about_another_image(tmp_path: Path) -> None:
    with pytest.raises(PublishRefused, match="is about image sha256:other"):
        check_validation(source_in(tmp_path, {"image_digest": "sha256:other", "passed": True}))


def test_a_passing_record_for_this_image_allows_publishing(tmp_path: Path) -> None:
    assert "passed" in check_validation(
        source_in(tmp_path, {"image_digest": "sha256:aaa", "passed": True})
    )


# --- against a real registry ----------------------------------------------------------


def validated(tiny_build: TinyBuild, tmp_path: Path) -> Path:
    """A copy of the tiny build's output folder with a passing validation record."""
    folder = tmp_path / "out"
    shutil.copytree(tiny_build.out_dir, folder)
    record = {"image_digest": tiny_build.manifest["digest"], "passed": True}
    (folder / "validation.json").write_text(json.dumps(record))
    return folder


@pytest.mark.engine
def test_every_tag_is_pushed_and_pulls_back_by_digest(
    tiny_build: TinyBuild, registry: str, tmp_path: Path
) -> None:
    folder = validated(tiny_build, tmp_path)
    pushed = publish(resolve_source(str(folder)), f"{registry}/hpc", tls_verify=False)
    image_id = json.loads((folder / "manifest.json").read_text())["image_id"]
    # the recipe's tags, then the immutable one the user files are pinned to (render/pin.py)
    tags = ["tiny", "tiny-extra", immutable_tag("tiny", image_id)]
    assert [p.ref.rsplit(":", 1)[1] for p in pushed] == tags
    assert all(p.digest.startswith("sha256:") for p in pushed)
    record = json.loads((folder / "published.json").read_text())
    assert [t["pinned"] for t in record["tags"]] == [p.pinned for p in pushed]
    pulled = (
        subprocess.run(
            ["podman", "pull", "--tls-verify=false", pushed[0].pinned],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert pulled == tiny_build.result.image_id
    subprocess.run(["podman", "rmi", pushed[0].pinned], capture_output=True, check=False)


@pytest.mark.engine
def test_registry_down_is_retried_then_reported_clearly(
    tiny_build: TinyBuild, tmp_path: Path
) -> None:
    messages: list[str] = []
    dead = f"127.0.0.1:{free_port()}/hpc"
    with pytest.raises(ToolError, match="after 3 tries") as info:
        publish(
            resolve_source(str(validated(tiny_build, tmp_path))),
            dead,
            tls_verify=False,
            attempts=3,
            backoff_s=0.1,
            say=messages.append,
        )
    assert "connection refused" in str(info.value)
    assert "registry is up" in (info.value.hint or "")
    assert sum("retrying" in m for m in messages) == 2


@pytest.mark.engine
def test_cli_refuses_an_unvalidated_image_and_force_overrides(
    tiny_build: TinyBuild, registry: str, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    folder = tiny_build.out_dir
    assert not (folder / "validation.json").exists()
    code, _out, err = run_cli("publish", folder, "--registry", f"{registry}/hpc", "--no-tls-verify")
    assert code == 2 and "no validation record" in err and "--force" in err
    code, out, err = run_cli(
        "publish", folder, "--registry", f"{registry}/hpc", "--no-tls-verify", "--force"
    )
    assert code == 0, err
    name = tiny_build.spec.repository.rsplit("/", 1)[1]
    assert f"{registry}/hpc/{name}:tiny  {registry}/hpc/{name}@sha256:" in out


@pytest.mark.engine
def test_forced_publish_of_an_unvalidated_image_says_so_in_its_labels(
    tiny_build: TinyBuild, registry: str, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    shutil.copytree(tiny_build.out_dir, folder)
    verdict = "stack checked; not validated on a GPU"
    record = {"image_digest": tiny_build.manifest["digest"], "passed": False, "verdicts": [verdict]}
    (folder / "validation.json").write_text(json.dumps(record))
    with pytest.raises(PublishRefused, match="not validated"):
        publish(resolve_source(str(folder)), f"{registry}/hpc", tls_verify=False)
    pushed = publish(resolve_source(str(folder)), f"{registry}/hpc", tls_verify=False, force=True)
    inspect = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{pushed[0].pinned}"],
        capture_output=True,
        text=True,
        check=True,
    )
    labels = json.loads(inspect.stdout)["Labels"]
    assert labels["io.stackbuild.validated"] == "false"
    assert verdict in labels["io.stackbuild.validation"]
    # The local, validated-or-not image itself is unchanged: only the pushed copy is labelled.
    local = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .Labels}}", tiny_build.result.image_id],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "io.stackbuild.validated" not in json.loads(local.stdout)


def test_an_image_reference_with_manifest_option_uses_the_manifest(tmp_path: Path) -> None:
    source_in(tmp_path, None)
    source = resolve_source("localhost/stackbuild/tf:cpu", tmp_path / "manifest.json")
    assert source.image_id == "b" * 64
    assert source.refs == ("localhost/stackbuild/tf:cpu",)
    assert source.manifest_dir == tmp_path
