"""The checks `stackbuild notebooks` makes of executed notebooks: each one can fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from stackbuild import PROJECT_ROOT
from stackbuild.notebooks import check_distributed, check_search

EPOCHS = 3


def stream(text: str) -> Any:
    return new_output("stream", name="stdout", text=text)


def px_output(rank: int, engine: int, epochs: int = EPOCHS) -> Any:
    """What a %%px cell shows for one engine: its stdout under an [stdout:N] prefix."""
    lines = [f"rank {rank}/2 epoch {e}/{EPOCHS} loss 0.{9 - e}000" for e in range(1, epochs + 1)]
    return new_output("display_data", data={"text/plain": f"[stdout:{engine}] " + "\n".join(lines)})


def distributed_book(**summary: Any) -> Any:
    values = {
        "world_size": 2,
        "ranks": [0, 1],
        "sync": "horovod",
        "comm_backend": "horovod-mpi",
        "ranks_agree": True,
        "val_mae": 0.3,
        "baseline_mae": 0.5,
        "hosts": ["vm"],
    } | summary
    book = new_notebook()
    book.cells = [
        new_code_cell("%%px\n...", outputs=[px_output(0, 1), px_output(1, 0)]),
        new_code_cell("...", outputs=[stream("SUMMARY " + json.dumps(values) + "\n")]),
    ]
    return book


def failed(checks: list[Any]) -> set[str]:
    return {c.check for c in checks if c.verdict != "pass"}


def test_a_good_distributed_notebook_passes_every_check():
    assert failed(check_distributed(distributed_book(), 2, EPOCHS)) == set()


@pytest.mark.parametrize(
    ("summary", "check"),
    [
        ({"world_size": 1, "ranks": [0]}, "one-job"),
        ({"sync": "none"}, "horovod"),
        ({"ranks_agree": False}, "ranks-agree"),
        ({"val_mae": 0.6}, "beats-no-skill"),
        ({"val_mae": float("nan")}, "beats-no-skill"),
    ],
)
def test_distributed_checks_fail_on_what_they_check(summary: dict[str, Any], check: str):
    assert failed(check_distributed(distributed_book(**summary), 2, EPOCHS)) == {check}


def test_a_rank_that_did_not_print_every_epoch_fails():
    book = distributed_book()
    book.cells[0].outputs[1] = px_output(1, 0, epochs=EPOCHS - 1)
    assert failed(check_distributed(book, 2, EPOCHS)) == {"every-rank-printed-its-epochs"}


def test_an_error_output_or_a_missing_summary_fails():
    book = distributed_book()
    book.cells.append(
        new_code_cell(
            "x", outputs=[new_output("error", ename="EnginesNotUp", evalue="1 of 2", traceback=[])]
        )
    )
    assert "no-errors" in failed(check_distributed(book, 2, EPOCHS))
    book = distributed_book()
    book.cells.pop()
    assert {"one-job", "ranks-agree", "beats-no-skill"} <= failed(
        check_distributed(book, 2, EPOCHS)
    )


def search_book(trials: list[dict[str, Any]] | None = None, best: float = 1e-3) -> Any:
    trials = trials or [
        {"lr": lr, "val_mae": mae, "baseline_mae": 0.5, "pid": pid, "host": "vm"}
        for lr, mae, pid in ((3e-4, 0.4, 1), (1e-3, 0.3, 2), (3e-3, 0.35, 1), (3e-2, 1.2, 2))
    ]
    book = new_notebook()
    html = {"text/html": "<table><tr><td>1</td></tr></table>"}
    svg = {"text/html": "<svg></svg>"}
    book.cells = [
        new_code_cell(
            "...",
            outputs=[
                new_output("display_data", data=html),
                new_output("display_data", data=svg),
                new_output("display_data", data=svg),
                stream(f"SUMMARY {json.dumps({'trials': trials, 'best_lr': best})}\n"),
                stream(f"rerun: validation MAE 0.3 after {EPOCHS} epochs followed live\n"),
            ],
        )
    ]
    book.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {
                "m1": {"model_name": "IntProgressModel", "state": {"value": 4, "max": 4}},
                "m2": {"model_name": "IntProgressModel", "state": {"value": EPOCHS, "max": EPOCHS}},
            }
        }
    }
    return nbformat.from_dict(book)


def test_a_good_search_notebook_passes_every_check():
    assert failed(check_search(search_book(), 2, EPOCHS)) == set()


def test_search_checks_fail_on_what_they_check():
    one_engine = [
        {"lr": lr, "val_mae": 0.3 + lr, "baseline_mae": 0.5, "pid": 7, "host": "vm"}
        for lr in (1e-4, 1e-3, 1e-2, 1e-1)
    ]
    assert failed(check_search(search_book(one_engine, best=1e-4), 2, EPOCHS)) == {"load-balanced"}
    assert failed(check_search(search_book(one_engine[:3], best=1e-4), 2, EPOCHS)) >= {"trials"}
    assert failed(check_search(search_book(best=3e-4), 2, EPOCHS)) == {"best-named"}
    book = search_book()
    book.metadata["widgets"] = {}
    assert failed(check_search(book, 2, EPOCHS)) == {"live-monitor"}
    book = search_book()
    book.cells[0].outputs = book.cells[0].outputs[:2] + book.cells[0].outputs[3:]
    assert failed(check_search(book, 2, EPOCHS)) == {"table-and-plots"}


def test_a_folder_without_a_build_or_built_by_docker_is_refused(tmp_path: Path):
    from stackbuild.errors import StackbuildError
    from stackbuild.notebooks import run_notebooks
    from stackbuild.recipe import expand_matrix, load_recipe, select_variant
    from stackbuild.render.renderer import render_variant

    variant = select_variant(
        expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml")), "pytorch-cpu"
    )
    folder = render_variant(variant, tmp_path / "r", formats=["modules", "kernels"])
    with pytest.raises(StackbuildError, match=r"no readable manifest\.json") as error:
        run_notebooks(folder)
    assert "stackbuild build" in (error.value.hint or "")
    if shutil.which("sbatch") is None:
        pytest.skip("Slurm not installed: the Docker refusal comes after the Slurm check")
    (folder / "manifest.json").write_text(json.dumps({"image_id": "sha256:1", "engine": "docker"}))
    (folder / "notebooks").mkdir()
    (folder / "notebooks" / "keep").write_text("an earlier run's result")
    with pytest.raises(StackbuildError, match="built with Docker, and its module runs images"):
        run_notebooks(folder)
    assert (folder / "notebooks" / "keep").exists(), "a refused run removed earlier results"
