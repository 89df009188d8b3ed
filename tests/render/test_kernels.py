"""Kernel specs: one per shipped variant, starting the image's Python through its wrapper."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.recipe import Variant, expand_matrix, load_recipe, select_variant
from stackbuild.recipe.catalog import shipped_recipes
from stackbuild.render.renderer import render_files, render_variant
from stackbuild.render.writers import help_text

SHIPPED = [v for path in shipped_recipes() for v in expand_matrix(load_recipe(path))]


def cpu_variant(name: str = "pytorch-cpu") -> Variant:
    return select_variant(expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml")), name)


def files_of(variant: Variant, formats: list[str]) -> dict[str, object]:
    return {f.path: f for f in render_files(variant, formats)}


def expected_env(variant: Variant) -> dict[str, str]:
    """The thread settings a recipe fixes (not 'auto'), from the settings themselves."""
    t, env = variant.settings.threads, {}
    for name, value in (
        ("OMP_NUM_THREADS", t.omp_num_threads),
        ("TF_NUM_INTRAOP_THREADS", t.intra_op),
        ("TF_NUM_INTEROP_THREADS", t.inter_op),
    ):
        if value != "auto":
            env[name] = str(value)
    return env


@pytest.mark.parametrize("variant", SHIPPED, ids=[f"{v.recipe_name}-{v.name}" for v in SHIPPED])
def test_every_shipped_variant_has_a_kernel_through_its_python_wrapper(variant: Variant):
    files = files_of(variant, ["modules", "kernels"])
    name, version = variant.module_name, variant.module_version
    specs = [p for p in files if p.startswith("kernels/") and p.endswith("/kernel.json")]
    assert len(specs) == 1, specs
    spec = json.loads(files[specs[0]].content)
    wrapper = f"wrappers/{name}/{version}/bin/python"
    assert spec["argv"][:2] == ["/bin/sh", "-c"]
    assert spec["argv"][3] == "{resource_dir}/../../" + wrapper
    assert spec["argv"][4] == "{connection_file}"
    assert "ipykernel" in spec["argv"][5]
    assert files[wrapper].executable
    # The spec's folder is two levels below the variant's, where the wrappers are.
    assert specs[0].count("/") == 2
    assert spec["display_name"] == f"{name}/{version}"
    assert spec["language"] == "python"
    # The module's name tells a notebook what to `module load` for its engines.
    env = expected_env(variant) | {"STACKBUILD_MODULE": f"{name}/{version}"}
    if "mpi" in variant.settings.horovod.controllers and variant.settings.cuda is None:
        assert spec["env"] == env
    else:  # GPU variants may also fix Horovod's hierarchical all-reduce
        assert {k: spec["env"][k] for k in env} == env
        assert set(spec["env"]) - set(env) <= {"HOROVOD_HIERARCHICAL_ALLREDUCE"}
    assert spec["metadata"]["stackbuild"]["wrapper"] == wrapper
    assert "stackbuild kernels install" in help_text(variant)
    # Beside the python wrapper: the command that submits IPyParallel engines in the image.
    assert files[f"wrappers/{name}/{version}/bin/ipengines"].executable
    assert "ipengines -n 2" in help_text(variant)


def test_knl_variants_fix_threads_in_the_kernel():
    """At least one shipped variant fixes threads, so the env check above can fail."""
    assert any(expected_env(v) for v in SHIPPED)


def test_logo_is_a_64_pixel_png():
    logo = files_of(cpu_variant(), ["kernels"])["kernels/pytorch-2.13-cpu/logo-64x64.png"]
    data = logo.content
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (64, 64, 8, 2)
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8 : start - 4])[0]
    assert len(zlib.decompress(data[start : start + length])) == 64 * (1 + 64 * 3)


def test_jupyter_layer_is_late_and_uses_the_download_cache():
    text = files_of(cpu_variant(), ["containerfile"])["Containerfile"].content.decode()
    line = next(x for x in text.splitlines() if "ipykernel==" in x)
    assert line.startswith(" && pip_install ")
    for package in cpu_variant().settings.jupyter.packages:
        assert package in line
    at = text.index(line)
    # After the frameworks, Horovod and the recipe's extra pins; before the harness copy.
    assert text.index("requirements-frameworks.txt") < at
    assert text.index("horovod-*.whl") < at
    assert text.index("h5py==") < at < text.index("COPY files/validation")


def test_kernel_off_drops_layer_spec_and_help(tmp_path: Path):
    recipe = (PROJECT_ROOT / "recipes/cpu.yaml").read_text()
    assert "\ndefaults:\n" in recipe
    path = tmp_path / "cpu.yaml"
    shutil.copytree(PROJECT_ROOT / "recipes/patches", tmp_path / "patches")  # the recipe names them
    path.write_text(recipe.replace("\ndefaults:\n", "\ndefaults:\n  jupyter: {kernel: false}\n"))
    variant = select_variant(expand_matrix(load_recipe(path)), "pytorch-cpu")
    files = files_of(variant, ["containerfile", "kernels", "modules"])
    assert not [p for p in files if p.startswith("kernels/")]
    assert not [p for p in files if p.endswith("/ipengines")]
    assert "ipykernel" not in files["Containerfile"].content.decode()
    assert "kernels install" not in help_text(variant)


def test_install_writes_the_absolute_wrapper_path(tmp_path: Path, run_cli):
    out = render_variant(cpu_variant(), tmp_path / "render")
    code, stdout, _ = run_cli("kernels", "install", tmp_path / "render", "--prefix", tmp_path / "p")
    assert code == 0, stdout
    installed = tmp_path / "p/share/jupyter/kernels/pytorch-2.13-cpu"
    spec = json.loads((installed / "kernel.json").read_text())
    wrapper = out.resolve() / "wrappers/pytorch/2.13-cpu/bin/python"
    assert spec["argv"][3] == str(wrapper)
    assert (installed / "logo-64x64.png").read_bytes()[:4] == b"\x89PNG"
    assert "installed kernel pytorch-2.13-cpu (pytorch/2.13-cpu)" in stdout


def test_install_user_honours_jupyter_data_dir(tmp_path: Path, run_cli, monkeypatch):
    render_variant(cpu_variant("tensorflow-cpu"), tmp_path)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    code, _, _ = run_cli("kernels", "install", tmp_path / "tensorflow-cpu", "--user")
    assert code == 0
    assert (tmp_path / "data/kernels/tensorflow-2.21-cpu/kernel.json").is_file()


def test_install_refuses_a_folder_without_specs_and_both_targets(tmp_path: Path, run_cli):
    code, _, err = run_cli("kernels", "install", tmp_path)
    assert code == 2 and "holds no kernel spec" in err
    render_variant(cpu_variant(), tmp_path)
    code, _, err = run_cli("kernels", "install", tmp_path, "--user", "--prefix", tmp_path / "p")
    assert code == 2 and "exclude each other" in err
    (tmp_path / "pytorch-cpu/wrappers/pytorch/2.13-cpu/bin/python").unlink()
    code, _, err = run_cli("kernels", "install", tmp_path, "--prefix", tmp_path / "p")
    assert code == 2 and "missing or not executable" in err


def test_kernel_without_its_runtime_fails_fast_naming_it(tmp_path: Path, run_cli):
    """The argv as Jupyter runs it, on a node without podman: the wrapper's message, exit 127."""
    render_variant(cpu_variant(), tmp_path / "r")
    assert run_cli("kernels", "install", tmp_path / "r", "--prefix", tmp_path / "p")[0] == 0
    spec = json.loads(
        (tmp_path / "p/share/jupyter/kernels/pytorch-2.13-cpu/kernel.json").read_text()
    )
    connection = tmp_path / "kernel-1.json"
    connection.write_text('{"ip": "127.0.0.1"}')
    argv = [a.replace("{connection_file}", str(connection)) for a in spec["argv"]]
    # Only what the shim needs (cat): no podman, wherever the host has one.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(str(shutil.which("cat")), bindir / "cat")
    env = {"PATH": str(bindir), "HOME": str(tmp_path)}
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)
    assert time.monotonic() - start < 10
    assert proc.returncode == 127
    assert "pytorch/2.13-cpu: podman is not on PATH" in proc.stderr
    assert "apt-get install podman" in proc.stderr
