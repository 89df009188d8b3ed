"""`stackbuild doctor`: each check's verdict and the fix it prints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stackbuild.build import doctor
from stackbuild.build.doctor import check_runtime, check_ulimit_config, configured_ulimits


def test_later_containers_conf_files_override_ulimits(tmp_path: Path) -> None:
    first = tmp_path / "a.conf"
    first.write_text('[containers]\ndefault_ulimits = ["nofile=1048576:1048576"]\n')
    second = tmp_path / "b.conf"
    second.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096"]\n')
    assert configured_ulimits([first, second]) == {"nofile": (20000, 20000), "nproc": (4096, 4096)}
    assert configured_ulimits([first]) == {"nofile": (1048576, 1048576)}


def test_ulimits_above_the_hard_limit_fail_with_the_exact_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doctor, "effective_hard_limits", lambda: {"nofile": 20000, "nproc": 32768})
    monkeypatch.setattr(doctor, "configured_ulimits", lambda: {"nofile": (1048576, 1048576)})
    check = check_ulimit_config()
    assert check.broken
    assert "nofile 1048576 > 20000" in check.detail
    assert "nproc 1048576 > 32768" in check.detail  # podman's default when nothing is set
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' in check.fix
    assert "containers.conf.d" in check.fix


def test_ulimits_within_the_hard_limit_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "effective_hard_limits", lambda: {"nofile": 20000, "nproc": 32768})
    monkeypatch.setattr(
        doctor, "configured_ulimits", lambda: {"nofile": (20000, 20000), "nproc": (4096, 4096)}
    )
    assert check_ulimit_config().status == "ok"


def test_crun_is_reported_with_the_runc_fix() -> None:
    info = {"host": {"ociRuntime": {"name": "crun"}, "cgroupVersion": "v1"}}
    check = check_runtime(info)
    assert check.broken and 'runtime = "runc"' in check.fix


@pytest.mark.engine
def test_doctor_passes_on_a_machine_set_up_by_setup_host(
    base_image: str, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    code, out, err = run_cli("doctor", "--image", base_image)
    assert code == 0, out + err
    for name in ("tools", "runtime", "ulimits", "storage", "container run", "network", "CA bundle"):
        assert name in out
    assert "fail" not in out


@pytest.mark.engine
def test_doctor_names_the_exact_ulimit_fix_when_containers_would_fail(
    base_image: str,
    run_cli: Callable[..., tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    bad = tmp_path / "containers.conf"
    bad.write_text('[containers]\ndefault_ulimits = ["nofile=1048576:1048576"]\n')
    monkeypatch.setenv("CONTAINERS_CONF", str(bad))  # only this process and its podman calls
    monkeypatch.setenv("COLUMNS", "400")
    code, out, err = run_cli("doctor", "--image", base_image)
    assert code == 2 and "ulimits, container run" in err
    limits = doctor.effective_hard_limits()
    wanted = f'"nofile={limits["nofile"]}:{limits["nofile"]}"'
    assert f"default_ulimits = [{wanted}" in out and str(bad) in out
    assert "rlimit" in out
