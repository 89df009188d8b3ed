"""Build decisions: packages per stage, environment, labels, the Horovod cache key."""

from __future__ import annotations

import dataclasses

from stackbuild import PROJECT_ROOT
from stackbuild.recipe import expand_matrix, load_recipe, select_variant
from stackbuild.render.context import BuildContext


def variant(recipe: str, name: str):
    return select_variant(expand_matrix(load_recipe(PROJECT_ROOT / f"recipes/{recipe}.yaml")), name)


def with_settings(v, **changes):
    """A copy of variant v with top-level settings sections replaced."""
    return dataclasses.replace(v, settings=v.settings.model_copy(update=changes))


def test_compilers_only_in_the_builder():
    ctx = BuildContext(variant("cpu", "pytorch-cpu"))
    assert {"build-essential", "cmake", "libmpich-dev", "python3-dev"} <= set(ctx.builder_packages)
    assert not {"build-essential", "cmake", "libmpich-dev", "python3-dev"} & set(
        ctx.runtime_packages
    )
    assert "mpich" in ctx.runtime_packages


def test_runtime_environment_works_under_shifter():
    env = BuildContext(variant("knl", "tensorflow-knl")).runtime_environment
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert "LD_LIBRARY_PATH" in env  # Shifter drops the host's LD_*; the image must set it
    assert env["PYTHONPATH"] == "/opt/stackbuild"
    assert env["OMP_NUM_THREADS"] == "66"
    assert env["TF_NUM_INTEROP_THREADS"] == "2"
    assert env["KMP_AFFINITY"] == "granularity=fine,compact,1,0"
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "1"


def test_gpu_environment_and_horovod_switches():
    ctx = BuildContext(variant("gpu", "pytorch-gpu"))
    assert ctx.runtime_environment["LD_LIBRARY_PATH"].startswith("/usr/local/cuda/lib64")
    hvd = ctx.horovod_environment
    assert hvd["HOROVOD_GPU_OPERATIONS"] == "NCCL"
    assert hvd["HOROVOD_BUILD_CUDA_CC_LIST"] == "80,90"
    assert hvd["HOROVOD_WITH_PYTORCH"] == "1" and hvd["HOROVOD_WITHOUT_TENSORFLOW"] == "1"
    assert (
        ctx.framework_requirements[0] == "--extra-index-url https://download.pytorch.org/whl/cu128"
    )


def test_knl_compiles_for_knl():
    env = BuildContext(variant("knl", "tensorflow-knl")).horovod_environment
    assert env["HOROVOD_BUILD_ARCH_FLAGS"] == "-march=knl"
    # Both CPU operations listed: Horovod picks Gloo or MPI ops by controller at run time.
    assert "HOROVOD_CPU_OPERATIONS" not in env


def test_labels_name_recipe_variant_and_versions():
    labels = BuildContext(variant("cpu", "tensorflow-cpu")).labels
    assert labels["io.stackbuild.variant"] == "tensorflow-cpu"
    assert labels["io.stackbuild.tensorflow.version"] == "2.21.0"
    assert labels["io.stackbuild.horovod.version"] == "0.28.1"
    assert len(labels["io.stackbuild.recipe.digest"]) == 64


def test_horovod_cache_key_follows_what_changes_the_binary():
    base = variant("cpu", "tensorflow-cpu")
    key = BuildContext(base).horovod_cache_key
    s = base.settings
    changed = {
        "framework version": with_settings(
            base, tensorflow=s.tensorflow.model_copy(update={"version": "2.20.0"})
        ),
        "horovod version": with_settings(
            base, horovod=s.horovod.model_copy(update={"version": "0.28.0"})
        ),
        "compiler flags": with_settings(
            base, platform=s.platform.model_copy(update={"march": "skylake-avx512"})
        ),
        "MPI": with_settings(base, mpi=s.mpi.model_copy(update={"flavor": "openmpi"})),
        "build env": with_settings(
            base, horovod=s.horovod.model_copy(update={"build_env": {"HOROVOD_DEBUG": "1"}})
        ),
    }
    for what, other in changed.items():
        assert BuildContext(other).horovod_cache_key != key, what
    # A top-level pin is installed after Horovod and must not force a recompile.
    same = with_settings(base, pip=s.pip.model_copy(update={"extra_packages": ["tqdm==4.67.1"]}))
    assert BuildContext(same).horovod_cache_key == key


def test_horovod_cache_key_follows_patch_contents(tmp_path):
    base = variant("cpu", "tensorflow-cpu")
    patch = tmp_path / "fix.patch"
    patch.write_text("--- a/x\n+++ b/x\n")
    one = BuildContext(dataclasses.replace(base, patch_files=(patch,))).horovod_cache_key
    patch.write_text("--- a/x\n+++ b/x\n@@ changed\n")
    two = BuildContext(dataclasses.replace(base, patch_files=(patch,))).horovod_cache_key
    assert one != two
