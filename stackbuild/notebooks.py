"""The example notebooks run headless against a built image: its kernel, Slurm's engines.

`run_notebooks(build_dir)` installs the build's kernel spec into a private Jupyter prefix,
and for each shipped notebook (examples/*.ipynb) submits the module's `ipengines` job from
the notebook's own working directory, executes the notebook with nbclient against the
image's kernel (which starts the controller and waits for the engines), and checks what the
outputs say, not only that the cells ran. Kernel and engines run exactly the build's image
(STACKBUILD_IMAGE_OVERRIDE = its ID). The executed notebooks, report.json/.html and a run in
the build's validation record land in BUILD_DIR/notebooks/.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackbuild.errors import StackbuildError
from stackbuild.resources import resource_root

#: The shipped notebooks (examples/NAME.ipynb), in the order they run.
NOTEBOOKS = ("distributed_training", "hyperparameter_search")
#: Where the executed notebooks and their report go, in the build directory.
NOTEBOOK_DIR = "notebooks"
#: The learning rates of hyperparameter_search.ipynb must be at least this many.
MIN_TRIALS = 4
#: Seconds an engines job may take to end after its notebook shut the engines down.
JOB_END_S = 90.0

_EPOCH = re.compile(r"^rank (\d+)/(\d+) epoch (\d+)/(\d+) loss ")


@dataclass(frozen=True)
class Check:
    """One checked fact about an executed notebook."""

    check: str
    subject: str
    verdict: str  # pass | fail
    detail: str


def _check(name: str, subject: str, ok: bool, detail: str) -> Check:
    return Check(name, subject, "pass" if ok else "fail", detail)


def output_texts(book: Any) -> list[str]:
    """Every text the code cells showed: streams, plain-text displays, error tracebacks."""
    texts: list[str] = []
    for cell in book.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "stream":
                texts.append(out.get("text", ""))
            elif out.get("output_type") in ("display_data", "execute_result"):
                texts.append(out.get("data", {}).get("text/plain", ""))
            elif out.get("output_type") == "error":
                texts.append("\n".join(out.get("traceback", [])))
    return texts


def output_data(book: Any, mime: str) -> list[str]:
    """The `mime` outputs of the code cells (e.g. text/html)."""
    return [
        out.get("data", {}).get(mime, "")
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if mime in out.get("data", {})
    ]


def errors(book: Any) -> list[str]:
    """The error outputs (ename: evalue) of the code cells."""
    return [
        f"{out.get('ename')}: {out.get('evalue')}"
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]


def summary(book: Any) -> dict[str, Any] | None:
    """The last `SUMMARY {json}` line a notebook printed."""
    found = None
    for text in output_texts(book):
        for line in text.splitlines():
            if line.startswith("SUMMARY "):
                found = json.loads(line[len("SUMMARY ") :])
    return found


def epochs_by_rank(book: Any) -> dict[int, set[int]]:
    """The epochs each rank printed (`rank R/W epoch E/N loss ...` lines of %%px cells)."""
    seen: dict[int, set[int]] = {}
    for text in output_texts(book):
        for line in text.splitlines():
            match = _EPOCH.match(line.split("] ", 1)[-1] if line.startswith("[") else line)
            if match:
                seen.setdefault(int(match.group(1)), set()).add(int(match.group(3)))
    return seen


def widget_states(book: Any) -> list[dict[str, Any]]:
    """The saved widget models (model_name and state) of an executed notebook."""
    store = book.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return [
        {"model_name": m.get("model_name"), **m.get("state", {})}
        for m in store.get("state", {}).values()
    ]


def check_distributed(book: Any, engines: int, epochs: int) -> list[Check]:
    """distributed_training.ipynb: one Horovod job across the engines that learned."""
    s = summary(book) or {}
    seen = epochs_by_rank(book)
    want = set(range(1, epochs + 1))
    ranks = list(range(engines))
    return [
        _check("no-errors", "cells", not errors(book), "; ".join(errors(book)) or "none"),
        _check(
            "one-job",
            "engines",
            s.get("world_size") == engines and s.get("ranks") == ranks,
            f"world size {s.get('world_size')}, ranks {s.get('ranks')} (want {engines})",
        ),
        _check(
            "horovod",
            "engines",
            s.get("sync") == "horovod",
            f"sync {s.get('sync')}, {s.get('comm_backend')}",
        ),
        _check(
            "every-rank-printed-its-epochs",
            "%%px output",
            all(seen.get(r, set()) >= want for r in ranks),
            ", ".join(f"rank {r}: {len(seen.get(r, set()))}/{epochs} epochs" for r in ranks),
        ),
        _check(
            "ranks-agree",
            "parameters",
            s.get("ranks_agree") is True,
            "identical parameters on every rank"
            if s.get("ranks_agree")
            else "parameters differ (or no summary)",
        ),
        _check(
            "beats-no-skill",
            "validation MAE",
            _finite(s.get("val_mae")) and s["val_mae"] < s.get("baseline_mae", -1),
            f"{s.get('val_mae')} vs no-skill {s.get('baseline_mae')}",
        ),
    ]


def check_search(book: Any, engines: int, epochs: int) -> list[Check]:
    """hyperparameter_search.ipynb: load-balanced trials, table, plots, live monitor."""
    s = summary(book) or {}
    trials = s.get("trials", [])
    lrs = {t.get("lr") for t in trials}
    workers = {(t.get("host"), t.get("pid")) for t in trials}
    finite = [t for t in trials if _finite(t.get("val_mae"))]
    best = min(finite, key=lambda t: t["val_mae"]) if finite else {}
    bars = [w for w in widget_states(book) if w["model_name"] == "IntProgressModel"]
    live = [w for w in bars if w.get("max") == epochs]
    texts = "\n".join(output_texts(book))
    followed = re.search(r"after (\d+) epochs followed live", texts)
    return [
        _check("no-errors", "cells", not errors(book), "; ".join(errors(book)) or "none"),
        _check(
            "trials",
            "learning rates",
            len(lrs) >= MIN_TRIALS and len(finite) == len(trials),
            f"{len(trials)} trials at {len(lrs)} learning rates, {len(finite)} with a finite MAE",
        ),
        _check(
            "load-balanced",
            "engines",
            len(workers) >= min(engines, len(trials)) and len(workers) > 1,
            f"trials ran on {len(workers)} engine(s) of {engines}",
        ),
        _check(
            "best-named",
            "summary",
            bool(best) and s.get("best_lr") == best.get("lr"),
            f"best lr {s.get('best_lr')} (lowest MAE at {best.get('lr')})",
        ),
        _check(
            "table-and-plots",
            "outputs",
            any("<table" in h for h in output_data(book, "text/html"))
            and sum("<svg" in h for h in output_data(book, "text/html")) >= 2,
            "an HTML table and two SVG plots",
        ),
        _check(
            "live-monitor",
            "widgets",
            any(w.get("value") == epochs for w in live)
            and followed is not None
            and int(followed.group(1)) == epochs,
            f"progress bar at {[w.get('value') for w in live]} of {epochs} epochs; "
            f"{followed.group(0) if followed else 'no epochs followed'}",
        ),
    ]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


CHECKERS = {"distributed_training": check_distributed, "hyperparameter_search": check_search}


def outside_slurm_job() -> dict[str, str]:
    """This process's environment without the variables of a Slurm job it may run in (srun
    and sbatch would take them for their own); SLURM_CONF, which names the cluster, stays."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}


def _kernel_spec(build_dir: Path, prefix: Path) -> tuple[str, Path]:
    """Install the build's kernel spec under prefix; (kernel name, the wrappers' bin dir)."""
    from stackbuild.commands.kernels import find_specs, install_spec

    specs = find_specs(build_dir)
    target = install_spec(specs[0], prefix / "share" / "jupyter" / "kernels")
    spec = json.loads((target / "kernel.json").read_text(encoding="utf-8"))
    return target.name, (build_dir / spec["metadata"]["stackbuild"]["wrapper"]).parent


def _submit(
    bindir: Path, work: Path, engines: int, wait_s: float, args: list[str], env: dict[str, str]
) -> str:
    """`ipengines -n N` from work (the notebook's directory); the job ID."""
    proc = subprocess.run(
        [str(bindir / "ipengines"), "-n", str(engines), "--wait", str(int(wait_s)), *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"job (\d+)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise StackbuildError(
            f"ipengines could not submit the engines job: {proc.stderr.strip() or proc.stdout}",
            hint="check that Slurm takes jobs here (sinfo; scripts/setup-host.sh starts it)",
        )
    return match.group(1)


def _end_job(job: str, env: dict[str, str], grace_s: float = JOB_END_S) -> str:
    """Wait for the engines job to end by itself; cancel it after grace_s. What happened."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "--noheader", "--jobs", job, "--format=%T"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
        if not state:
            return "ended"
        time.sleep(2)
    subprocess.run(["scancel", job], env=env, capture_output=True, timeout=30, check=False)
    return f"cancelled after {grace_s:.0f} s"


def run_notebook(
    name: str,
    out: Path,
    kernel: tuple[str, Path, Path],
    env: dict[str, str],
    engines: int,
    timeout_s: float,
    sbatch_args: list[str],
) -> dict[str, Any]:
    """Run one notebook in out/NAME/ with its engines job; its checks and where it is."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from validation.config import workload_config

    kernel_name, bindir, prefix = kernel
    work = out / name
    work.mkdir(parents=True)
    book = nbformat.read(resource_root() / "examples" / f"{name}.ipynb", as_version=4)
    book.metadata["kernelspec"] = {"name": kernel_name, "language": "python"}
    started = time.monotonic()
    job = _submit(bindir, work, engines, timeout_s, sbatch_args, env)
    ksm = KernelSpecManager(kernel_dirs=[str(prefix / "share" / "jupyter" / "kernels")])
    km = KernelManager(kernel_name=kernel_name, kernel_spec_manager=ksm)
    client = NotebookClient(
        book,
        km=km,
        timeout=int(timeout_s),
        startup_timeout=300,
        resources={"metadata": {"path": str(work)}},
        store_widget_state=True,
    )
    failure = ""
    try:
        client.execute(env=env)
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        failure = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    finally:
        try:
            if km.has_kernel:  # nbclient leaves a kernel manager it was given running
                km.shutdown_kernel(now=False)
        finally:
            job_end = _end_job(job, env)
        nbformat.write(book, out / f"{name}.ipynb")
    epochs = int(workload_config("cosmoflow", "small").epochs)
    checks = CHECKERS[name](book, engines, epochs)
    checks.append(
        _check(
            "engines-job-ended",
            f"Slurm job {job}",
            job_end == "ended",
            f"{job_end} after the notebook",
        )
    )
    return {
        "notebook": name,
        "executed": str(out / f"{name}.ipynb"),
        "engines_job": job,
        "engines_output": str(work / f"ipengines-stackbuild-{job}.out"),
        "wall_s": round(time.monotonic() - started, 1),
        "failure": failure,
        "passed": not failure and all(c.verdict == "pass" for c in checks),
        "checks": [asdict(c) for c in checks],
    }


def run_notebooks(
    build_dir: Path,
    engines: int = 2,
    timeout_s: float = 900,
    sbatch_args: tuple[str, ...] = (),
    names: tuple[str, ...] = NOTEBOOKS,
    controller_address: str | None = None,
) -> dict[str, Any]:
    """Run `names` against the build's image; the report (also in BUILD_DIR/notebooks/).

    controller_address: where engines on other nodes reach the kernel's controller (default:
    this host's name, as ipyparallel does).
    """
    manifest_file = build_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        image_id = str(manifest["image_id"])
    except (OSError, ValueError, KeyError) as exc:
        raise StackbuildError(
            f"{build_dir} has no readable manifest.json with an image_id ({exc})",
            hint="pass the directory `stackbuild build` wrote for the variant",
        ) from None
    for tool in ("sbatch", "squeue", "scancel"):
        if shutil.which(tool) is None:
            raise StackbuildError(
                f"{tool} is not on PATH: the notebooks' engines are a Slurm job",
                hint="run this on a Slurm login node (here: scripts/setup-host.sh starts one)",
            )
    from stackbuild.commands.kernels import find_specs

    spec = json.loads(find_specs(build_dir)[0].read_text(encoding="utf-8"))
    runtime = spec.get("metadata", {}).get("stackbuild", {}).get("runtime")
    if manifest.get("engine") == "docker" and runtime != "docker":
        raise StackbuildError(
            f"{build_dir} was built with Docker, and its module runs images with {runtime}, "
            "which cannot see Docker's images: the kernel and the engines run through the "
            "module's wrapper",
            hint="run the notebooks in the variant built with podman (stackbuild build cpu "
            "--variant ...), or render the module for Docker (stackbuild render --runtime docker)",
        )
    out = build_dir / NOTEBOOK_DIR
    shutil.rmtree(out, ignore_errors=True)  # results of an earlier image must not remain
    out.mkdir(parents=True)
    prefix = out / ".jupyter"
    kernel_name, bindir = _kernel_spec(build_dir, prefix)
    env = outside_slurm_job()
    env |= {
        "STACKBUILD_IMAGE_OVERRIDE": image_id,  # exactly the built image, not its tag
        "STACKBUILD_ENGINES": str(engines),
        "STACKBUILD_ENGINE_TIMEOUT": str(int(timeout_s)),
    }
    if controller_address:
        env["STACKBUILD_IPP_LOCATION"] = controller_address
    results = [
        run_notebook(
            name, out, (kernel_name, bindir, prefix), env, engines, timeout_s, [*sbatch_args]
        )
        for name in names
    ]
    passed = all(r["passed"] for r in results)
    report = {
        "schema": "stackbuild.notebooks-report/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "image": image_id,
        "target": image_id,  # what publish's plan check reads (validation_record.plan_gaps)
        "kernel": kernel_name,
        "passed": passed,
        "verdict": "passed" if passed else "failed",
        "request": {
            "suites": ["notebooks"],
            "frameworks": _frameworks(build_dir),
            "ranks": [engines],
            "runtime": "kernel+ipengines",
            "launcher": "slurm",
            "size": "small",
        },
        "notebooks": results,
        "checks": [
            {**c, "subject": f"{r['notebook']}: {c['subject']}"}
            for r in results
            for c in r["checks"]
        ],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.html").write_text(report_html(report), encoding="utf-8")
    return report


def _frameworks(build_dir: Path) -> list[str]:
    """The image's frameworks, as its rendered build context records them."""
    try:
        info = json.loads((build_dir / "files" / "stackbuild-info.json").read_text("utf-8"))
        return sorted(info["expect"]["frameworks"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def report_html(report: dict[str, Any]) -> str:
    """A page with each notebook's checks and a link to the executed notebook."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>notebooks</title>",
        f"<h1>Example notebooks: {html.escape(report['verdict'])}</h1>",
        f"<p>image {html.escape(report['image'])}, kernel {html.escape(report['kernel'])}, "
        f"{html.escape(report['created'])}</p>",
    ]
    for r in report["notebooks"]:
        link = html.escape(Path(r["executed"]).name)
        parts.append(
            f"<h2><a href='{link}'>{html.escape(r['notebook'])}</a>: "
            f"{'passed' if r['passed'] else 'failed'} ({r['wall_s']} s)</h2>"
        )
        if r["failure"]:
            parts.append(f"<p>stopped: {html.escape(r['failure'])}</p>")
        parts.append("<table><tr><th>check</th><th>subject</th><th>verdict</th><th>detail</th>")
        parts += [
            "<tr>"
            + "".join(f"<td>{html.escape(str(c[k]))}</td>" for k in Check.__dataclass_fields__)
            + "</tr>"
            for c in r["checks"]
        ]
        parts.append("</table>")
    return "\n".join(parts) + "\n"
