"""Jupyter kernel specs: one per variant, starting the image's Python through its wrapper.

The spec runs the module's `python` wrapper, so every runtime of the table (Podman, Docker,
podman-hpc, Shifter, Apptainer) starts a kernel the same way the module does, pinned to the
same image. The kernel's ZMQ ports are on the host's loopback (the container runtimes share
the node's network); the connection file, which lives in the Jupyter runtime directory that
the container may not see (Podman mounts only the working directory), goes in through the
environment and the kernel writes it inside the container.
"""

from __future__ import annotations

import re
import struct
import zlib

from stackbuild.errors import TemplateError
from stackbuild.recipe.matrix import Variant
from stackbuild.render.context import BuildContext

#: Where a rendered spec finds the variant directory; `stackbuild kernels install` replaces
#: it with the absolute path (jupyter_client substitutes {resource_dir} in argv).
VARIANT_DIR = "{resource_dir}/../.."
#: Host variable that carries the connection file's content into the container (the
#: wrappers pass STACKBUILD_* in by name; Shifter and Apptainer pass the environment in).
CONNECTION_VARIABLE = "STACKBUILD_KERNEL_CONNECTION"
#: On the host: read the connection file, then exec the wrapper ($0) with the bootstrap ($2);
#: JPY_PARENT_PID goes in under a STACKBUILD_ name, which the wrappers pass.
HOST_SHIM = (
    f'{CONNECTION_VARIABLE}="$(cat -- "$1")" || exit 1; export {CONNECTION_VARIABLE}; '
    'export STACKBUILD_KERNEL_PARENT="$JPY_PARENT_PID"; exec "$0" -c "$2"'
)
#: In the image: write the connection file where the kernel can read it, then start ipykernel.
BOOTSTRAP = (
    "import os, sys, tempfile; "
    "fd, path = tempfile.mkstemp(prefix='kernel-', suffix='.json'); "
    f"os.write(fd, os.environ.pop('{CONNECTION_VARIABLE}').encode()); os.close(fd); "
    "sys.argv[1:] = ['-f', path]; "
    # jupyter_client's PID (the runtimes share the node's PIDs): the kernel watches its parent.
    "os.environ['JPY_PARENT_PID'] = os.environ.pop('STACKBUILD_KERNEL_PARENT', ''); "
    "from ipykernel import kernelapp; kernelapp.launch_new_instance()"
)
#: The module's command that submits IPyParallel engines (templates/wrappers/ipengines.sh.j2).
ENGINES_COMMAND = "ipengines"
#: Wrapped commands that run the image's Python, in order of preference.
PYTHON_COMMANDS = ("python", "python3")


def kernel_name(variant: Variant) -> str:
    """The kernel's name (Jupyter allows letters, digits, `.`, `_` and `-`)."""
    raw = f"{variant.module_name}-{variant.module_version}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", raw).lower()


def python_wrapper(variant: Variant) -> str:
    """The wrapper, relative to the variant directory, that runs the image's Python."""
    commands = variant.settings.modules.commands
    for command in PYTHON_COMMANDS:
        if command in commands:
            return f"wrappers/{variant.module_name}/{variant.module_version}/bin/{command}"
    raise TemplateError(
        f"variant {variant.name}: jupyter.kernel is on but modules.commands "
        f"({', '.join(commands)}) wraps no python, which the kernel spec must start",
        hint="add `python` to modules.commands, or set `jupyter: {kernel: false}`",
    )


def kernel_spec(variant: Variant, variant_dir: str = VARIANT_DIR) -> dict[str, object]:
    """kernel.json's content; variant_dir: where the wrappers are (absolute once installed)."""
    s = variant.settings
    return {
        "argv": [
            "/bin/sh",
            "-c",
            HOST_SHIM,
            f"{variant_dir}/{python_wrapper(variant)}",
            "{connection_file}",
            BOOTSTRAP,
        ],
        "display_name": f"{variant.module_name}/{variant.module_version}",
        "language": "python",
        "interrupt_mode": "signal",
        "env": dict(BuildContext(variant).job_environment)
        | {"STACKBUILD_MODULE": f"{variant.module_name}/{variant.module_version}"},
        "metadata": {
            "stackbuild": {
                "module": f"{variant.module_name}/{variant.module_version}",
                "variant": variant.name,
                "recipe": variant.recipe_name,
                "runtime": s.modules.runtime,
                "wrapper": python_wrapper(variant),
            }
        },
    }


def logo_png(size: int = 64, rgb: tuple[int, int, int] = (0x1F, 0x5F, 0x9F)) -> bytes:
    """A deterministic square PNG (a coloured tile with a light border) for the launcher."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    light = (0xF0, 0xF0, 0xF0)
    rows = b"".join(
        b"\x00"
        + b"".join(
            bytes(light if min(x, y, size - 1 - x, size - 1 - y) < 4 else rgb) for x in range(size)
        )
        for y in range(size)
    )
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )
