"""Stack checks: what the probe found in the image against what its recipe asked for.

The expectations come from the recipe through the image (`validation.plan.stack_expectations`,
in stackbuild-info.json), never from constants here. Every check names both values when they
differ. All of them run without a GPU except `GpuVisibleCheck`, whose verdict on a machine
without one is "not run": a GPU image is then stack-checked, not validated.
"""

from __future__ import annotations

from typing import Any, ClassVar

from validation.checks import NOT_RUN, Check, CheckResult

Probe = dict[str, Any]
Expect = dict[str, Any]

SOURCE_RECIPE = "the image's recipe (stackbuild-info.json `expect`)"


def _fw(probe: Probe) -> tuple[str, dict[str, Any]]:
    name = probe["framework"]
    return name, probe.get(name) or {}


def _prefix_match(found: str | None, wanted: str) -> bool:
    """'2.13.0+cu130' matches '2.13.0'; '9.20.0' matches '9.20'; '2.29.7' matches '2.29.7'."""
    if not found:
        return False
    base = found.split("+")[0]
    return base == wanted or base.startswith(wanted + ".")


def _nccl_code(code: int) -> str:
    """Horovod's nccl_built() code (NCCL_VERSION_CODE: major*10000 + minor*100 + patch)."""
    major, rest = divmod(code, 10000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def _present_exactly_when(
    check: Check, subject: str, count: int, wanted: bool, what: str, detail: str
) -> CheckResult:
    """Pass if `count` things were found exactly when the recipe wants them (else none)."""
    if wanted:
        return check.result(subject, count > 0, count, 1, f"{what} >=", detail)
    return check.result(subject, count == 0, count, 0, f"{what} == (off)", detail)


class FrameworkVersionCheck(Check):
    """The framework in the image is the version the recipe names."""

    name = "framework-version"
    category = "stack"
    source = SOURCE_RECIPE

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        fw, info = _fw(probe)
        wanted = (expect.get("frameworks") or {}).get(fw)
        found = info.get("version")
        return self.result(
            fw, _prefix_match(found, str(wanted)), found, wanted, "version ==", f"{fw} in image"
        )


class HorovodBuildCheck(Check):
    """`horovodrun --check-build` lists the recipe's frameworks, controllers and operations."""

    name = "horovod-build"
    category = "stack"
    source = SOURCE_RECIPE + "; `horovodrun --check-build`"

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        hvd = probe.get("horovod") or {}
        if not hvd.get("available"):
            return self.result(
                "horovod",
                False,
                None,
                "importable",
                "import",
                hvd.get("reason", "horovod not importable"),
            )
        wanted = expect.get("horovod") or {}
        sections = {
            "frameworks": wanted.get("frameworks", []),
            "controllers": wanted.get("controllers", []),
            "tensor operations": wanted.get("tensor_operations", []),
        }
        built = hvd.get("check_build") or {}
        missing = [
            f"{section}:{item}"
            for section, items in sections.items()
            for item in items
            if not built.get(section, {}).get(item, False)
        ]
        want = ", ".join(f"{s}:{i}" for s, items in sections.items() for i in items)
        have = ", ".join(f"{s}:{i}" for s, items in built.items() for i, on in items.items() if on)
        return self.result(
            "horovod",
            not missing,
            ", ".join(missing) or "none missing",
            want,
            "every recipe item built",
            f"Horovod {hvd.get('version', '?')} built with: {have}",
        )


class MpiFlavorCheck(Check):
    """Horovod loads the MPI library of the recipe's flavour (MPICH ABI for the site swap)."""

    name = "mpi-flavor"
    category = "stack"
    source = SOURCE_RECIPE + "; libraries mapped after `import horovod`"
    #: The soname each flavour's libmpi has (MPICH ABI: libmpi.so.12, Open MPI: .40).
    SONAMES: ClassVar[dict[str, tuple[str, ...]]] = {
        "mpich": ("libmpich.so.12", "libmpi.so.12"),
        "openmpi": ("libmpi.so.40",),
    }

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        flavor = expect.get("mpi_flavor", "mpich")
        loaded = ((probe.get("horovod") or {}).get("clean_env_import") or {}).get("loaded", [])
        mpi = [lib for lib in loaded if "libmpi" in lib]
        ok = any(name in lib for lib in mpi for name in self.SONAMES.get(flavor, ()))
        return self.result(
            "horovod", ok, ", ".join(mpi) or "no MPI library loaded", flavor, "MPI flavour =="
        )


class OneDNNExpectedCheck(Check):
    """TensorFlow runs oneDNN convolutions exactly when the recipe turns oneDNN on."""

    name = "tf-onednn"
    category = "stack"
    source = (
        "REFERENCE.md: CPU TensorFlow optimised with MKL-DNN/oneDNN; seen via ONEDNN_VERBOSE; "
        + SOURCE_RECIPE
    )

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        tf = probe.get("tensorflow") or {}
        onednn = tf.get("onednn") or {}
        conv = (onednn.get("primitives") or {}).get("convolution", 0)
        wanted = bool(expect.get("onednn"))
        detail = f"TF_ENABLE_ONEDNN_OPTS={onednn.get('TF_ENABLE_ONEDNN_OPTS')}"
        return _present_exactly_when(
            self, "tensorflow", conv, wanted, "oneDNN convolutions", detail
        )


class CudaVersionCheck(Check):
    """The image's CUDA userspace is the version the recipe names."""

    name = "cuda-version"
    category = "gpu-stack"
    source = SOURCE_RECIPE

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        fw, info = _fw(probe)
        wanted = expect["cuda"]["version"]
        userspace = (probe.get("cuda") or {}).get("userspace") or {}
        if fw == "pytorch":
            found = info.get("cuda_build")
            detail = f"torch.version.cuda; cudart wheel {userspace.get('cudart')}"
        else:
            found = userspace.get("cudart")
            detail = (
                f"cudart wheel; TensorFlow compiled against CUDA {info.get('build_cuda_version')}"
            )
        return self.result(fw, _prefix_match(found, wanted), found, wanted, "version ==", detail)


class CudaArchCheck(Check):
    """The framework's kernels cover every compute capability the recipe names."""

    name = "cuda-arch"
    category = "gpu-stack"
    source = SOURCE_RECIPE + "; torch.cuda.get_arch_list / tf.sysconfig.get_build_info"

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        fw, info = _fw(probe)
        archs = [str(a) for a in info.get("arch_list") or []]
        missing = []
        for cc in expect["cuda"]["compute_capabilities"]:
            digits = cc.replace(".", "")
            # sm_XY: compiled kernels; compute_XY: PTX the driver compiles for that GPU.
            if f"sm_{digits}" not in archs and f"compute_{digits}" not in archs:
                missing.append(cc)
        return self.result(
            fw,
            bool(archs) and not missing,
            ", ".join(missing) or "none missing",
            ", ".join(expect["cuda"]["compute_capabilities"]),
            "recipe capabilities in the framework's architectures",
            f"framework architectures: {', '.join(archs) or 'none'}",
        )


class _LibraryVersionCheck(Check):
    """A CUDA library in the image is the version the recipe names (PyTorch reports its
    own; for TensorFlow the installed wheel's version is what it loads)."""

    category = "gpu-stack"
    source = SOURCE_RECIPE
    library = ""  # key in the recipe's cuda facts and in the probe's userspace
    torch_key = ""  # what torch_info() reports for it
    label = ""

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        fw, info = _fw(probe)
        wanted = expect["cuda"][self.library]
        wheel = ((probe.get("cuda") or {}).get("userspace") or {}).get(self.library)
        found = info.get(self.torch_key) if fw == "pytorch" else wheel
        return self.result(
            fw,
            _prefix_match(found, wanted),
            found,
            wanted,
            "version ==",
            f"{self.label} wheel {wheel}",
        )


class CudnnVersionCheck(_LibraryVersionCheck):
    """cuDNN in the image is the version the recipe names."""

    name = "cudnn-version"
    library, torch_key, label = "cudnn", "cudnn_version", "cuDNN"


class NcclVersionCheck(_LibraryVersionCheck):
    """NCCL in the image is the version the recipe names."""

    name = "nccl-version"
    library, torch_key, label = "nccl", "nccl_version", "NCCL"


class TorchNcclBackendCheck(Check):
    """torch.distributed has its NCCL backend."""

    name = "torch-nccl-backend"
    category = "gpu-stack"
    source = "REFERENCE.md: torch.distributed backend nccl on GPUs"

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        info = probe.get("pytorch") or {}
        ok = bool(info.get("nccl_available"))
        return self.result("pytorch", ok, ok, True, "is_nccl_available() ==")


class HorovodNcclCheck(Check):
    """Horovod was built with NCCL, the same version as the image's NCCL."""

    name = "horovod-nccl"
    category = "gpu-stack"
    source = "hvd.nccl_built() against the image's NCCL wheel"

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        clean = (probe.get("horovod") or {}).get("clean_env_import") or {}
        code = int(clean.get("nccl_built") or 0)
        found = _nccl_code(code) if code else None
        wheel = ((probe.get("cuda") or {}).get("userspace") or {}).get("nccl")
        return self.result(
            "horovod",
            found is not None and _prefix_match(wheel, found),
            found or "not built with NCCL",
            wheel,
            "NCCL version ==",
            f"nccl_built()={code}; recipe says {expect['cuda']['nccl']}",
        )


class CleanLibraryPathCheck(Check):
    """Horovod imports with LD_LIBRARY_PATH empty: its libraries come from RUNPATH/ld.so.conf."""

    name = "horovod-import-empty-ld-path"
    category = "stack"
    source = "REFERENCE.md: site runtimes overwrite LD_LIBRARY_PATH (Shifter, podman-hpc modules)"

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        clean = (probe.get("horovod") or {}).get("clean_env_import") or {}
        ok = bool(clean.get("ok"))
        return self.result(
            "horovod",
            ok,
            "imported" if ok else "failed",
            "imported",
            "import with LD_LIBRARY_PATH=''",
            "; ".join(clean.get("error", [])) or ", ".join(clean.get("loaded", [])),
        )


class NoCompilerCheck(Check):
    """The runtime image has no nvcc and no C compiler."""

    name = "no-compiler"
    category = "stack"
    source = "design: compilers stay in the builder stage"

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        compilers = probe.get("compilers") or {}
        found = [*compilers.get("on_path", []), *compilers.get("nvcc_in_site_packages", [])]
        return self.result("image", not found, ", ".join(found) or "none", "none", "compilers ==")


class NoLibcudaCheck(Check):
    """No libcuda (stub or copy) in the image: the node's driver library must be found."""

    name = "no-libcuda-in-image"
    category = "gpu-stack"
    source = "REFERENCE.md: leave no libcuda stub in the image's library path"

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        found = (probe.get("cuda") or {}).get("libcuda", [])
        return self.result("image", not found, ", ".join(found) or "none", "none", "libcuda ==")


class HorovodIsaCheck(Check):
    """Horovod's compiled libraries use AVX-512 exactly when the target's -march has it."""

    name = "horovod-isa"
    category = "stack"
    source = SOURCE_RECIPE + "; objdump of Horovod's libraries in the builder stage"

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        isa = probe.get("horovod_isa")
        if not isa:
            return self.result(
                "horovod", False, None, None, "n/a", "no horovod-isa.json in the image"
            )
        libs = isa.get("libraries") or {}
        wide = sum(int(v.get("zmm", 0)) + int(v.get("opmask", 0)) for v in libs.values())
        total = sum(int(v.get("instructions", 0)) for v in libs.values())
        want = bool(expect.get("avx512"))
        detail = f"-march={isa.get('march')}; {total} instructions in {len(libs)} libraries"
        return _present_exactly_when(self, "horovod", wide, want, "AVX-512 instructions", detail)


class HorovodCudaArchCheck(Check):
    """Horovod's CUDA kernels are compiled for every compute capability the recipe names."""

    name = "horovod-cuda-arch"
    category = "gpu-stack"
    source = SOURCE_RECIPE + "; cuobjdump of Horovod's libraries in the builder stage"

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        wanted = list(expect["cuda"]["compute_capabilities"])
        libs = (probe.get("horovod_isa") or {}).get("libraries") or {}
        listed = {name: v for name, v in libs.items() if "cuda_elf" in v}
        if not listed:
            reason = "no CUDA architecture list (cuobjdump) in horovod-isa.json"
            return self.result("horovod", False, None, ", ".join(wanted), "n/a", reason)
        with_code = {n: v for n, v in listed.items() if v["cuda_elf"] or v.get("cuda_ptx")}
        missing = sorted(
            {
                cc
                for v in with_code.values()
                for cc in wanted
                if f"sm_{cc.replace('.', '')}" not in v["cuda_elf"]
            }
        )
        found = [
            f"{n}: cubins {', '.join(v['cuda_elf']) or 'none'},"
            f" PTX {', '.join(v.get('cuda_ptx') or []) or 'none'}"
            for n, v in sorted(with_code.items())
        ]
        return self.result(
            "horovod",
            bool(with_code) and not missing,
            ", ".join(missing) or ("none missing" if with_code else "no CUDA code"),
            ", ".join(wanted),
            "recipe capabilities compiled (sm_XY cubins) in each library with CUDA code",
            "; ".join(found) or "no CUDA code in any of Horovod's libraries",
        )


class GpuVisibleCheck(Check):
    """A GPU image sees a GPU: only then are its GPU paths validated."""

    name = "gpu-visible"
    category = "gpu"
    source = "REFERENCE.md: kernels, collectives and driver compatibility need a GPU"

    def evaluate(self, probe: Probe, expect: Expect) -> CheckResult:
        fw, info = _fw(probe)
        gpus = int(info.get("gpu_count") or 0)
        if gpus == 0:
            return self.result(
                fw,
                None,
                0,
                1,
                "GPUs >=",
                "not validated on a GPU: no GPU is visible on this machine",
                verdict=NOT_RUN,
            )
        return self.result(fw, True, gpus, 1, "GPUs >=")


#: Checks that run Horovod's compiled code: an AVX-512 build cannot on a CPU without it.
RUN_HOROVOD = (HorovodBuildCheck, MpiFlavorCheck, CleanLibraryPathCheck, HorovodNcclCheck)


def stack_checks(probe: Probe, expect: Expect, runs_here: bool = True) -> list[CheckResult]:
    """Every stack check that applies to this probe, given the recipe's expectations.

    runs_here False: the image's compiled code needs an instruction set this machine lacks
    (AVX-512), so the checks that run it are reported as not run, with the reason."""
    fw = probe["framework"]
    checks: list[Check] = [
        FrameworkVersionCheck(),
        HorovodBuildCheck(),
        MpiFlavorCheck(),
        CleanLibraryPathCheck(),
        NoCompilerCheck(),
        HorovodIsaCheck(),
    ]
    if fw == "tensorflow":
        checks.append(OneDNNExpectedCheck())
    if expect.get("cuda"):
        checks += [
            CudaVersionCheck(),
            CudaArchCheck(),
            CudnnVersionCheck(),
            NcclVersionCheck(),
            HorovodNcclCheck(),
            HorovodCudaArchCheck(),
            NoLibcudaCheck(),
            GpuVisibleCheck(),
        ]
        if fw == "pytorch":
            checks.append(TorchNcclBackendCheck())
    results = []
    for check in checks:
        if not runs_here and isinstance(check, RUN_HOROVOD):
            reason = (
                f"not run: needs AVX-512 (Horovod is compiled for -march={expect.get('march')})"
                " and this machine's CPU lacks its extensions"
            )
            results.append(check.result("horovod", None, None, None, "n/a", reason, NOT_RUN))
            continue
        results.append(check.evaluate(probe, expect))  # type: ignore[attr-defined]
    return results
