"""The rendered Containerfile: stages, layer order, secrets, parseable by BuildKit's parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.recipe import expand_matrix, load_recipe, select_variant
from stackbuild.render.renderer import render_files
from stackbuild.render.spython_adapter import parse_definition

SHIPPED = sorted((PROJECT_ROOT / "recipes").glob("*.yaml"))


def files_of(recipe: str, name: str) -> dict[str, bytes]:
    v = select_variant(expand_matrix(load_recipe(PROJECT_ROOT / f"recipes/{recipe}.yaml")), name)
    return {f.path: f.content for f in render_files(v)}


def instructions(text: str) -> list[dockerfile.Command]:
    return list(dockerfile.parse_string(text))


def test_multi_stage_with_compiler_free_runtime():
    text = files_of("cpu", "pytorch-cpu")["Containerfile"].decode()
    cmds = instructions(text)
    froms = [c.value for c in cmds if c.cmd == "FROM"]
    assert [f[-1] for f in froms] == ["builder", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert "build-essential" not in runtime and "cmake" not in runtime
    assert "COPY --from=builder /opt/stackbuild/wheels /opt/stackbuild/wheels" in runtime


def test_layer_order_puts_top_level_pins_after_horovod():
    runtime = files_of("cpu", "tensorflow-cpu")["Containerfile"].decode().split("AS runtime")[1]
    assert runtime.index("horovod-*.whl") < runtime.index("pip_install h5py==3.16.0")
    assert runtime.index("pip_install h5py==3.16.0") < runtime.index("COPY files/validation")


def test_pip_steps_get_build_secrets_and_nothing_secret_is_copied():
    text = files_of("cpu", "tensorflow-cpu")["Containerfile"].decode()
    for cmd in instructions(text):
        if cmd.cmd == "RUN" and (
            "pip install" in " ".join(cmd.value) or "pip_install" in " ".join(cmd.value)
        ):
            assert "--mount=type=secret,id=ca_bundle,target=/run/secrets/ca_bundle" in cmd.flags
        if cmd.cmd in ("COPY", "ADD"):
            assert not any("ca" in v and "cert" in v for v in cmd.value)
    pip_env = files_of("cpu", "tensorflow-cpu")["files/pip-env.sh"].decode()
    assert "export PIP_CERT=/run/secrets/ca_bundle" in pip_env


def test_runtime_prunes_headers_in_the_layer_that_installs_the_frameworks(tmp_path):
    files = files_of("cpu", "pytorch-cpu")
    runtime = files["Containerfile"].decode().split("AS runtime", 1)[1]
    (install,) = [
        c
        for c in instructions(runtime)
        if c.cmd == "RUN" and "requirements-frameworks" in c.original
    ]
    assert install.original.rstrip().endswith("sh /opt/stackbuild/prune-runtime.sh")
    assert "prune-runtime.sh" not in files["Containerfile"].decode().split("AS runtime", 1)[0]
    # The rendered script, run for real by sh against a real venv's site-packages.
    script = tmp_path / "prune-runtime.sh"
    script.write_bytes(files["files/prune-runtime.sh"])
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv}/bin:{os.environ['PATH']}"}
    site = Path(
        subprocess.run(
            ["python3", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "torch/include/c10").mkdir(parents=True)
    (site / "torch/include/c10/core.h").write_text("// header\n")
    (site / "torch/lib").mkdir()
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (site / "torch/include").exists() and (site / "torch/lib").is_dir()
    # A path the recipe names but the wheel does not have fails the build step, by name.
    again = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert again.returncode == 1
    assert "pip.runtime_prune names torch/include, which is not in" in again.stderr


def test_validation_harness_and_info_go_into_the_image():
    files = files_of("cpu", "pytorch-cpu")
    text = files["Containerfile"].decode()
    assert "COPY files/validation /opt/stackbuild/validation" in text
    info = json.loads(files["files/stackbuild-info.json"])
    assert info["variant"] == "pytorch-cpu" and info["frameworks"] == ["pytorch"]
    assert "files/validation/__init__.py" in files


def test_variant_json_tells_the_builder_what_it_needs():
    data = json.loads(files_of("cpu", "tensorflow-cpu")["variant.json"])
    assert data["image"] == {"repository": "localhost/stackbuild/tensorflow", "tags": ["2.21-cpu"]}
    assert data["base"]["bootstrap"] == {"suite": "bookworm", "variant": "minbase", "mirror": None}
    assert data["build"]["volumes"]["wheelhouse"]["target"] == "/wheelhouse"
    gpu = json.loads(files_of("gpu", "pytorch-gpu")["variant.json"])
    assert gpu["build"]["volumes"]["wheelhouse"] is None  # CPU wheels must not reach GPU images


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.stem)
def test_apptainer_definition_round_trips_through_spython(recipe, tmp_path):
    for v in expand_matrix(load_recipe(recipe)):
        files = {f.path: f.content for f in render_files(v, ["apptainer"])}
        path = tmp_path / f"{v.name}.def"
        path.write_bytes(files["apptainer.def"])
        stages = parse_definition(path)
        assert list(stages) == ["builder", "runtime"]
        runtime = stages["runtime"]
        assert runtime.fromHeader
        assert not any("--mount=" in line for s in stages.values() for line in s.install)
        assert any("horovodrun --check-build" in line for line in runtime.install)
        assert "export PYTHONPATH=/opt/stackbuild" in "\n".join(
            f"export {e}" for e in runtime.environ
        )


def test_apptainer_bootstrap_agent_follows_the_recipe(write_recipe) -> None:
    cpu = files_of("cpu", "tensorflow-cpu")["apptainer.def"].decode()
    assert "Bootstrap: docker-archive\nFrom: localhost_stackbuild_base_bookworm-minbase.tar" in cpu
    text = (PROJECT_ROOT / "recipes/gpu.yaml").read_text()
    text = text.replace("apptainer_bootstrap: docker-archive", "apptainer_bootstrap: docker")
    text = text.replace(
        "image: localhost/stackbuild/base:bookworm-minbase", "image: reg.example/base:1"
    )
    variant = select_variant(
        expand_matrix(load_recipe(write_recipe(text, "gpu"))), "tensorflow-gpu"
    )
    gpu = {f.path: f.content for f in render_files(variant)}["apptainer.def"].decode()
    assert "Bootstrap: docker\nFrom: reg.example/base:1" in gpu
