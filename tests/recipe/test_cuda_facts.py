"""A GPU recipe's CUDA facts are checked against its framework wheels at load time."""

from __future__ import annotations

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.errors import RecipeError
from stackbuild.recipe import expand_matrix, load_recipe

GPU = (PROJECT_ROOT / "recipes/gpu.yaml").read_text()


def load(write_recipe, text: str):
    return expand_matrix(load_recipe(write_recipe(text, "gpu")))


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_shipped_gpu_recipe_says_what_its_wheels_are(write_recipe):
    variants = {v.name: v for v in load(write_recipe, GPU)}
    assert variants["pytorch-gpu"].settings.cuda.version == "13.0"
    assert variants["tensorflow-gpu"].settings.cuda.version == "12.9"


def test_cuda_version_that_disagrees_with_the_torch_wheel_fails_naming_both(write_recipe):
    text = GPU.replace('      version: "13.0"', '      version: "12.8"')
    with pytest.raises(RecipeError) as err:
        load(write_recipe, text)
    message = str(err.value)
    line = line_of(text, 'version: "12.8"')
    assert f"gpu.yaml:{line}:" in message
    assert "12.8" in message and "13.0" in message


def test_cuda_version_that_disagrees_with_a_pinned_runtime_wheel_fails(write_recipe):
    # TensorFlow's wheels are CUDA 12 (any minor): the pinned runtime decides the minor.
    text = GPU.replace('      version: "12.9"', '      version: "12.8"')
    with pytest.raises(RecipeError, match=r"cuda.version is 12.8 but .*nvidia-cuda-runtime-cu12"):
        load(write_recipe, text)


def test_nccl_that_is_not_the_pinned_wheel_fails(write_recipe):
    text = GPU.replace('      nccl: "2.29.7"', '      nccl: "2.26"')
    with pytest.raises(RecipeError, match=r"cuda.nccl is 2.26 but .*nvidia-nccl-cu13==2.29.7"):
        load(write_recipe, text)


def test_wheels_of_another_cuda_major_fail(write_recipe):
    text = GPU.replace('"nvidia-nccl-cu13==2.29.7"', '"nvidia-nccl-cu12==2.29.7"')
    with pytest.raises(RecipeError, match=r"nvidia-nccl-cu12==2.29.7 \(CUDA 12\)"):
        load(write_recipe, text)


def test_compute_capability_the_wheel_lacks_fails(write_recipe):
    # PyTorch's own layer narrows the target's capabilities to one its wheel lacks.
    text = GPU.replace(
        '      version: "13.0"\n', '      version: "13.0"\n      compute_capabilities: ["7.0"]\n'
    )
    with pytest.raises(RecipeError, match=r"compute capability 7.0 is not in pytorch 2.13.0"):
        load(write_recipe, text)


def test_binary_compatible_and_ptx_capabilities_are_accepted(write_recipe):
    # 8.6 runs sm_80 kernels, 10.0 JIT-compiles TensorFlow's compute_90 PTX.
    text = GPU.replace(
        'compute_capabilities: ["8.0", "9.0"]', 'compute_capabilities: ["8.6", "10.0"]'
    )
    assert len(load(write_recipe, text)) == 2


def test_nvcc_13_cannot_compile_for_old_gpus(write_recipe):
    # TensorFlow's wheels have sm_60 kernels, but Horovod's are compiled with nvcc 13.
    text = GPU.replace(
        '      version: "12.9"\n', '      version: "12.9"\n      compute_capabilities: ["6.0"]\n'
    )
    with pytest.raises(RecipeError, match=r"nvcc 13 .* cannot compile .* 6.0"):
        load(write_recipe, text)


def test_gpu_target_without_pinned_wheels_fails(write_recipe):
    start = GPU.index('      constraints:\n        - "torch==2.13.0"')
    end = GPU.index("    modules:\n      commands: [python, python3, horovodrun, torchrun]")
    text = GPU[:start] + GPU[end:]
    with pytest.raises(RecipeError, match=r"no pip\.constraints"):
        load(write_recipe, text)


def test_cli_exits_2_with_file_and_line(write_recipe, run_cli):
    text = GPU.replace('      version: "13.0"', '      version: "12.8"')
    code, _, err = run_cli("show", "-r", str(write_recipe(text, "gpu")), "pytorch-gpu")
    assert code == 2 and "Traceback" not in err
    assert "gpu.yaml:" in err and "CUDA 13.0 build" in err
