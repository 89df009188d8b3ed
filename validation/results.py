"""Per-rank result files: what each rank measured, written as JSON (and params as .npy).

Job scripts also leave one step record per launched step, steps/TAG.json:
{"tag": str, "returncode": int, "started": epoch seconds, "wall_s": seconds}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def run_dir(out_dir: Path, tag: str) -> Path:
    """Directory holding one run's rank files."""
    return Path(out_dir) / tag


def write_rank_result(out_dir: Path, tag: str, rank: int, result: dict[str, Any]) -> Path:
    """Write rank `rank`'s result JSON."""
    path = run_dir(out_dir, tag) / f"rank-{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float))
    return path


def save_params(out_dir: Path, tag: str, rank: int, params: np.ndarray) -> Path:
    """Save the flat parameter vector of rank `rank`."""
    path = run_dir(out_dir, tag) / f"params-rank-{rank}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, params.astype(np.float32))
    return path


def load_params(out_dir: Path, tag: str, rank: int) -> np.ndarray | None:
    """The saved parameter vector, or None if that rank saved none."""
    path = run_dir(out_dir, tag) / f"params-rank-{rank}.npy"
    return np.load(path) if path.exists() else None


def load_run(out_dir: Path, tag: str) -> list[dict[str, Any]]:
    """All rank results of one run, sorted by rank (empty if the run wrote nothing)."""
    files = sorted(run_dir(out_dir, tag).glob("rank-*.json"))
    results = [json.loads(f.read_text()) for f in files]
    return sorted(results, key=lambda r: r["rank"])


STEPS_DIR = "steps"


def step_path(out_dir: Path, tag: str) -> Path:
    """Where a job script records how the step `tag` ended."""
    return Path(out_dir) / STEPS_DIR / f"{tag}.json"


def write_step(out_dir: Path, tag: str, returncode: int, started: float, wall_s: float) -> Path:
    """Record a finished step (job scripts write the same JSON with printf)."""
    path = step_path(out_dir, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"tag": tag, "returncode": returncode, "started": started, "wall_s": wall_s}
    path.write_text(json.dumps(record))
    return path


def load_step(out_dir: Path, tag: str) -> dict[str, Any] | None:
    """The record of step `tag`, or None if no step of that name ran."""
    path = step_path(out_dir, tag)
    return json.loads(path.read_text()) if path.exists() else None
