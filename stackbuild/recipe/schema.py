"""The recipe schema: what a recipe may say, checked before anything renders.

A recipe has fixed parts (stack, matrix, overrides) and *settings layers*: `defaults`,
each entry of `targets` and each entry of `frameworks` is a partial `Settings`. A
variant's settings are those layers merged in order (see stackbuild.recipe.matrix).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from validation.plan import DEFAULT_MIN_SCALING_EFFICIENCY

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
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
# A path inside site-packages: relative, no `..`, no shell metacharacters.
SitePath = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$", max_length=200
    ),
]

# ---- value kinds: every string that reaches a generated file is one of these ----
# Each check raises a PydanticCustomError whose type names the kind; the loader turns it
# into "file:line: key = value <message>" with the kind's hint from KIND_HINTS.

# C0/C1 control characters, Unicode line/paragraph separators and the bidirectional
# overrides ("Trojan Source"): none may reach a file, where a newline would start a new
# Containerfile instruction or shell line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# OCI distribution grammar (distribution/reference): name components, domain, tag, digest.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REMOTE_NAME = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
IMAGE_TAG = re.compile(_TAG)
REGISTRY = re.compile(rf"(?P<domain>{_DOMAIN})(?:/{_PATH_COMPONENT})*")
IMAGE_REFERENCE = re.compile(
    rf"(?P<domain>{_DOMAIN})/(?P<path>{REMOTE_NAME.pattern})(?::{_TAG})?(?:@{_DIGEST})?"
)
# One file-name segment (module names and versions, wrapper commands): never `.`/`..`/`/`.
PATH_SEGMENT = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*")
_SAFE_PATH_CHARS = re.compile(r"[A-Za-z0-9._+@%=,~/-]+")
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=%]+")
MAX_NAME_LENGTH = 255  # the distribution spec's limit for a repository name with its domain

KIND_HINTS = {
    "control_character": "write it on one line, without control characters; only free text "
    "(stack.description, license_notes, modules.help, platform.description) may span lines",
    "image_reference": "write a fully qualified OCI reference, lowercase: "
    "registry.example.org/path/name:tag (e.g. docker.io/library/debian:bookworm or "
    "localhost/stackbuild/base:bookworm-minbase)",
    "registry": "write a registry host with an optional port and path, e.g. localhost, "
    "registry.example.org:5000 or registry.example.org/dl",
    "url": "write a plain http(s) URL without spaces or quotes; put credentials in the "
    "pip_conf build secret, never in the recipe (its values end up in the image)",
    "absolute_path": "write an absolute path made of letters, digits and . _ + @ % = , ~ - "
    "between slashes, without `..`",
    "relative_path": "write a path relative to the recipe file's directory, inside it "
    "(no leading /, no `..`)",
    "name_template": "use letters, digits, . _ + - and {placeholders} only",
}


def _problem(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def control_character(value: str, allow_newlines: bool = False) -> str | None:
    """The first forbidden control character in value, as U+XXXX, or None."""
    for match in _CONTROL.finditer(value):
        if not (allow_newlines and match.group() == "\n"):
            return f"U+{ord(match.group()):04X}"
    return None


def _single_line(value: str) -> str:
    found = control_character(value)
    if found:
        kind = "a newline" if found in ("U+000A", "U+000D") else f"the control character {found}"
        raise _problem("control_character", f"contains {kind}")
    return value


def _free_text(value: str) -> str:
    found = control_character(value, allow_newlines=True)
    if found:
        raise _problem("control_character", f"contains the control character {found}")
    return value


def _is_registry_host(domain: str) -> bool:
    # Without a dot, a port or `localhost` the first component is read as a Docker Hub
    # namespace, and the image would come from (or go to) somewhere else than the recipe says.
    return "." in domain or ":" in domain or domain == "localhost"


def image_reference_problem(value: str) -> str | None:
    """Why value is not a fully qualified OCI image reference, or None if it is one."""
    match = IMAGE_REFERENCE.fullmatch(value)
    if not match:
        return "is not an OCI image reference (registry/name[:tag][@digest], name lowercase)"
    if not _is_registry_host(match.group("domain")):
        return "does not start with a registry host (no dot, port or `localhost`)"
    name = value.split("@")[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    if len(name) > MAX_NAME_LENGTH:
        return f"has a name longer than {MAX_NAME_LENGTH} characters"
    return None


def _image_reference(value: str) -> str:
    problem = image_reference_problem(value)
    if problem:
        raise _problem("image_reference", problem)
    return value


def _registry(value: str) -> str:
    match = REGISTRY.fullmatch(value)
    if not match:
        raise _problem("registry", "is not a registry host[:port][/path]")
    if not _is_registry_host(match.group("domain")):
        raise _problem("registry", "does not start with a host (no dot, port or `localhost`)")
    return value


def _url(value: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    _single_line(value)
    if not _URL_CHARS.fullmatch(value):
        raise _problem("url", "is not a URL: spaces, quotes and backslashes are not allowed")
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise _problem("url", f"must start with {' or '.join(s + '://' for s in schemes)}")
    if parts.scheme != "file" and not parts.hostname:
        raise _problem("url", "has no host")
    if parts.username is not None or parts.password is not None:
        raise _problem("url", "holds credentials (user@ or user:password@)")
    return value


def _mirror_url(value: str) -> str:
    return _url(value, ("http", "https", "file"))


def _absolute_path(value: str) -> str:
    _single_line(value)
    if not value.startswith("/") or not _SAFE_PATH_CHARS.fullmatch(value):
        raise _problem("absolute_path", "is not an absolute path of plain characters")
    if ".." in value.split("/"):
        raise _problem("absolute_path", "contains `..`")
    return value


def _find_link(value: str) -> str:
    if value.startswith("/"):
        return _absolute_path(value)
    return _url(value, ("http", "https", "file"))


def _relative_path(value: str) -> str:
    _single_line(value)
    if value.startswith("/") or not _SAFE_PATH_CHARS.fullmatch(value):
        raise _problem("relative_path", "is not a relative path of plain characters")
    if ".." in value.split("/"):
        raise _problem("relative_path", "leaves the recipe's directory (`..`)")
    return value


SingleLine = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_single_line)]
FreeText = Annotated[str, StringConstraints(max_length=8192), AfterValidator(_free_text)]
EnvValue = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_single_line)]
ImageRef = Annotated[str, StringConstraints(max_length=512), AfterValidator(_image_reference)]
Registry = Annotated[str, StringConstraints(max_length=255), AfterValidator(_registry)]
Url = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_url)]
MirrorUrl = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_mirror_url)]
FindLink = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_find_link)]
AbsolutePath = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_absolute_path)]
RecipePath = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_relative_path)]
# OCI label keys: reverse-DNS style, e.g. org.opencontainers.image.vendor.
LabelKey = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$", max_length=128),
]
# Name templates: filled with {placeholders} (stackbuild.recipe.matrix), checked again after.
ImageNameTemplate = Annotated[str, StringConstraints(pattern=r"^[a-z0-9{}_./-]+$", max_length=255)]
TagTemplate = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9{}_.-]+$", max_length=128)]
SegmentTemplate = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_+{][A-Za-z0-9._+{}-]*$", max_length=64)
]
Command = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_+][A-Za-z0-9._+-]*$", max_length=64)
]
# A module as `module` commands name it: name or name/version, each part a plain segment.
ModuleRef = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9_+][A-Za-z0-9._+-]*(/[A-Za-z0-9_+][A-Za-z0-9._+-]*)?$",
        max_length=128,
    ),
]
# Slurm names (QOS, account) and Shifter module names.
SlurmName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$", max_length=64)
]
# A Slurm --constraint expression: features joined by & | , with [ ] ( ) * counts.
SlurmConstraint = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_.&|,*()\[\]:!-]+$", max_length=256)
]


class Strict(BaseModel):
    """Base for every schema model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StackInfo(Strict):
    """Who and what the stack is."""

    name: Name
    version: Version
    description: FreeText
    maintainers: list[Annotated[SingleLine, Field(min_length=1)]] = Field(min_length=1)
    labels: dict[LabelKey, SingleLine] = Field(default_factory=dict)
    license_notes: FreeText = ""


class Bootstrap(Strict):
    """Make the base image with debootstrap where no registry is reachable."""

    suite: Name = "bookworm"
    variant: Literal["minbase", "buildd"] = "minbase"
    mirror: MirrorUrl | None = None


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
    description: FreeText = ""


class Cuda(Strict):
    """CUDA stack of a GPU target: what the framework wheels carry, checked against them at
    load time (stackbuild.recipe.cuda) and in the image (the validation's stack checks)."""

    # The CUDA userspace the image carries (major.minor of the framework's CUDA wheels).
    version: Version
    # The oldest NVIDIA driver branch that runs this CUDA userspace on the nodes.
    driver: Version | None = None
    compute_capabilities: list[
        Annotated[str, StringConstraints(pattern=r"^[0-9]{1,2}\.[0-9]$")]
    ] = Field(min_length=1)
    cudnn: Version
    nccl: Version
    # Debian packages for the builder stage (none: the CUDA userspace comes from pip).
    packages: list[PackageName] = Field(default_factory=list)
    # pip packages only the builder stage installs: the compiler Horovod's kernels need.
    build_pip: list[PackageName] = Field(default_factory=list)


class Threads(Strict):
    """Threading of one rank: OpenMP and TensorFlow inter/intra-op pools ("auto": per core)."""

    omp_num_threads: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = "auto"
    intra_op: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = "auto"
    inter_op: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = "auto"


#: Debian packages of each MPI flavor: (builder stage, runtime stage).
MPI_PACKAGES = {
    "mpich": (["libmpich-dev"], ["mpich"]),
    "openmpi": (["libopenmpi-dev"], ["openmpi-bin"]),
}


class Mpi(Strict):
    """The MPI the image links against (MPICH for the ABI swap to the site MPI under Shifter)."""

    flavor: Literal["mpich", "openmpi"] = "mpich"
    build_packages: list[PackageName] = Field(default_factory=lambda: ["libmpich-dev"])
    runtime_packages: list[PackageName] = Field(default_factory=lambda: ["mpich"])

    @model_validator(mode="before")
    @classmethod
    def _packages_of_the_flavor(cls, data: Any) -> Any:
        """Packages left unset are the flavor's Debian packages, not always MPICH's."""
        flavor = data.get("flavor") if isinstance(data, dict) else None
        if isinstance(flavor, str) and flavor in MPI_PACKAGES:
            build, runtime = MPI_PACKAGES[flavor]
            data = {"build_packages": build, "runtime_packages": runtime} | data
        return data


class Patch(Strict):
    """A patch applied to a source build, path relative to the recipe file."""

    path: RecipePath
    strip: int = Field(default=1, ge=0, le=16)


class Horovod(Strict):
    """How Horovod is compiled in the builder stage."""

    version: Version = "0.28.1"
    controllers: list[Literal["mpi", "gloo"]] = Field(
        default_factory=lambda: ["mpi", "gloo"], min_length=1
    )
    tensor_operations: list[Literal["nccl", "mpi", "gloo"]] = Field(
        default_factory=lambda: ["gloo", "mpi"], min_length=1
    )
    patches: list[Patch] = Field(default_factory=list)
    build_env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    # NCCL inside a node, MPI between nodes (HOROVOD_HIERARCHICAL_ALLREDUCE). None: on for
    # targets with CUDA and NCCL tensor operations where jobs run more than one rank per node.
    hierarchical_allreduce: bool | None = None


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
    index_url: Url | None = None
    extra_packages: list[PackageName] = Field(default_factory=list)


class Pip(Strict):
    """Where pip finds packages during the build (never copied into the image)."""

    index_url: Url | None = None
    extra_index_urls: list[Url] = Field(default_factory=list)
    find_links: list[FindLink] = Field(default_factory=list)
    wheelhouse: bool = True
    extra_packages: list[PackageName] = Field(default_factory=list)
    # Removed from the runtime stage's site-packages in the layer that installs the
    # frameworks: what only a compiler can use (C/C++ headers), and the runtime stage has none,
    # or libraries that nothing in the image loads.
    runtime_prune: list[SitePath] = Field(default_factory=list)
    # Uninstalled from the runtime stage in that same layer: packages that cannot work there
    # (Triton compiles its launchers with a C compiler, and the runtime stage has none).
    runtime_uninstall: list[Name] = Field(default_factory=list)
    # Pins for every pip install of both stages (a constraints file): the frameworks' CUDA
    # wheels name each other by ranges, so transitive packages float without them.
    constraints: list[PackageName] = Field(default_factory=list)


class OsPackages(Strict):
    """Debian packages: `runtime` go into the final image, `build` only into the builder."""

    runtime: list[PackageName] = Field(default_factory=list)
    build: list[PackageName] = Field(default_factory=list)


class Image(Strict):
    """Name and tag scheme; placeholders: {stack} {framework} {framework_version} {target}
    {cuda_major} {stack_version}."""

    name: ImageNameTemplate = "stackbuild/{framework}"
    tag: TagTemplate = "{framework_version}-{target}"
    registry: Registry = "localhost"


#: The runtimes of validation/runtimes.py (one table says how each runs an image).
Runtime = Literal["shifter", "podman-hpc", "podman", "docker", "apptainer"]


class Modules(Strict):
    """What users load: module name/version, wrapper commands and the runtime they use."""

    name: SegmentTemplate = "{framework}"
    version: SegmentTemplate = "{framework_version}-{target}"
    runtime: Runtime = "shifter"
    commands: list[Command] = Field(
        default_factory=lambda: ["python", "python3", "horovodrun", "torchrun"], min_length=1
    )
    conflicts: list[ModuleRef] = Field(default_factory=list)
    sif_dir: AbsolutePath = "/global/common/software/stackbuild/sif"
    help: FreeText = ""


class Jobs(Strict):
    """Slurm job scripts that run the validation at scale."""

    nodes: int = Field(default=2, ge=1, le=1_000_000)
    ranks_per_node: int = Field(default=1, ge=1, le=4096)
    cpus_per_rank: int | None = Field(default=None, ge=1, le=4096)
    gpus_per_node: int = Field(default=0, ge=0, le=64)
    time: Annotated[str, StringConstraints(pattern=r"^[0-9:-]+$", max_length=16)] = "00:30:00"
    qos: SlurmName | None = None
    constraint: SlurmConstraint | None = None
    account: SlurmName | None = None
    shifter_modules: list[SlurmName] = Field(default_factory=lambda: ["mpich"])
    suite: list[Literal["cosmoflow", "climate", "gan"]] = Field(
        default_factory=lambda: ["cosmoflow", "climate", "gan"], min_length=1
    )
    config: Literal["small", "full"] = "small"
    # Weak-scaling efficiency below which the job's validation fails; the reference is
    # validation.plan.DEFAULT_MIN_SCALING_EFFICIENCY says why.
    min_scaling_efficiency: float = Field(default=DEFAULT_MIN_SCALING_EFFICIENCY, ge=0, le=1)
    volumes: dict[AbsolutePath, AbsolutePath] = Field(default_factory=dict)


class Jupyter(Strict):
    """The kernel side of Jupyter in the image (ipykernel, ipyparallel, ipywidgets)."""

    # On: the image gets `packages` in its own late layer and the modules writer renders a
    # kernel spec per variant (kernels/<name>/kernel.json) that starts the image's Python.
    kernel: bool = True
    packages: list[PackageName] = Field(
        default_factory=lambda: ["ipykernel==7.4.0", "ipyparallel==9.2.0", "ipywidgets==8.1.9"]
    )


class Settings(Strict):
    """Everything that can differ between variants; layers of a recipe are partial Settings."""

    base: Base = Field(default_factory=Base)
    platform: Platform = Field(default_factory=Platform)
    cuda: Cuda | None = None
    threads: Threads = Field(default_factory=Threads)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    os_packages: OsPackages = Field(default_factory=OsPackages)
    mpi: Mpi = Field(default_factory=Mpi)
    horovod: Horovod = Field(default_factory=Horovod)
    tensorflow: TensorFlow | None = None
    pytorch: PyTorch | None = None
    pip: Pip = Field(default_factory=Pip)
    image: Image = Field(default_factory=Image)
    modules: Modules = Field(default_factory=Modules)
    jobs: Jobs = Field(default_factory=Jobs)
    jupyter: Jupyter = Field(default_factory=Jupyter)


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
