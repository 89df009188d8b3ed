"""validation.notebook's helpers and validation.ipengine's arguments, without an image."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

import pytest

from validation import ipengine
from validation import notebook as nb


def test_single_process_hides_the_rank_variables_and_restores_them(
    monkeypatch: pytest.MonkeyPatch,
):
    for name, value in {
        "SLURM_PROCID": "1",
        "SLURM_STEP_ID": "0",
        "PMI_RANK": "1",
        "RANK": "1",
        "WORLD_SIZE": "2",
        "OMP_NUM_THREADS": "3",
    }.items():
        monkeypatch.setenv(name, value)
    from validation.launch_env import rank_info

    assert rank_info().world_size == 2
    with nb.single_process():
        assert rank_info().world_size == 1
        assert "PMI_RANK" not in os.environ and "SLURM_PROCID" not in os.environ
        assert os.environ["OMP_NUM_THREADS"] == "3"  # not a rank variable
    assert os.environ["PMI_RANK"] == "1" and rank_info().world_size == 2


def test_svg_plot_draws_each_series_and_is_wellformed():
    svg = nb.svg_plot(
        {"a": [(1e-4, 1.0), (1e-3, 0.5), (1e-2, 0.7)], "b <&>": [(1e-4, 0.9)]},
        xlabel="lr",
        ylabel="MAE",
        log_x=True,
    )
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 2
    assert len(root.findall(f"{ns}circle")) == 4
    assert "b &lt;&amp;&gt;" in svg
    # Log scale: 1e-4, 1e-3, 1e-2 are evenly spaced.
    xs = [float(p.split(",")[0]) for p in lines[0].get("points", "").split()]
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])
    assert ET.fromstring(nb.svg_plot({}, xlabel="x", ylabel="y")) is not None


def test_html_table_escapes_and_formats():
    text = nb.html_table([{"lr": 0.001234567, "host": "<n1>"}], ["lr", "host", "missing"])
    assert "<td>0.001235</td>" in text
    assert "&lt;n1&gt;" in text
    assert text.count("<td>") == 3


def test_engine_waits_for_the_controller_and_stops_without_it():
    argv = ipengine.engine_argv("/work/.ipengines", "stackbuild", 120)
    assert "--profile-dir=/work/.ipengines" in argv
    assert "--cluster-id=stackbuild" in argv
    assert "--IPEngine.wait_for_url_file=120" in argv
    misses = next(a for a in argv if a.startswith("--IPEngine.max_heartbeat_misses="))
    assert 0 < int(misses.split("=")[1]) <= 30


def test_print_epochs_prints_the_line_the_checks_read(capsys: pytest.CaptureFixture[str]):
    from stackbuild.notebooks import _EPOCH

    nb.print_epochs()({"rank": 1, "world_size": 2, "epoch": 3, "epochs": 10, "loss": 0.25})
    line = capsys.readouterr().out.strip()
    match = _EPOCH.match(line)
    assert match and match.groups() == ("1", "2", "3", "10"), line
    assert re.search(r"loss 0\.2500$", line)
