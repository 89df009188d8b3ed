"""Build decisions: packages per stage, environment, labels, the Horovod cache key."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

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
    # The CUDA wheels' libraries come through ld.so.conf (cuda-libraries.sh), not LD_*.
    assert "nvidia" not in ctx.runtime_environment["LD_LIBRARY_PATH"].replace(
        "/usr/local/nvidia", ""
    )
    hvd = ctx.horovod_environment
    assert hvd["HOROVOD_GPU_OPERATIONS"] == "NCCL"
    assert hvd["HOROVOD_BUILD_CUDA_CC_LIST"] == "80,90"
    assert hvd["HOROVOD_NCCL_LINK"] == "SHARED"
    assert hvd["HOROVOD_WITH_PYTORCH"] == "1" and hvd["HOROVOD_WITHOUT_TENSORFLOW"] == "1"
    # No index but PyPI's: the CUDA set is pinned by the constraints file, nvcc builder-only.
    assert ctx.framework_requirements == ["torch==2.13.0"]
    assert "nvidia-nccl-cu13==2.29.7" in ctx.constraints
    assert ctx.build_requirements == [
        "cuda-toolkit[nvcc,cccl]==13.0.3",
        "nvidia-cuda-cuobjdump==13.2.86",
    ]
    assert ctx.pip_environment["PIP_CONSTRAINT"] == "/opt/stackbuild/constraints.txt"


def test_hierarchical_allreduce_follows_ranks_per_node_and_the_recipe():
    gpu = BuildContext(variant("gpu", "pytorch-gpu"))
    assert gpu.settings.jobs.ranks_per_node == 4
    assert gpu.runtime_environment["HOROVOD_HIERARCHICAL_ALLREDUCE"] == "1"
    assert gpu.job_environment["HOROVOD_HIERARCHICAL_ALLREDUCE"] == "1"
    cpu = BuildContext(variant("cpu", "pytorch-cpu"))
    assert "HOROVOD_HIERARCHICAL_ALLREDUCE" not in cpu.runtime_environment
    one_per_node = gpu.settings.model_copy(
        update={"jobs": gpu.settings.jobs.model_copy(update={"ranks_per_node": 1})}
    )
    ctx = BuildContext(replace(gpu.variant, settings=one_per_node))
    assert not ctx.hierarchical_allreduce
    forced = one_per_node.model_copy(
        update={"horovod": one_per_node.horovod.model_copy(update={"hierarchical_allreduce": True})}
    )
    assert BuildContext(replace(gpu.variant, settings=forced)).hierarchical_allreduce


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


def test_builds_with_other_package_sources_keep_their_downloads_apart():
    # The CPU wheelhouse's torch 2.13.0+cpu satisfies ==2.13.0: a GPU build must never see it.
    keys = {
        name: BuildContext(variant(recipe, name)).download_cache_key
        for recipe, name in (
            ("cpu", "pytorch-cpu"),
            ("cpu", "tensorflow-cpu"),
            ("knl", "pytorch-knl"),
            ("gpu", "pytorch-gpu"),
            ("gpu", "tensorflow-gpu"),
        )
    }
    assert keys["pytorch-cpu"] == keys["tensorflow-cpu"] == keys["pytorch-knl"]
    assert keys["pytorch-gpu"] == keys["tensorflow-gpu"] != keys["pytorch-cpu"]
