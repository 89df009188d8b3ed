"""A killed `podman run` client leaves its container running: the runner removes it by the
label every container of a validation carries."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from validation.runner import reap_containers, stream_subprocess
from validation.runtimes import container_argv

pytestmark = pytest.mark.engine


def _running(label: str) -> list[str]:
    listing = ["podman", "ps", "-q", "--filter", f"label={label}"]
    return subprocess.run(listing, capture_output=True, text=True, check=True).stdout.split()


def test_a_timed_out_container_is_found_by_its_label_and_removed(base_image: str) -> None:
    label = f"stackbuild.run={uuid.uuid4().hex}"
    argv = [*container_argv("podman", base_image, label=label), "sleep", "600"]
    assert f"--label={label}" in argv
    code, tail = stream_subprocess(
        [*argv[:-2], "sh", "-c", "echo up; sleep 600"], dict(os.environ), 8
    )
    assert code != 0 and "killed after" in tail[-1], tail
    # the client is gone; the container (conmon's child) is not
    assert _running(label), "expected the killed client's container to be still running"
    removed = reap_containers("podman", label)
    assert len(removed) == 1
    assert _running(label) == []
    assert reap_containers("podman", label) == []
