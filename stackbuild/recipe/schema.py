"""The recipe schema: what a recipe may say, checked before anything renders.

A recipe has fixed parts (stack, matrix, overrides) and *settings layers*: `defaults`,
each entry of `targets` and each entry of `frameworks` is a partial `Settings`. A
variant's settings are those layers merged in order (see stackbuild.recipe.matrix).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Strings that end up on shell lines unquoted by people's habits: keep them boring.
# Shell metacharacters (; & | $ ` ( ) < > space quotes backslash) are rejected.
Version = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_~-]*$", max_length=64)
]
PackageName = Annotated[
    str,
    StringConstraints(
        # pip requirement or Debian package: name, optional [extras], optional version specs
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*(\[[A-Za-z0-9,._-]+\])?"
        r"((==|>=|<=|~=|!=|<|>|=)[A-Za-z0-9.*+!_~:-]+)?(,(==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!_~-]+)*$",
        max_length=200,
    ),
]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# A path inside site-packages: relative, no `..`, no shell metacharacters.
SitePath = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$", max_length=200
    ),
]
ImageRef = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$", max_length=255)]


class Strict(BaseModel):
    """Base for every schema model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StackInfo(Strict):
    """Who and what the stack is."""

    name: Name
    version: Version
    description: str
    maintainers: list[str] = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    license_notes: str = ""


class Bootstrap(Strict):
    """Make the base image with debootstrap where no registry is reachable."""

    suite: Name = "bookworm"
    variant: Literal["minbase", "buildd"] = "minbase"
    mirror: str | None = None


class Base(Strict):
    """The image every stage starts from."""

    image: ImageRef = "localhost/stackbuild/base:bookworm-minbase"
    builder_image: ImageRef | None = None  # defaults to `image`; e.g. a CUDA -devel image
    bootstrap: Bootstrap | None = Field(default_factory=Bootstrap)
    apptainer_bootstrap: Literal["docker", "docker-daemon", "docker-archive", "oci-archive"] = (
        "docker-daemon"
    )


class Platform(Strict):
    """The node the image is compiled for."""

    arch: Literal["x86_64", "aarch64", "ppc64le"] = "x86_64"
    march: Version = "x86-64-v3"
    description: str = ""


class Cuda(Strict):
    """CUDA stack of a GPU target."""

    version: Version
    compute_capabilities: list[Annotated[str, StringConstraints(pattern=r"^\d+\.\d+$")]] = Field(
        min_length=1
    )
    cudnn: Version
    nccl: Version
    packages: list[PackageName] = Field(default_factory=list)


class Threads(Strict):
    """Threading of one rank: OpenMP and TensorFlow inter/intra-op pools ("auto": per core)."""

    omp_num_threads: int | Literal["auto"] = "auto"
    intra_op: int | Literal["auto"] = "auto"
    inter_op: int | Literal["auto"] = "auto"


class Mpi(Strict):
    """The MPI the image links against (MPICH for the ABI swap to the site MPI under Shifter)."""

    flavor: Literal["mpich", "openmpi"] = "mpich"
    build_packages: list[PackageName] = Field(default_factory=lambda: ["libmpich-dev"])
    runtime_packages: list[PackageName] = Field(default_factory=lambda: ["mpich"])


class Patch(Strict):
    """A patch applied to a source build, path relative to the recipe file."""

    path: str
    strip: int = 1


class Horovod(Strict):
    """How Horovod is compiled in the builder stage."""

    version: Version = "0.28.1"
    controllers: list[Literal["mpi", "gloo"]] = Field(default_factory=lambda: ["mpi", "gloo"])
    tensor_operations: list[Literal["nccl", "mpi", "gloo"]] = Field(
        default_factory=lambda: ["gloo", "mpi"]
    )
    patches: list[Patch] = Field(default_factory=list)
    build_env: dict[EnvName, str] = Field(default_factory=dict)


class TensorFlow(Strict):
    """TensorFlow in the image."""

    version: Version
    package: PackageName = "tensorflow"
    onednn: bool = True
    extra_packages: list[PackageName] = Field(default_factory=list)


class PyTorch(Strict):
    """PyTorch in the image (torch.distributed comes with it)."""

    version: Version
    package: PackageName = "torch"
    index_url: str | None = None
    extra_packages: list[PackageName] = Field(default_factory=list)


class Pip(Strict):
    """Where pip finds packages during the build (never copied into the image)."""

    index_url: str | None = None
    extra_index_urls: list[str] = Field(default_factory=list)
    find_links: list[str] = Field(default_factory=list)
    wheelhouse: bool = True
    extra_packages: list[PackageName] = Field(default_factory=list)
    # Removed from the runtime stage's site-packages in the layer that installs the
    # frameworks: what only a compiler can use (C/C++ headers), and the runtime stage has none.
    runtime_prune: list[SitePath] = Field(default_factory=list)


class OsPackages(Strict):
    """Debian packages: `runtime` go into the final image, `build` only into the builder."""

    runtime: list[PackageName] = Field(default_factory=list)
    build: list[PackageName] = Field(default_factory=list)


class Image(Strict):
    """Name and tag scheme; placeholders: {stack} {framework} {framework_version} {target}
    {cuda_major} {stack_version}."""

    name: str = "stackbuild/{framework}"
    tag: str = "{framework_version}-{target}"
    registry: str = "localhost"


Runtime = Literal["shifter", "podman-hpc", "podman", "apptainer"]


class Modules(Strict):
    """What users load: module name/version, wrapper commands and the runtime they use."""

    name: str = "{framework}"
    version: str = "{framework_version}-{target}"
    runtime: Runtime = "shifter"
    commands: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._+-]+$")]] = Field(
        default_factory=lambda: ["python", "python3", "horovodrun", "torchrun"]
    )
    conflicts: list[str] = Field(default_factory=list)
    sif_dir: str = "/global/common/software/stackbuild/sif"
    help: str = ""


class Jobs(Strict):
    """Slurm job scripts that run the validation at scale."""

    nodes: int = Field(default=2, ge=1)
    ranks_per_node: int = Field(default=1, ge=1)
    cpus_per_rank: int | None = None
    gpus_per_node: int = Field(default=0, ge=0)
    time: Annotated[str, StringConstraints(pattern=r"^[0-9:-]+$")] = "00:30:00"
    qos: str | None = None
    constraint: str | None = None
    account: str | None = None
    shifter_modules: list[str] = Field(default_factory=lambda: ["mpich"])
    suite: list[Literal["cosmoflow", "climate", "gan"]] = Field(
        default_factory=lambda: ["cosmoflow", "climate", "gan"]
    )
    config: Literal["small", "full"] = "small"
    # Weak-scaling efficiency below which the job's validation fails; the reference is
    # 93.5% at 2 KNL nodes (REFERENCE.md, CosmoFlow), 0.6 leaves room for busier systems.
    min_scaling_efficiency: float = Field(default=0.6, ge=0, le=1)
    volumes: dict[str, str] = Field(default_factory=dict)


class Settings(Strict):
    """Everything that can differ between variants; layers of a recipe are partial Settings."""

    base: Base = Field(default_factory=Base)
    platform: Platform = Field(default_factory=Platform)
    cuda: Cuda | None = None
    threads: Threads = Field(default_factory=Threads)
    env: dict[EnvName, str] = Field(default_factory=dict)
    os_packages: OsPackages = Field(default_factory=OsPackages)
    mpi: Mpi = Field(default_factory=Mpi)
    horovod: Horovod = Field(default_factory=Horovod)
    tensorflow: TensorFlow | None = None
    pytorch: PyTorch | None = None
    pip: Pip = Field(default_factory=Pip)
    image: Image = Field(default_factory=Image)
    modules: Modules = Field(default_factory=Modules)
    jobs: Jobs = Field(default_factory=Jobs)


class MatrixRule(Strict):
    """Selects variants by target and/or framework name."""

    target: Name | None = None
    framework: Name | None = None


class Override(Strict):
    """Settings applied to the variants a rule matches, after targets and frameworks."""

    match: MatrixRule
    set: dict  # a partial Settings, checked key by key like the other layers


class Matrix(Strict):
    """Variants = targets x frameworks, minus exclusions."""

    targets: list[Name] = Field(min_length=1)
    frameworks: list[Name] = Field(min_length=1)
    exclude: list[MatrixRule] = Field(default_factory=list)


class RecipeFile(Strict):
    """The top level of a recipe YAML file (layers are checked separately as partial Settings)."""

    stack: StackInfo
    defaults: dict = Field(default_factory=dict)
    targets: dict[Name, dict] = Field(min_length=1)
    frameworks: dict[Name, dict] = Field(min_length=1)
    matrix: Matrix
    overrides: list[Override] = Field(default_factory=list)
