"""The rendered kernel spec, started by jupyter_client, runs code inside the built CPU image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from stackbuild import PROJECT_ROOT
from stackbuild.cli import main
from stackbuild.recipe import expand_matrix, load_recipe, select_variant
from stackbuild.render.context import VENV
from stackbuild.render.kernels import kernel_name
from stackbuild.render.renderer import render_variant

PROBE = """
import json, os, sys
import torch
import horovod.torch as hvd
print("PROBE " + json.dumps({
    "executable": sys.executable,
    "torch": torch.__version__,
    "mpi": bool(hvd.mpi_built()),
    "gloo": bool(hvd.gloo_built()),
    "variant": os.environ.get("STACKBUILD_VARIANT"),
    "pid": os.getpid(),
}))
"""


def install(folder: Path, prefix: Path) -> KernelSpecManager:
    """`stackbuild kernels install FOLDER --prefix PREFIX`; a spec manager that looks only there."""
    assert main(["kernels", "install", str(folder), "--prefix", str(prefix)]) == 0
    return KernelSpecManager(kernel_dirs=[str(prefix / "share/jupyter/kernels")])


def containers(image_id: str) -> dict[str, int]:
    """Running containers of the image `image_id`: ID -> host PID of its first process."""
    out = subprocess.run(
        ["podman", "ps", "--no-trunc", "--format", "{{.ID}} {{.ImageID}} {{.Pid}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    want = image_id.removeprefix("sha256:")
    rows = (line.split() for line in out.splitlines())
    return {cid: int(pid) for cid, iid, pid in rows if iid == want}


def run_code(km: KernelManager, code: str, timeout: float) -> str:
    """Execute code in the kernel; its stdout."""
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=timeout)
        chunks: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                chunks.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                chunks.append("\n".join(msg["content"]["traceback"]))

        reply = client.execute_interactive(code, output_hook=hook, timeout=timeout)
        assert reply["content"]["status"] == "ok", "".join(chunks)
        return "".join(chunks)
    finally:
        client.stop_channels()


@pytest.mark.engine
@pytest.mark.stack
def test_pytorch_kernel_runs_in_the_image(
    cpu_stack_build: Callable[[str], tuple[Path, dict[str, object]]], tmp_path: Path
):
    folder, manifest = cpu_stack_build("pytorch-cpu")
    variant = select_variant(
        expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml")), "pytorch-cpu"
    )
    image = str(manifest["image_id"])
    ksm = install(folder, tmp_path / "prefix")
    km = KernelManager(kernel_name=kernel_name(variant), kernel_spec_manager=ksm)
    km.start_kernel(cwd=str(tmp_path))
    try:
        out = run_code(km, PROBE, timeout=180)
        probe = json.loads(next(x for x in out.splitlines() if x.startswith("PROBE "))[6:])
        # The kernel is its container's first process (host PIDs: --pid=host).
        ours = {cid for cid, pid in containers(image).items() if pid == probe["pid"]}
        assert len(ours) == 1, containers(image)
        # Jupyter's interrupt (SIGINT to the wrapper's process) reaches the kernel.
        client = km.client()
        client.start_channels()
        msg_id = client.execute("import time; time.sleep(120)")
        time.sleep(2)
        km.interrupt_kernel()
        reply = client.get_shell_msg(timeout=30)
        client.stop_channels()
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        km.shutdown_kernel(now=False)
    assert probe["executable"] == f"{VENV}/bin/python"
    assert probe["variant"] == "pytorch-cpu"
    assert variant.settings.pytorch is not None
    assert probe["torch"].split("+")[0] == variant.settings.pytorch.version
    controllers = variant.settings.horovod.controllers
    assert probe["mpi"] == ("mpi" in controllers)
    assert probe["gloo"] == ("gloo" in controllers)
    deadline = time.monotonic() + 30
    while ours & set(containers(image)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not ours & set(containers(image)), "the kernel's container outlived its shutdown"


def kernel_stderr_when_it_dies(tmp_path: Path, env: dict[str, str]) -> str:
    """Start the rendered pytorch-cpu kernel with env; it must die at once (within 30 s, as
    jupyter_client sees it): its stderr."""
    variant = select_variant(
        expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml")), "pytorch-cpu"
    )
    render_variant(variant, tmp_path / "r")
    ksm = install(tmp_path / "r", tmp_path / "prefix")
    log = tmp_path / "stderr.txt"
    km = KernelManager(kernel_name=kernel_name(variant), kernel_spec_manager=ksm)
    start = time.monotonic()
    with log.open("w") as stderr:
        km.start_kernel(env=env, stderr=stderr)
        client = km.client()
        client.start_channels()
        with pytest.raises(RuntimeError, match="died"):
            client.wait_for_ready(timeout=60)
        client.stop_channels()
    assert time.monotonic() - start < 30
    assert not km.is_alive()
    km.cleanup_resources()
    return log.read_text()


def test_kernel_without_runtime_dies_at_start_with_the_module_hint(tmp_path: Path):
    """jupyter_client sees the kernel die at once; its stderr names the program and module."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(str(shutil.which("cat")), bindir / "cat")  # the shim's one tool; no podman
    text = kernel_stderr_when_it_dies(tmp_path, {"PATH": str(bindir), "HOME": str(tmp_path)})
    assert "pytorch/2.13-cpu: podman is not on PATH on this node" in text
    assert "apt-get install podman" in text


def test_kernel_whose_local_image_is_missing_dies_at_start_naming_the_module(tmp_path: Path):
    """A localhost/ image no registry serves: the wrapper says so (real podman) instead of
    letting podman try to pull it, and jupyter_client sees the kernel die at once."""
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (scripts/setup-host.sh)")
    env = dict(os.environ, STACKBUILD_IMAGE_OVERRIDE="localhost/stackbuild/none:missing")
    text = kernel_stderr_when_it_dies(tmp_path, env)
    assert "pytorch/2.13-cpu: localhost/stackbuild/none:missing is not on this node" in text
    assert "podman load -i ARCHIVE" in text
