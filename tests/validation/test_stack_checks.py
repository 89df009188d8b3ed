"""Stack checks compare what the probe found with the recipe's expectations, from the recipe."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from stackbuild import PROJECT_ROOT
from stackbuild.recipe import expand_matrix, load_recipe, select_variant
from validation.checks import CheckResult
from validation.plan import (
    ValidationRequest,
    host_cpu_flags,
    missing_cpu_flags,
    plan_jobs,
    stack_expectations,
)
from validation.runner import report_verdict
from validation.stack_checks import stack_checks

CPU = (PROJECT_ROOT / "recipes/cpu.yaml").read_text()


def expectations(write_recipe, text: str, variant: str) -> dict[str, Any]:
    v = select_variant(expand_matrix(load_recipe(write_recipe(text))), variant)
    return stack_expectations(v.settings.model_dump(mode="json"), v.frameworks, v.target)


def shipped(recipe: str, variant: str) -> dict[str, Any]:
    v = select_variant(expand_matrix(load_recipe(PROJECT_ROOT / f"recipes/{recipe}.yaml")), variant)
    return stack_expectations(v.settings.model_dump(mode="json"), v.frameworks, v.target)


def cpu_probe(**changes: Any) -> dict[str, Any]:
    """What the probe sees in a healthy pytorch-cpu image."""
    probe: dict[str, Any] = {
        "framework": "pytorch",
        "pytorch": {"version": "2.13.0+cpu", "gpu_count": 0, "cuda_build": None},
        "horovod": {
            "available": True,
            "version": "0.28.1",
            "check_build": {
                "frameworks": {"TensorFlow": False, "PyTorch": True},
                "controllers": {"MPI": True, "Gloo": True},
                "tensor operations": {"NCCL": False, "MPI": True, "Gloo": True},
            },
            "clean_env_import": {
                "ok": True,
                "nccl_built": 0,
                "loaded": ["/usr/lib/x86_64-linux-gnu/libmpich.so.12.1.2"],
            },
        },
        "compilers": {"on_path": [], "nvcc_in_site_packages": []},
        "cuda": {"wheels": {}, "userspace": {}, "libcuda": []},
        "horovod_isa": {
            "march": "x86-64-v3",
            "libraries": {
                "horovod/torch/mpi_lib_v2.so": {"instructions": 9, "zmm": 0, "opmask": 0}
            },
        },
    }
    probe.update(changes)
    return probe


def gpu_probe() -> dict[str, Any]:
    """What the probe sees in a healthy pytorch-gpu image on a machine without a GPU."""
    probe = cpu_probe()
    probe["pytorch"] = {
        "version": "2.13.0+cu130",
        "cuda_build": "13.0",
        "gpu_count": 0,
        "nccl_available": True,
        "nccl_version": "2.29.7",
        "cudnn_version": "9.20.0",
        "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
    }
    probe["horovod"]["check_build"]["tensor operations"]["NCCL"] = True
    probe["horovod"]["clean_env_import"]["nccl_built"] = 22907
    probe["cuda"] = {
        "wheels": {},
        "userspace": {"cudart": "13.0.96", "cudnn": "9.20.0.48", "nccl": "2.29.7"},
        "libcuda": [],
    }
    # As cuobjdump listed a pytorch-gpu build's library (cubins for 8.0 and 9.0, PTX for 9.0)
    lib = probe["horovod_isa"]["libraries"]["horovod/torch/mpi_lib_v2.so"]
    lib.update(cuda_elf=["sm_80", "sm_90"], cuda_ptx=["sm_90"])
    return probe


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def test_a_healthy_cpu_image_passes_every_stack_check() -> None:
    results = stack_checks(cpu_probe(), shipped("cpu", "pytorch-cpu"))
    assert {r.verdict for r in results} == {"pass"}, [r for r in results if r.verdict != "pass"]
    assert "gpu-visible" not in by_name(results)


def test_the_horovod_check_follows_the_recipes_controllers(write_recipe) -> None:
    probe = cpu_probe()
    probe["horovod"]["check_build"]["controllers"]["MPI"] = False  # a Gloo-only Horovod
    both = expectations(write_recipe, CPU, "pytorch-cpu")
    assert by_name(stack_checks(probe, both))["horovod-build"].verdict == "fail"
    assert "controllers:MPI" in str(by_name(stack_checks(probe, both))["horovod-build"].measured)
    gloo_only = CPU.replace(
        "    controllers: [gloo, mpi]\n    tensor_operations: [gloo, mpi]",
        "    controllers: [gloo]\n    tensor_operations: [gloo]",
    )
    assert gloo_only != CPU
    expect = expectations(write_recipe, gloo_only, "pytorch-cpu")
    assert expect["horovod"]["controllers"] == ["Gloo"]
    assert by_name(stack_checks(probe, expect))["horovod-build"].verdict == "pass"


def test_a_framework_version_mismatch_names_both_values() -> None:
    probe = cpu_probe(pytorch={"version": "2.12.1+cpu", "gpu_count": 0})
    result = by_name(stack_checks(probe, shipped("cpu", "pytorch-cpu")))["framework-version"]
    assert result.verdict == "fail"
    assert (result.measured, result.reference) == ("2.12.1+cpu", "2.13.0")


def test_the_mpi_flavor_check_reads_which_libmpi_horovod_loaded() -> None:
    probe = cpu_probe()
    probe["horovod"]["clean_env_import"]["loaded"] = ["/usr/lib/x86_64-linux-gnu/libmpi.so.40"]
    result = by_name(stack_checks(probe, shipped("cpu", "pytorch-cpu")))["mpi-flavor"]
    assert result.verdict == "fail" and result.reference == "mpich"
    assert "libmpi.so.40" in str(result.measured)


def test_a_compiler_in_the_runtime_image_fails() -> None:
    probe = cpu_probe(compilers={"on_path": ["gcc"], "nvcc_in_site_packages": []})
    assert by_name(stack_checks(probe, shipped("cpu", "pytorch-cpu")))["no-compiler"].verdict == (
        "fail"
    )


def test_avx512_must_be_in_a_knl_horovod_and_absent_from_an_x86_64_v3_one() -> None:
    knl = shipped("knl", "pytorch-knl")
    assert knl["avx512"] and knl["march"] == "knl"
    generic = by_name(stack_checks(cpu_probe(), knl))["horovod-isa"]
    assert generic.verdict == "fail" and generic.measured == 0
    probe = cpu_probe()
    probe["horovod_isa"] = {
        "march": "knl",
        "libraries": {"horovod/torch/mpi_lib_v2.so": {"instructions": 9, "zmm": 40, "opmask": 3}},
    }
    assert by_name(stack_checks(probe, knl))["horovod-isa"].verdict == "pass"
    assert by_name(stack_checks(probe, shipped("cpu", "pytorch-cpu")))["horovod-isa"].verdict == (
        "fail"
    )


def test_a_gpu_image_without_a_gpu_is_stack_checked_not_validated() -> None:
    expect = shipped("gpu", "pytorch-gpu")
    results = stack_checks(gpu_probe(), expect)
    named = by_name(results)
    for check in (
        "cuda-version",
        "cuda-arch",
        "cudnn-version",
        "nccl-version",
        "horovod-nccl",
        "horovod-cuda-arch",
        "torch-nccl-backend",
        "no-libcuda-in-image",
    ):
        assert named[check].verdict == "pass", named[check]
    assert named["gpu-visible"].verdict == "not-run"
    assert report_verdict(results) == "stack checked; not validated on a GPU"


def test_gpu_stack_mismatches_fail_naming_both_values() -> None:
    expect = shipped("gpu", "pytorch-gpu")
    probe = gpu_probe()
    probe["pytorch"]["cuda_build"] = "12.8"
    probe["pytorch"]["arch_list"] = ["sm_90"]
    probe["horovod"]["clean_env_import"]["nccl_built"] = 22605
    probe["cuda"]["libcuda"] = ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"]
    named = by_name(stack_checks(probe, expect))
    assert (named["cuda-version"].measured, named["cuda-version"].reference) == ("12.8", "13.0")
    assert named["cuda-arch"].measured == "8.0"
    assert (named["horovod-nccl"].measured, named["horovod-nccl"].reference) == (
        "2.26.5",
        "2.29.7",
    )
    assert named["no-libcuda-in-image"].verdict == "fail"
    assert report_verdict(list(named.values())) == "failed"


def test_horovods_cuda_kernels_must_cover_the_recipes_compute_capabilities() -> None:
    expect = shipped("gpu", "pytorch-gpu")
    assert expect["cuda"]["compute_capabilities"] == ["8.0", "9.0"]
    probe = gpu_probe()
    lib = probe["horovod_isa"]["libraries"]["horovod/torch/mpi_lib_v2.so"]
    lib["cuda_elf"] = ["sm_90"]  # built for 9.0 only: an A100 node would have no kernels
    result = by_name(stack_checks(probe, expect))["horovod-cuda-arch"]
    assert (result.verdict, result.measured, result.reference) == ("fail", "8.0", "8.0, 9.0")
    assert "cubins sm_90, PTX sm_90" in result.detail
    lib["cuda_elf"], lib["cuda_ptx"] = [], []  # a Horovod built without its CUDA kernels
    result = by_name(stack_checks(probe, expect))["horovod-cuda-arch"]
    assert (result.verdict, result.measured) == ("fail", "no CUDA code")
    del lib["cuda_elf"]  # an image whose builder did not list them
    result = by_name(stack_checks(probe, expect))["horovod-cuda-arch"]
    assert result.verdict == "fail" and "no CUDA architecture list" in result.detail


def test_a_gpu_image_on_a_gpu_can_pass() -> None:
    probe = copy.deepcopy(gpu_probe())
    probe["pytorch"]["gpu_count"] = 1
    results = stack_checks(probe, shipped("gpu", "pytorch-gpu"))
    assert report_verdict(results) == "passed"


def test_knl_training_is_not_run_without_avx512_and_the_verdict_says_why(tmp_path: Path) -> None:
    request = ValidationRequest(
        out_dir=tmp_path,
        image="img",
        frameworks=("pytorch",),
        suites=("cosmoflow",),
        expect=shipped("knl", "pytorch-knl"),
        host_cpu_flags=frozenset({"avx2", "fma"}),
    )
    jobs = plan_jobs(request)
    assert [j.kind for j in jobs if not j.not_run] == ["probe"]
    assert all("needs AVX-512" in j.not_run for j in jobs if j.kind != "probe")
    knl = frozenset({"avx2", "avx512f", "avx512cd", "avx512er", "avx512pf"})
    runs_here = ValidationRequest(**{**request.__dict__, "host_cpu_flags": knl})
    assert not any(j.not_run for j in plan_jobs(runs_here))


def test_a_knl_image_does_not_run_on_a_later_avx512_xeon(tmp_path: Path) -> None:
    """Skylake and later have AVX-512F but not Xeon Phi's ER/PF: -march=knl code may use them."""
    skylake = frozenset({"avx2", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
    knl = shipped("knl", "pytorch-knl")
    assert missing_cpu_flags(knl, skylake) == ["avx512er", "avx512pf"]
    request = ValidationRequest(
        out_dir=tmp_path,
        image="img",
        frameworks=("pytorch",),
        suites=("cosmoflow",),
        expect=knl,
        host_cpu_flags=skylake,
    )
    not_run = [j.not_run for j in plan_jobs(request) if j.kind != "probe"]
    assert not_run and all("lacks avx512er, avx512pf" in reason for reason in not_run)
    skx_image = {**knl, "march": "skylake-avx512"}
    assert missing_cpu_flags(skx_image, skylake) == []
    assert missing_cpu_flags({**knl, "avx512": False}, frozenset()) == []


def test_cpu_flags_come_from_the_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512er\nbugs\t: x\n")
    assert host_cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512f", "avx512er"}
    assert host_cpu_flags(tmp_path / "absent") == frozenset()


def test_not_run_training_makes_the_avx512_verdict(tmp_path: Path) -> None:
    not_run = CheckResult(
        "job-completed",
        "correctness",
        "cosmoflow-pytorch-r1",
        "not-run",
        None,
        None,
        "n/a",
        "plan",
        "not run: needs AVX-512 (the image is compiled for -march=knl) ...",
    )
    passed = CheckResult(
        "framework-version", "stack", "pytorch", "pass", "2.13.0", "2.13.0", "", ""
    )
    assert report_verdict([passed, not_run]) == "built and stack-checked; not run: needs AVX-512"
    assert report_verdict([passed]) == "passed"


def test_every_image_carries_its_expectations(write_recipe) -> None:
    import json

    from stackbuild.render.renderer import render_files

    v = select_variant(expand_matrix(load_recipe(PROJECT_ROOT / "recipes/gpu.yaml")), "pytorch-gpu")
    info = next(f for f in render_files(v) if f.path == "files/stackbuild-info.json")
    expect = json.loads(info.content)["expect"]
    assert expect["cuda"]["version"] == "13.0" and expect["cuda"]["nccl"] == "2.29.7"
    assert expect["horovod"]["tensor_operations"] == ["NCCL", "MPI"]


def test_checks_that_run_horovod_are_not_run_where_its_instruction_set_is_missing() -> None:
    knl = shipped("knl", "pytorch-knl")
    probe = cpu_probe()
    probe["horovod"] = {"available": True, "reason": "check-build crashed (SIGILL)"}
    probe["horovod_isa"]["libraries"]["horovod/torch/mpi_lib_v2.so"]["zmm"] = 12
    named = by_name(stack_checks(probe, knl, runs_here=False))
    for check in ("horovod-build", "mpi-flavor", "horovod-import-empty-ld-path"):
        assert named[check].verdict == "not-run" and "needs AVX-512" in named[check].detail
    assert named["horovod-isa"].verdict == "pass"
    assert report_verdict(list(named.values())) == (
        "built and stack-checked; not run: needs AVX-512"
    )
