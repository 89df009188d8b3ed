"""The shell lines that run a command in a variant's image, from the runtime table.

Module wrappers, job scripts and kernel specs all include `templates/runtimes/run-image.sh.j2`,
which prints the values made here; the words come from `validation.runtimes`, the table the
harness's launch code uses too. Shell expressions (`"$image"`, `"$PWD"`) enter the words as
placeholders and are substituted after quoting, so recipe values stay quoted.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from stackbuild.render.quoting import Quoted
from validation.runtimes import (
    PASS_ENV_PATTERNS,
    PMI_FD_TO_3,
    SLURM_LAUNCH,
    Runtime,
    get_runtime,
    image_words,
    runtime_options,
)

IMAGE = "@IMAGE@"
PWD = "@PWD@"
NAME = "@NAME@"
REPORT_DIR = "@REPORT_DIR@"
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def _quote(text: str) -> str:
    # Commas quoted too: in an array, shellcheck reads `a,b` as a mistaken separator.
    return f"'{text}'" if "," in text and "'" not in text else shlex.quote(text)


def shell_words(words: Sequence[str], expressions: Mapping[str, str]) -> Quoted:
    """Quote each word for the shell, then put the shell expressions in for placeholders."""
    out = []
    for word in words:
        pieces, last = [], 0
        for match in _PLACEHOLDER.finditer(word):
            if match.start() > last:
                pieces.append(_quote(word[last : match.start()]))
            pieces.append(expressions[match.group()])
            last = match.end()
        if last < len(word) or not pieces:
            pieces.append(_quote(word[last:]))
        out.append("".join(pieces))
    return Quoted(" ".join(out))


def _expressions(row: Runtime) -> dict[str, str]:
    # Shifter's image word is docker:REF; an override may already say docker:.
    image = '"${image#docker:}"' if row.image_form == "docker-prefixed" else '"$image"'
    return {IMAGE: image, PWD: '"$PWD"', NAME: '"$name"', REPORT_DIR: '"$STACKBUILD_REPORT_DIR"'}


def run_image_context(
    runtime: str,
    *,
    gpu: bool,
    site_modules: Sequence[str] = (),
    mounts: Sequence[tuple[str, str]] = (),
    validated_id: str = "",
    who: str = "stackbuild",
    mpi_flavor: str = "mpich",
) -> dict[str, Any]:
    """The values templates/runtimes/run-image.sh.j2 prints, for one runtime."""
    row = get_runtime(runtime)
    subs = _expressions(row)
    options = runtime_options(
        runtime,
        IMAGE,
        gpu=gpu,
        mounts=[(PWD, PWD), *mounts],
        workdir=PWD,
        interactive=True,
        site_modules=site_modules,
        mpi=None,  # run-image.sh.j2 adds the MPI options under srun, else the host ones
    )
    patterns = "|".join(PASS_ENV_PATTERNS)
    if not re.fullmatch(r"[A-Za-z0-9_*|]+", patterns):  # printed unquoted: globs
        raise ValueError(f"PASS_ENV_PATTERNS: a shell case cannot take {patterns!r}")
    return {
        "rt": row,
        "rt_who": who,
        "rt_options": shell_words(options, subs),
        "rt_mpi": shell_words(row.mpi[mpi_flavor], subs) if row.mpi.get(mpi_flavor) else Quoted(""),
        "rt_host_without_mpi": shell_words(row.host_without_mpi, subs)
        if row.host_without_mpi
        else Quoted(""),
        "rt_preserve": shell_words([row.preserve_fds.format(count=1)], subs)
        if row.preserve_fds
        else Quoted(""),
        "rt_pmi_fd_to_3": Quoted(PMI_FD_TO_3),
        "rt_env_pass": shell_words([row.env_pass.format(name=NAME)], subs)
        if row.env_pass
        else Quoted(""),
        "rt_pass_patterns": Quoted(patterns),
        "rt_tty": row.name in ("podman", "docker", "podman-hpc"),
        "rt_image_words": shell_words(image_words(runtime, IMAGE), subs),
        "rt_inspect": shell_words(row.inspect_id, subs) if row.inspect_id else Quoted(""),
        "rt_validated_id": validated_id.removeprefix("sha256:"),
        "rt_slurm_launch": shell_words(SLURM_LAUNCH, subs),
    }
