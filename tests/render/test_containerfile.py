"""The rendered Containerfile: stages, layer order, secrets, parseable by BuildKit's parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
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
    (site / "torch/test").mkdir()
    (site / "torch/test/c10_Bitset_test").write_text("gtest binary\n")
    (site / "torch/bin").mkdir()
    for name in ("test_api", "test_jit", "test_lazy", "protoc", "protoc-3.13.0.0"):
        (site / "torch/bin" / name).write_text("program\n")
    (site / "torch/bin/torch_shm_manager").write_text("torch.multiprocessing's helper\n")
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (site / "torch/include").exists() and (site / "torch/lib").is_dir()
    assert not (site / "torch/test").exists()
    assert [p.name for p in (site / "torch/bin").iterdir()] == ["torch_shm_manager"]
    # A path the recipe names but the wheel does not have fails the build step, by name.
    again = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert again.returncode == 1
    assert "pip.runtime_prune names torch/include, which is not in" in again.stderr


def _venv_site(venv: Path, *options: str) -> tuple[dict[str, str], Path]:
    """A real venv: the environment that puts it first on PATH, and its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", *options, str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv}/bin:{os.environ['PATH']}"}
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run(
        ["python3", "-c", purelib], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    return env, Path(site)


def test_gpu_runtime_prunes_unloaded_cuda_libraries_and_uninstalls_triton(tmp_path):
    files = files_of("gpu", "pytorch-gpu")
    variant = select_variant(
        expand_matrix(load_recipe(PROJECT_ROOT / "recipes/gpu.yaml")), "pytorch-gpu"
    )
    prune, uninstall = variant.settings.pip.runtime_prune, variant.settings.pip.runtime_uninstall
    assert "nvidia/cu13/lib/libcusolverMg.so.12" in prune and uninstall == ["triton"]
    script = tmp_path / "prune-runtime.sh"
    script.write_bytes(files["files/prune-runtime.sh"])
    env, site = _venv_site(tmp_path / "venv")  # with pip: the script uninstalls through it
    for path in prune:
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text("x")
    (site / "nvidia/cu13/lib/libcusolver.so.12").write_text("kept: libtorch_cuda_linalg needs it")
    # An installed distribution as pip writes one, so that pip itself uninstalls it.
    (site / "triton").mkdir()
    (site / "triton/__init__.py").write_text("")
    dist = site / "triton-3.7.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: triton\nVersion: 3.7.1\n")
    (dist / "INSTALLER").write_text("pip\n")
    (dist / "RECORD").write_text(
        "triton/__init__.py,,\ntriton-3.7.1.dist-info/METADATA,,\n"
        "triton-3.7.1.dist-info/INSTALLER,,\ntriton-3.7.1.dist-info/RECORD,,\n"
    )
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not any((site / path).exists() for path in prune)
    assert not (site / "triton").exists() and not dist.exists()
    assert (site / "nvidia/cu13/lib/libcusolver.so.12").exists()
    assert "uninstalling triton (pip.runtime_uninstall)" in done.stdout
    # Once they are gone, the same script fails on the first path the recipe names.
    again = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert again.returncode == 1 and f"pip.runtime_prune names {prune[0]}" in again.stderr
    # A package the recipe names that is not installed fails the step by name.
    for path in prune:
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text("x")
    third = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert third.returncode == 1
    assert "pip.runtime_uninstall names triton, which is not installed" in third.stderr


# What cuobjdump 13.2.86 printed for a pytorch-gpu build's Horovod library (2026-12-01), and for
# a library without CUDA code (its message on stderr, exit 255).
CUOBJDUMP = """#!/bin/sh
case "$2" in
  *mpi_lib*)
    name=$(basename "$2" .so)
    if [ "$1" = --list-elf ]; then
      echo "ELF file    1: $name.1.sm_80.cubin"
      echo "ELF file    2: $name.2.sm_90.cubin"
    else
      echo "PTX file    1: $name.1.sm_90.ptx"
    fi ;;
  *) echo "cuobjdump info    : File '$2' does not contain device code" >&2; exit 255 ;;
esac
"""


def test_gpu_horovod_build_lists_the_cuda_architectures_of_each_library(tmp_path):
    """The builder's report (horovod-isa.json), run by sh on the cached-wheel path: real
    objdump on real ELF files; cuobjdump is a stand-in printing what the real one printed
    (the real one runs in the GPU image build, tests/engine/test_gpu_knl_stack.py)."""
    files = files_of("gpu", "pytorch-gpu")
    text = files["files/horovod/build-horovod.sh"].decode()
    key = text.split("key=", 1)[1].split("\n", 1)[0]
    text = text.replace("/cache/wheels", str(tmp_path / "cache")).replace(
        "/opt/stackbuild", str(tmp_path / "sb")
    )
    script = tmp_path / "build-horovod.sh"
    script.write_text(text)
    env, site = _venv_site(tmp_path / "venv", "--without-pip")
    tool = site / "nvidia/cu13/bin/cuobjdump"
    tool.parent.mkdir(parents=True)
    tool.write_text(CUOBJDUMP)
    tool.chmod(0o755)
    cached = tmp_path / "cache" / f"horovod-{key}"
    cached.mkdir(parents=True)
    elf = Path(sys.executable).resolve()  # any real ELF file with code
    with zipfile.ZipFile(cached / "horovod-0.28.1-cp311-cp311-linux_x86_64.whl", "w") as whl:
        whl.write(elf, "horovod/torch/mpi_lib_v2.so")
        whl.write(elf, "horovod/common/basics.so")
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "compiled wheel cache hit" in done.stdout
    report = json.loads((tmp_path / "sb/wheels/horovod-isa.json").read_text())
    libs = report["libraries"]
    assert libs["horovod/torch/mpi_lib_v2.so"]["cuda_elf"] == ["sm_80", "sm_90"]
    assert libs["horovod/torch/mpi_lib_v2.so"]["cuda_ptx"] == ["sm_90"]
    assert libs["horovod/common/basics.so"]["cuda_elf"] == []
    assert libs["horovod/torch/mpi_lib_v2.so"]["instructions"] > 0
    # Without cuobjdump in the builder the step fails, naming the package to add.
    tool.unlink()
    failed = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert failed.returncode == 1 and "must install nvidia-cuda-cuobjdump" in " ".join(
        failed.stderr.split()
    )
    # The CPU images' script has no CUDA step.
    cpu = files_of("cpu", "pytorch-cpu")["files/horovod/build-horovod.sh"].decode()
    assert "cuobjdump" not in cpu and "cuda_elf" not in cpu


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
