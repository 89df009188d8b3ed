"""Writers, one per output format, registered by name: each turns a Variant into files.

Formats: `containerfile` (the build context), `apptainer` (a definition derived from the
Containerfile with spython), `modules` (Lmod and Tcl module files plus wrapper scripts),
`kernels` (a Jupyter kernel spec that runs the `python` wrapper) and `jobs` (Slurm scripts
that run the validation with Shifter, podman-hpc and Apptainer).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from stackbuild import PROJECT_ROOT, __version__
from stackbuild.errors import TemplateError
from stackbuild.recipe.matrix import Variant
from stackbuild.render.context import STACKBUILD_DIR, SYSTEM_PATH, VENV, BuildContext
from stackbuild.render.environment import render_template
from stackbuild.render.kernels import (
    ENGINES_COMMAND,
    kernel_name,
    kernel_spec,
    logo_png,
    python_wrapper,
)
from stackbuild.render.runscript import REPORT_DIR, run_image_context
from stackbuild.render.spython_adapter import parse_containerfile_text, write_definition
from validation.launch import SRUN_MPI_PLUGINS
from validation.plan import (
    ValidationRequest,
    evaluate_arguments,
    plan_jobs,
    probe_file,
    stack_expectations,
)
from validation.runtimes import RUNTIMES as CONTAINER_RUNTIMES

VALIDATION_PACKAGE = PROJECT_ROOT / "validation"
GENERATOR = f"stackbuild {__version__}"


@dataclass(frozen=True)
class RenderedFile:
    """One output file, its path relative to the variant's directory."""

    path: str
    content: bytes
    executable: bool = False


WriterFunc = Callable[[Variant, jinja2.Environment], list[RenderedFile]]
WRITERS: dict[str, WriterFunc] = {}


def contained_path(path: str, writer_name: str) -> str:
    """path, if it names a file inside the variant's directory, else a TemplateError.

    The last guard behind the schema: whatever a recipe value or a site template makes of a
    file name, a render never writes outside its output directory.
    """
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or re.search(r"[\x00-\x1f\x7f]", path)
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise TemplateError(
            f"the {writer_name} writer made the file name {path!r}, which is not a plain "
            "relative path inside the variant's directory: refusing to write it",
            hint="module names, versions and commands must be single file names "
            "(no `/`, no `..`); see recipes/README.md",
        )
    return path


def writer(name: str) -> Callable[[WriterFunc], WriterFunc]:
    """Register a writer for an output format; every path it returns is checked."""

    def register(func: WriterFunc) -> WriterFunc:
        def guarded(variant: Variant, env: jinja2.Environment) -> list[RenderedFile]:
            files = func(variant, env)
            for item in files:
                contained_path(item.path, name)
            return files

        guarded.__name__, guarded.__doc__ = func.__name__, func.__doc__
        WRITERS[name] = guarded
        return guarded

    return register


def user_reference(variant: Variant, runtime: str) -> str:
    """The image reference user files of `runtime` name: the validated pin, else the tag."""
    return variant.pin.for_runtime(runtime) if variant.pin else variant.image_reference


def wrapper_image(variant: Variant, runtime: str | None = None) -> str:
    """How a runtime names the image: docker:ref for Shifter, a SIF for Apptainer."""
    runtime = runtime or variant.settings.modules.runtime
    if runtime == "shifter":
        return f"docker:{user_reference(variant, runtime)}"
    if runtime == "apptainer":
        return sif_path(variant)
    return user_reference(variant, runtime)


def sif_path(variant: Variant) -> str:
    """Where the site keeps the variant's SIF file (named after the pinned tag, if any)."""
    name = variant.image_name.replace("/", "_")
    tag = variant.pin.reference.rsplit(":", 1)[-1] if variant.pin else variant.image_tag
    return f"{variant.settings.modules.sif_dir}/{name}_{tag}.sif"


def validated_id(variant: Variant, runtime: str) -> str:
    """The image ID a runtime's wrapper checks at start ('' before validation)."""
    return variant.pin.checked_id(runtime) if variant.pin else ""


def template_context(variant: Variant) -> dict[str, Any]:
    """The values every template sees."""
    s = variant.settings
    ctx = BuildContext(variant)
    return {
        "generator": GENERATOR,
        "recipe_name": variant.recipe_name,
        "variant_name": variant.name,
        "settings": s,
        "ctx": ctx,
        "venv": VENV,
        "stackbuild_dir": STACKBUILD_DIR,
        "system_path": SYSTEM_PATH,
        "builder_image": s.base.builder_image or s.base.image,
        "base_image": s.base.image,
        "wrapper_image": wrapper_image(variant),
        "image_reference": user_reference(variant, s.modules.runtime),
        "module_name": variant.module_name,
        "module_version": variant.module_version,
        "description": " ".join(variant.stack.description.split()),
        "runtime": s.modules.runtime,
        "commands": s.modules.commands,
        "conflicts": s.modules.conflicts,
        "gpu": s.cuda is not None,
        "shifter_modules": s.jobs.shifter_modules,
        "jobs": s.jobs,
        "threads": ctx.threads,
        "mpi_plugin": SRUN_MPI_PLUGINS[s.mpi.flavor],
        "sif_path": sif_path(variant),
    } | run_image_context(
        s.modules.runtime,
        gpu=s.cuda is not None,
        site_modules=s.jobs.shifter_modules,
        who=f"{variant.module_name}/{variant.module_version}",
        mpi_flavor=s.mpi.flavor,
        validated_id=validated_id(variant, s.modules.runtime),
    )


def _text(path: str, content: str, executable: bool = False) -> RenderedFile:
    return RenderedFile(path, content.encode("utf-8"), executable)


def _json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def variant_manifest(variant: Variant) -> dict[str, Any]:
    """variant.json: what the builder needs to know, so it never re-reads the recipe."""
    s = variant.settings
    ctx = BuildContext(variant)
    return {
        "recipe": variant.recipe_name,
        "recipe_path": str(variant.recipe_path.name),
        "recipe_hash": variant.build_digest,
        "variant": variant.name,
        "target": variant.target,
        "framework": variant.framework,
        "frameworks": variant.frameworks,
        "image": {
            "repository": f"{s.image.registry}/{variant.image_name}",
            "tags": [variant.image_tag],
        },
        "base": {
            "image": s.base.image,
            "builder_image": s.base.builder_image or s.base.image,
            "bootstrap": s.base.bootstrap.model_dump(mode="json") if s.base.bootstrap else None,
        },
        "build": {
            "secrets": {"ca_bundle": None, "pip_conf": None},
            "volumes": {
                "wheelhouse": {"host": None, "target": "/wheelhouse"} if s.pip.wheelhouse else None,
                "wheel_cache": {"host": None, "target": "/cache/wheels"},
                "pip_cache": {"host": None, "target": "/cache/pip"},
            },
            "build_args": {},
        },
        "horovod_cache_key": ctx.horovod_cache_key,
        "horovod": {
            "controllers": s.horovod.controllers,
            "tensor_operations": s.horovod.tensor_operations,
        },
        "settings": s.model_dump(mode="json"),
    }


def _validation_files() -> list[RenderedFile]:
    """The validation harness, copied into the build context (sources only, sorted)."""
    files = []
    if VALIDATION_PACKAGE.is_dir():
        for path in sorted(VALIDATION_PACKAGE.rglob("*")):
            rel = path.relative_to(VALIDATION_PACKAGE)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                files.append(RenderedFile(f"files/validation/{rel.as_posix()}", path.read_bytes()))
    return files


@writer("containerfile")
def write_containerfile(variant: Variant, env: jinja2.Environment) -> list[RenderedFile]:
    """The build context: Containerfile, build scripts, patches, the harness, variant.json."""
    context = template_context(variant)
    ctx: BuildContext = context["ctx"]
    files = [
        _text("Containerfile", render_template(env, "Containerfile.j2", context)),
        _text("files/pip-env.sh", render_template(env, "files/pip-env.sh.j2", context)),
        _text("files/prune-runtime.sh", render_template(env, "files/prune-runtime.sh.j2", context)),
        _text("files/requirements-frameworks.txt", "\n".join(ctx.framework_requirements) + "\n"),
        *(
            [_text("files/constraints.txt", "\n".join(ctx.constraints) + "\n")]
            if ctx.constraints
            else []
        ),
        *(
            [_text("files/requirements-build.txt", "\n".join(ctx.build_requirements) + "\n")]
            if ctx.build_requirements
            else []
        ),
        *(
            [
                _text(
                    "files/cuda-libraries.sh",
                    render_template(env, "files/cuda-libraries.sh.j2", context),
                )
            ]
            if variant.settings.cuda is not None
            else []
        ),
        _text(
            "files/horovod/build-horovod.sh",
            render_template(env, "files/build-horovod.sh.j2", context),
            executable=True,
        ),
        _text(
            "files/stackbuild-info.json",
            _json(
                {
                    "recipe": variant.recipe_name,
                    "variant": variant.name,
                    "image": variant.image_reference,
                    "frameworks": variant.frameworks,
                    "horovod": variant.settings.horovod.model_dump(
                        mode="json", exclude={"patches", "build_env"}
                    ),
                    "target": variant.target,
                    "cuda": variant.settings.cuda is not None,
                    "generator": GENERATOR,
                    "expect": stack_expectations(
                        variant.settings.model_dump(mode="json"),
                        variant.frameworks,
                        variant.target,
                    ),
                }
            ),
        ),
        _text("variant.json", _json(variant_manifest(variant))),
        _text(
            ".containerignore",
            "modulefiles\nwrappers\nkernels\njobs\napptainer.def\nvariant.json\nrender.json\npin.json\n",
        ),
    ]
    for patch in variant.patch_files:
        files.append(RenderedFile(f"files/horovod/patches/{patch.name}", patch.read_bytes()))
    files.extend(_validation_files())
    return files


_MOUNT_FLAG = re.compile(r"^\s*--mount=\S+\s*")


def containerfile_to_apptainer(containerfile: str, variant: Variant) -> str:
    """Convert the Containerfile with spython, adapting what Apptainer does differently."""
    recipe = parse_containerfile_text(containerfile)
    for layer in recipe.values():
        cleaned = []
        for line in layer.install:
            # BuildKit secret mounts have no %post equivalent; pip-env.sh copes without them.
            stripped = _MOUNT_FLAG.sub("", line)
            while _MOUNT_FLAG.match(stripped):
                stripped = _MOUNT_FLAG.sub("", stripped)
            if stripped.strip() in ("", "\\"):
                continue
            cleaned.append(stripped)
        layer.install = cleaned
    text = write_definition(recipe)
    agent = variant.settings.base.apptainer_bootstrap
    archives: list[tuple[str, str]] = []
    if agent != "docker":

        def bootstrap(match: re.Match[str]) -> str:
            ref = match.group(1).strip()
            source = ref
            if agent in ("docker-archive", "oci-archive"):
                source = re.sub(r"[^A-Za-z0-9._-]+", "_", ref) + ".tar"
                if (ref, source) not in archives:
                    archives.append((ref, source))
            return f"Bootstrap: {agent}\nFrom: {source}"

        text = re.sub(r"Bootstrap: docker\nFrom: (.+)", bootstrap, text)
    text = _apptainer_runtime_sections(text, recipe)
    make = "".join(
        f"#   stackbuild export {ref} --to {agent} --output {source}\n" for ref, source in archives
    )
    header = (
        f"# Apptainer definition for {variant.name}, derived from its Containerfile by spython\n"
        f"# (rendered by {GENERATOR}). Build from this directory:\n"
        + (
            f"# the base archive(s) first (stackbuild makes them from its own base image):\n{make}"
            if make
            else ""
        )
        + f"#   apptainer build --build-arg {REVISION_ARG}=$(git rev-parse HEAD) "
        f"{variant.name}.sif apptainer.def\n"
    )
    return header + text.replace(" \n", "\n").rstrip() + "\n"


#: The build argument that carries the source revision into the revision label.
REVISION_ARG = "SOURCE_REVISION"
_SECTION = re.compile(r"^%(runscript|startscript)\n(?:(?!^%|^Bootstrap:).*\n?)*", re.MULTILINE)


def _apptainer_runtime_sections(text: str, recipe: dict[str, Any]) -> str:
    """What spython gets wrong for Apptainer, put right.

    - %runscript: `apptainer run IMG CMD...` runs CMD (default: the image's CMD) in the
      image's environment and the caller's directory; spython's `exec /bin/bash CMD "$@"`
      ran bash on the command's name.
    - the revision label: Apptainer's build-time variable `{{ SOURCE_REVISION }}`, with a
      default in %arguments, where the Containerfile's ARG is (apptainer build --build-arg).
    """
    stage = list(recipe.values())[-1]
    default = shlex.join(stage.cmd) if isinstance(stage.cmd, list) else str(stage.cmd or "sh")
    runscript = (
        "%runscript\n"
        "# Runs the command it is given (default: the image's CMD) in the image's environment.\n"
        f'if [ "$#" -eq 0 ]; then set -- {default}; fi\n'
        'exec "$@"\n'
    )
    text = _SECTION.sub("", text)
    text = text.rstrip() + "\n" + runscript
    revision = f"org.opencontainers.image.revision=${{{REVISION_ARG}}}"
    if revision in text:
        text = text.replace(
            revision, "org.opencontainers.image.revision={{ " + REVISION_ARG + " }}"
        )
        text = re.sub(
            r"(Stage: runtime\n)",
            r"\1\n%arguments\n" + REVISION_ARG + "=unknown\n",
            text,
            count=1,
        )
    return text


@writer("apptainer")
def write_apptainer(variant: Variant, env: jinja2.Environment) -> list[RenderedFile]:
    """apptainer.def, derived from the rendered Containerfile."""
    containerfile = render_template(env, "Containerfile.j2", template_context(variant))
    return [_text("apptainer.def", containerfile_to_apptainer(containerfile, variant))]


def help_text(variant: Variant) -> str:
    """The module's help: what it is, how to run it, where the image is."""
    s = variant.settings
    validated = (
        f"image {variant.pin.image_id} (the wrappers run only it)"
        if variant.pin
        else "not yet (this names the recipe's tag, which a rebuild moves)"
    )
    lines = [
        f"{variant.stack.description.strip()}",
        "",
        f"Image:     {user_reference(variant, s.modules.runtime)}",
        f"Validated: {validated}",
        f"Runtime:   {s.modules.runtime}",
        f"Variant:   {variant.name} (recipe {variant.recipe_name} {variant.stack.version})",
        f"Commands:  {', '.join(s.modules.commands)} (wrapper scripts; they work under srun)",
        "",
        "Example:",
        f"  module load {variant.module_name}/{variant.module_version}",
        "  srun -n 4 python train.py",
    ]
    if s.cuda is not None:
        driver = f"; needs NVIDIA driver R{s.cuda.driver} or newer" if s.cuda.driver else ""
        lines[6:6] = [
            f"GPU:       CUDA {s.cuda.version}, cuDNN {s.cuda.cudnn}, NCCL {s.cuda.nccl}, "
            f"compute capabilities {', '.join(s.cuda.compute_capabilities)}{driver}"
        ]
    if BuildContext(variant).hierarchical_allreduce:
        lines += [
            "",
            "Horovod all-reduces hierarchically (HOROVOD_HIERARCHICAL_ALLREDUCE=1): NCCL inside",
            "a node, MPI between nodes; set it to 0 to all-reduce over NCCL across all ranks.",
        ]
    if s.jupyter.kernel:
        lines += [
            "",
            f"Jupyter:   kernel {kernel_name(variant)} (runs this image's Python); install it",
            "  for yourself: stackbuild kernels install DIR --user   (DIR: these rendered files)",
            "  or for a site: stackbuild kernels install DIR --prefix /path/to/jupyter/prefix",
            f"  IPyParallel engines on compute nodes, from the notebook's directory: "
            f"{ENGINES_COMMAND} -n 2",
            "  (the notebook starts the controller: validation.notebook.start_engines)",
        ]
    if s.modules.help:
        lines += ["", s.modules.help.strip()]
    return "\n".join(lines)


@writer("modules")
def write_modules(variant: Variant, env: jinja2.Environment) -> list[RenderedFile]:
    """Lmod .lua and Tcl module files, and one wrapper script per wrapped command."""
    context = template_context(variant) | {"help_text": help_text(variant)}
    name, version = variant.module_name, variant.module_version
    files = [
        _text(
            f"modulefiles/lmod/{name}/{version}.lua",
            render_template(env, "modules/module.lua.j2", context),
        ),
        _text(
            f"modulefiles/tcl/{name}/{version}",
            render_template(env, "modules/module.tcl.j2", context),
        ),
    ]
    for command in variant.settings.modules.commands:
        files.append(
            _text(
                f"wrappers/{name}/{version}/bin/{command}",
                render_template(env, "wrappers/wrapper.sh.j2", context | {"command": command}),
                executable=True,
            )
        )
    if variant.settings.jupyter.kernel:
        # The engines run the image's Python through the kernel's wrapper.
        python_command = python_wrapper(variant).rsplit("/", 1)[-1]
        files.append(
            _text(
                f"wrappers/{name}/{version}/bin/{ENGINES_COMMAND}",
                render_template(
                    env,
                    "wrappers/ipengines.sh.j2",
                    context | {"python_command": python_command},
                ),
                executable=True,
            )
        )
    return files


@writer("kernels")
def write_kernels(variant: Variant, env: jinja2.Environment) -> list[RenderedFile]:
    """A Jupyter kernel spec that starts the image's Python through the modules' wrapper."""
    if not variant.settings.jupyter.kernel:
        return []
    kernel = f"kernels/{kernel_name(variant)}"
    return [
        _text(f"{kernel}/kernel.json", _json(kernel_spec(variant))),
        RenderedFile(f"{kernel}/logo-64x64.png", logo_png()),
    ]


#: One job script per runtime of the table (validation/runtimes.py).
JOB_RUNTIMES = {name: row.label for name, row in CONTAINER_RUNTIMES.items()}


def job_request(variant: Variant, runtime: str) -> ValidationRequest:
    """The validation a job script runs: the recipe's suites on 1 rank and on all ranks.

    The same request that `stackbuild validate --launcher srun` would plan, so the script's
    steps and its closing `python -m validation evaluate` agree on every run and check.
    """
    jobs = variant.settings.jobs
    return ValidationRequest(
        out_dir=Path("."),  # the script passes its own --out
        image=user_reference(variant, runtime),
        suites=tuple(jobs.suite),
        frameworks=tuple(variant.frameworks),
        ranks=tuple(sorted({1, jobs.nodes * jobs.ranks_per_node})),
        runtime=runtime,
        launcher="srun",
        size=jobs.config,
        expect_gpu=variant.settings.cuda is not None,
        mpi_flavor=variant.settings.mpi.flavor,
        min_scaling_efficiency=jobs.min_scaling_efficiency,
    )


def job_steps(variant: Variant, request: ValidationRequest) -> list[dict[str, Any]]:
    """One srun step per planned job: its tag, nodes, ranks per node and harness arguments.

    out_file: the file name a step writes under the report directory (probes), else None
    (training steps write TAG/rank-R.json there and take the script's threads per rank).
    """
    jobs = variant.settings.jobs
    steps = []
    for job in plan_jobs(request):
        if job.skipped:
            continue  # the evaluation reports it as skipped, with the reason
        many = job.ranks > 1
        steps.append(
            {
                "tag": job.tag,
                "nodes": jobs.nodes if many else 1,
                "ranks_per_node": jobs.ranks_per_node if many else 1,
                "args": job.module_args,
                "out_file": Path(probe_file(".", job.framework)).name
                if job.kind == "probe"
                else None,
            }
        )
    return steps


@writer("jobs")
def write_jobs(variant: Variant, env: jinja2.Environment) -> list[RenderedFile]:
    """Slurm scripts that run the validation suite at scale, one per runtime."""
    files = []
    for runtime, label in JOB_RUNTIMES.items():
        script = f"validate-{runtime}.sbatch"
        request = job_request(variant, runtime)
        s = variant.settings
        context = template_context(variant) | run_image_context(
            runtime,
            gpu=s.cuda is not None,
            site_modules=s.jobs.shifter_modules,
            mounts=[(REPORT_DIR, REPORT_DIR), *s.jobs.volumes.items()],
            who=f"validate-{variant.name}",
            mpi_flavor=s.mpi.flavor,
            validated_id=validated_id(variant, runtime),
        )
        context |= {
            "job_image": sif_path(variant)
            if runtime == "apptainer"
            else user_reference(variant, runtime),
            "runtime_label": label,
            "script_name": script,
            "total_ranks": max(request.ranks),
            "validation_steps": job_steps(variant, request),
            "evaluate_args": evaluate_arguments(request),
        }
        files.append(
            _text(
                f"jobs/{script}",
                render_template(env, f"jobs/{runtime}.sbatch.j2", context),
                executable=True,
            )
        )
    return files


def check_formats(names: list[str]) -> list[str]:
    """Validate a list of format names against the registered writers."""
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        raise TemplateError(
            f"unknown output format {unknown[0]!r}",
            hint=f"choose from: {', '.join(WRITERS)}",
        )
    return names
