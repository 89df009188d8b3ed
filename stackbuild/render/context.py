"""Decisions about a variant's build files, made in Python so templates only hold text.

`BuildContext` turns a Variant into the values the templates print: package lists, pip
requirements, the image's environment, labels, the Horovod build switches and the cache
key of the compiled Horovod wheel.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

from stackbuild import __version__
from stackbuild.recipe.matrix import Variant
from validation.plan import AVX512_MARCHES

VENV = "/opt/venv"
STACKBUILD_DIR = "/opt/stackbuild"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Debian packages every runtime / builder stage needs, whatever the recipe says.
RUNTIME_BASE_PACKAGES = ("python3", "python3-venv", "libgomp1", "ca-certificates", "procps")
BUILDER_BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-dev",
    "build-essential",
    "cmake",
    "patch",
    "git",
    "ca-certificates",
)
#: Packages where pip takes the real ones: the CUDA libraries and NCCL come with the frameworks.
MPI_LIB_DIRS = {"mpich": "/usr/lib/x86_64-linux-gnu", "openmpi": "/usr/lib/x86_64-linux-gnu"}


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class PatchFile:
    """A patch as the build script applies it: file name in the context, -p level."""

    name: str
    strip: int


@dataclass(frozen=True)
class BuildContext:
    """The values the Containerfile and its helper scripts are rendered from."""

    variant: Variant

    @property
    def settings(self):
        return self.variant.settings

    @cached_property
    def runtime_packages(self) -> list[str]:
        s = self.settings
        return sorted(
            _unique([*RUNTIME_BASE_PACKAGES, *s.mpi.runtime_packages, *s.os_packages.runtime])
        )

    @cached_property
    def builder_packages(self) -> list[str]:
        s = self.settings
        return sorted(
            _unique(
                [
                    *BUILDER_BASE_PACKAGES,
                    *s.mpi.build_packages,
                    *s.os_packages.build,
                    *(s.cuda.packages if s.cuda else []),
                ]
            )
        )

    @cached_property
    def framework_requirements(self) -> list[str]:
        """Lines of requirements-frameworks.txt: the frameworks Horovod is compiled against."""
        s = self.settings
        lines: list[str] = []
        if s.pytorch is not None and s.pytorch.index_url:
            lines.append(f"--extra-index-url {s.pytorch.index_url}")
        if s.tensorflow is not None:
            lines.append(f"{s.tensorflow.package}=={s.tensorflow.version}")
            lines.extend(s.tensorflow.extra_packages)
        if s.pytorch is not None:
            lines.append(f"{s.pytorch.package}=={s.pytorch.version}")
            lines.extend(s.pytorch.extra_packages)
        return lines

    @property
    def constraints(self) -> list[str]:
        """Lines of constraints.txt: pins for every pip install of both stages."""
        return list(self.settings.pip.constraints)

    @property
    def pip_input_files(self) -> list[str]:
        """Context files every framework install reads (constraints only where pinned)."""
        files = ["files/pip-env.sh", "files/requirements-frameworks.txt"]
        return [*files, "files/constraints.txt"] if self.constraints else files

    @property
    def build_requirements(self) -> list[str]:
        """pip packages only the builder installs (nvcc and CCCL for Horovod's kernels)."""
        return list(self.settings.cuda.build_pip) if self.settings.cuda else []

    @property
    def extra_requirements(self) -> list[str]:
        """Top-level pins installed last, so changing one rebuilds only what follows."""
        return list(self.settings.pip.extra_packages)

    @property
    def runtime_prune(self) -> list[str]:
        """Paths in site-packages that the runtime stage removes (headers: no compiler there)."""
        return list(self.settings.pip.runtime_prune)

    @property
    def runtime_uninstall(self) -> list[str]:
        """Packages the runtime stage uninstalls (what cannot run without a compiler)."""
        return list(self.settings.pip.runtime_uninstall)

    @cached_property
    def pip_environment(self) -> dict[str, str]:
        """Build-time pip settings from the recipe (credentials come from the pip_conf secret)."""
        p = self.settings.pip
        env: dict[str, str] = {}
        if p.index_url:
            env["PIP_INDEX_URL"] = p.index_url
        if p.extra_index_urls:
            env["PIP_EXTRA_INDEX_URL"] = " ".join(p.extra_index_urls)
        if p.find_links:
            env["PIP_FIND_LINKS"] = " ".join(p.find_links)
        if p.constraints:
            env["PIP_CONSTRAINT"] = f"{STACKBUILD_DIR}/constraints.txt"
        return env

    @cached_property
    def download_cache_key(self) -> str:
        """Key of the build cache's download folder: the places pip takes packages from."""
        s = self.settings
        sources = {
            "pip": s.pip.model_dump(
                mode="json", include={"index_url", "extra_index_urls", "find_links", "wheelhouse"}
            ),
            "pytorch_index": s.pytorch.index_url if s.pytorch else None,
        }
        return hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:16]

    @cached_property
    def horovod_environment(self) -> dict[str, str]:
        """HOROVOD_* switches for the wheel build, from frameworks, MPI, ops and the target."""
        s, h = self.settings, self.settings.horovod
        env = {
            "HOROVOD_WITH_TENSORFLOW" if s.tensorflow else "HOROVOD_WITHOUT_TENSORFLOW": "1",
            "HOROVOD_WITH_PYTORCH" if s.pytorch else "HOROVOD_WITHOUT_PYTORCH": "1",
            "HOROVOD_WITHOUT_MXNET": "1",
            "HOROVOD_WITH_MPI" if "mpi" in h.controllers else "HOROVOD_WITHOUT_MPI": "1",
            "HOROVOD_WITH_GLOO" if "gloo" in h.controllers else "HOROVOD_WITHOUT_GLOO": "1",
            # Horovod's CMake adds its own -O and -mavx/-mfma flags; this replaces the latter.
            "HOROVOD_BUILD_ARCH_FLAGS": f"-march={s.platform.march}",
        }
        cpu_ops = [op for op in h.tensor_operations if op in ("gloo", "mpi")]
        if len(cpu_ops) == 1:
            # With both listed Horovod uses Gloo ops under Gloo and MPI ops under MPI.
            env["HOROVOD_CPU_OPERATIONS"] = cpu_ops[0].upper()
        if "nccl" in h.tensor_operations:
            env["HOROVOD_GPU_OPERATIONS"] = "NCCL"
        if s.cuda is not None:
            # HOROVOD_CUDA_HOME, CUDA_HOME and HOROVOD_NCCL_HOME point into the CUDA wheels:
            # build-horovod.sh finds them in site-packages.
            env["HOROVOD_GPU"] = "CUDA"
            env["HOROVOD_NCCL_LINK"] = "SHARED"
            env["HOROVOD_BUILD_CUDA_CC_LIST"] = ",".join(
                cc.replace(".", "") for cc in s.cuda.compute_capabilities
            )
        env.update(h.build_env)
        return dict(sorted(env.items()))

    @cached_property
    def horovod_patches(self) -> list[PatchFile]:
        """The recipe's Horovod patches in order, as copied into files/horovod/patches/."""
        return [
            PatchFile(file.name, patch.strip)
            for file, patch in zip(
                self.variant.patch_files, self.settings.horovod.patches, strict=True
            )
        ]

    @cached_property
    def horovod_cache_key(self) -> str:
        """Key of the compiled-wheel cache: everything that changes the Horovod binary."""
        s = self.settings
        material = {
            "horovod": s.horovod.model_dump(mode="json", exclude={"patches"}),
            "patches": [
                hashlib.sha256(p.read_bytes()).hexdigest() for p in self.variant.patch_files
            ],
            "frameworks": self.framework_requirements,
            "mpi": s.mpi.model_dump(mode="json"),
            "cuda": s.cuda.model_dump(mode="json") if s.cuda else None,
            "platform": s.platform.model_dump(mode="json", exclude={"description"}),
            "builder_image": s.base.builder_image or s.base.image,
            "builder_packages": self.builder_packages,
            "environment": self.horovod_environment,
        }
        # Only where set, so that recipes without them keep the keys of their cached wheels.
        if self.constraints:
            material["constraints"] = self.constraints
        if self.build_requirements:
            material["build_requirements"] = self.build_requirements
        blob = json.dumps(material, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    @cached_property
    def threads(self) -> dict[str, str]:
        """OpenMP and TensorFlow thread-pool variables that the target fixes (not 'auto')."""
        t = self.settings.threads
        env: dict[str, str] = {}
        if t.omp_num_threads != "auto":
            env["OMP_NUM_THREADS"] = str(t.omp_num_threads)
        if t.intra_op != "auto":
            env["TF_NUM_INTRAOP_THREADS"] = str(t.intra_op)
        if t.inter_op != "auto":
            env["TF_NUM_INTEROP_THREADS"] = str(t.inter_op)
        return env

    @cached_property
    def runtime_environment(self) -> dict[str, str]:
        """ENV of the final image; PATH and LD_LIBRARY_PATH live here (Shifter drops LD_*)."""
        s = self.settings
        lib_dirs = [f"{VENV}/lib", "/usr/local/lib", MPI_LIB_DIRS[s.mpi.flavor]]
        if s.cuda is not None:
            # Where container runtimes commonly put the node's driver library. The CUDA
            # wheels' own libraries are found through ld.so.conf (runtimes overwrite LD_*).
            lib_dirs = ["/usr/local/nvidia/lib64", *lib_dirs]
        env = {
            "PATH": f"{VENV}/bin:{SYSTEM_PATH}",
            "LD_LIBRARY_PATH": ":".join(_unique(lib_dirs)),
            "VIRTUAL_ENV": VENV,
            "PYTHONPATH": STACKBUILD_DIR,
            "PYTHONNOUSERSITE": "1",
            "STACKBUILD_VARIANT": self.variant.name,
            "STACKBUILD_RECIPE": self.variant.recipe_name,
        }
        if s.tensorflow is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = "1" if s.tensorflow.onednn else "0"
            env["TF_CPP_MIN_LOG_LEVEL"] = "1"
        env.update(self.threads)
        env.update(self.distribution_environment)
        env.update(s.env)
        return env

    @property
    def needs_avx512(self) -> bool:
        """Code compiled for this target needs AVX-512: it cannot run on every build host."""
        return self.settings.platform.march in AVX512_MARCHES

    @property
    def hierarchical_allreduce(self) -> bool:
        """Horovod's hybrid all-reduce: NCCL inside a node, MPI between nodes."""
        s = self.settings
        if s.horovod.hierarchical_allreduce is not None:
            return s.horovod.hierarchical_allreduce
        return (
            s.cuda is not None
            and "nccl" in s.horovod.tensor_operations
            and "mpi" in s.horovod.controllers
            and s.jobs.ranks_per_node > 1
        )

    @cached_property
    def distribution_environment(self) -> dict[str, str]:
        """Horovod run-time switches the recipe implies: the image, modules and jobs set them."""
        if not self.hierarchical_allreduce:
            return {}
        # Reduce-scatter over NCCL inside each node, all-reduce over MPI between the nodes'
        # local roots, all-gather over NCCL: inter-node traffic drops by ranks_per_node.
        return {"HOROVOD_HIERARCHICAL_ALLREDUCE": "1"}

    @cached_property
    def job_environment(self) -> dict[str, str]:
        """What module files and job scripts export: threads and distribution switches."""
        return {**self.threads, **self.distribution_environment}

    @cached_property
    def labels(self) -> dict[str, str]:
        """OCI labels: recipe, variant, versions (the revision label comes from a build arg)."""
        v, s = self.variant, self.settings
        labels = {
            "org.opencontainers.image.title": f"{v.image_name}:{v.image_tag}",
            "org.opencontainers.image.description": " ".join(v.stack.description.split()),
            "org.opencontainers.image.version": v.stack.version,
            "org.opencontainers.image.authors": ", ".join(v.stack.maintainers),
            "org.opencontainers.image.vendor": v.stack.labels.get(
                "org.opencontainers.image.vendor", "stackbuild"
            ),
            "io.stackbuild.recipe": v.recipe_name,
            "io.stackbuild.recipe.digest": v.recipe_digest,
            "io.stackbuild.variant": v.name,
            "io.stackbuild.target": v.target,
            "io.stackbuild.horovod.version": s.horovod.version,
            "io.stackbuild.mpi": s.mpi.flavor,
            "io.stackbuild.generator": f"stackbuild {__version__}",
        }
        if s.tensorflow is not None:
            labels["io.stackbuild.tensorflow.version"] = s.tensorflow.version
        if s.pytorch is not None:
            labels["io.stackbuild.pytorch.version"] = s.pytorch.version
        if s.cuda is not None:
            labels["io.stackbuild.cuda.version"] = s.cuda.version
            labels["io.stackbuild.cuda.compute-capabilities"] = ",".join(
                s.cuda.compute_capabilities
            )
            labels["io.stackbuild.cudnn.version"] = s.cuda.cudnn
            labels["io.stackbuild.nccl.version"] = s.cuda.nccl
            if s.cuda.driver:
                labels["io.stackbuild.cuda.driver"] = f">={s.cuda.driver}"
        labels.update(v.stack.labels)
        return dict(sorted(labels.items()))
