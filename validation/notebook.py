"""What the example notebooks (examples/*.ipynb) use, in the image's kernel and engines.

IPyParallel on Slurm: the notebook's kernel (in the image, on the node where Jupyter runs)
starts the controller with `start_engines`; the engines are srun tasks of a batch job that
the module's `ipengines` command submits from the same directory (`module load ...;
ipengines -n 2`), each running the image's Python through the module's wrapper. The two
sides meet through the connection file in PROFILE_DIR, which both see (the wrappers mount
the working directory). The kernel's container has no sbatch: that is why the engines are
submitted from the host side, before or after the controller starts.

Everything here imports ipyparallel and the frameworks only when called: the harness and
the tool import this module without them.
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: Where the controller's connection files go, relative to the notebook's directory (the
#: same default as the `ipengines` command's --profile-dir).
PROFILE_DIR = ".ipengines"
#: The cluster's name in those files (`ipengines --cluster-id`).
CLUSTER_ID = "stackbuild"
#: Seconds `start_engines` waits for the engines by default (STACKBUILD_ENGINE_TIMEOUT).
ENGINE_TIMEOUT_S = 600.0


class EnginesNotUp(RuntimeError):
    """Fewer engines than asked for registered in time; the ones that did were stopped."""


def engines_wanted() -> int:
    """How many engines a notebook waits for: STACKBUILD_ENGINES, else 2."""
    return int(os.environ.get("STACKBUILD_ENGINES", "2"))


def framework() -> str:
    """The image's framework: `pytorch` where torch is installed, else `tensorflow`."""
    return "pytorch" if importlib.util.find_spec("torch") else "tensorflow"


def connection_files(profile_dir: Path, cluster_id: str) -> list[Path]:
    """The controller's connection files (engine and client side) in profile_dir."""
    return sorted((profile_dir / "security").glob(f"ipcontroller-{cluster_id}-*.json"))


def start_engines(
    n: int | None = None,
    *,
    timeout: float | None = None,
    profile_dir: str | Path = PROFILE_DIR,
    cluster_id: str = CLUSTER_ID,
) -> tuple[Any, Any]:
    """Start the controller here and wait for `n` engines; returns (cluster, client).

    STACKBUILD_IPP_LOCATION: the address engines on other nodes reach this node at.
    Stale connection files of an earlier controller are removed first, so that engines
    started from now on cannot connect to a controller that is gone. If fewer than `n`
    engines register within `timeout` seconds, the ones that did are shut down, the
    controller stops, and EnginesNotUp says what to look at.
    """
    import ipyparallel as ipp

    n = n or engines_wanted()
    timeout = timeout or float(os.environ.get("STACKBUILD_ENGINE_TIMEOUT", ENGINE_TIMEOUT_S))
    profile = Path(profile_dir).resolve()
    for stale in connection_files(profile, cluster_id):
        stale.unlink()
    cluster = ipp.Cluster(
        profile_dir=str(profile),
        cluster_id=cluster_id,
        n=0,
        controller_ip="*",  # engines on other nodes connect too
        # The address they reach this node at; default its hostname (which may resolve to
        # loopback: then only engines on this node can connect).
        controller_location=os.environ.get("STACKBUILD_IPP_LOCATION", ""),
        # stop_engines stops it; an atexit stop in the kernel kept a shut-down kernel alive
        shutdown_atexit=False,
        log_level=30,
    )
    cluster.start_controller_sync()
    module = os.environ.get("STACKBUILD_MODULE", "the image's module")
    print(
        f"controller {cluster_id} is up; waiting up to {timeout:.0f} s for {n} engines.\n"
        f"Start them from {Path.cwd()} (after `module load {module}`): ipengines -n {n}",
        flush=True,
    )
    client = cluster.connect_client_sync()
    try:
        client.wait_for_engines(n, timeout=timeout, interactive=False)
    except TimeoutError:
        up = len(client.ids)
        stop_engines(cluster, client)
        raise EnginesNotUp(
            f"{up} of {n} IPyParallel engines registered within {timeout:.0f} s; they were "
            f"stopped with the controller. Is the engines job running (squeue --name "
            f"ipengines-{cluster_id})? Its output is in ipengines-{cluster_id}-JOBID.out in "
            f"the directory it was submitted from; submit it with `ipengines -n {n}` from "
            f"{Path.cwd()}."
        ) from None
    return cluster, client


def stop_engines(cluster: Any, client: Any, wait_s: float = 30.0) -> None:
    """Shut the engines down (their srun step, and then the job, ends) and the controller.

    Not blocking on the engines' replies: an engine can exit before its reply leaves, and
    waiting for it hung a notebook. The engines' unregistering is awaited for wait_s instead;
    an engine that stays stops by itself once the controller's heartbeat is gone.
    """
    with contextlib.suppress(Exception):
        client.shutdown(targets="all", hub=False, block=False)
        deadline = time.monotonic() + wait_s
        while client.ids and time.monotonic() < deadline:
            client.spin()
            time.sleep(0.2)
    with contextlib.suppress(Exception):
        client.close()
    cluster.stop_controller_sync()


def print_epochs(prefix: str = "") -> Callable[[dict[str, Any]], None]:
    """An epoch callback for `train`: every rank prints its own epoch lines."""

    def show(epoch: dict[str, Any]) -> None:
        print(
            f"{prefix}rank {epoch['rank']}/{epoch['world_size']} "
            f"epoch {epoch['epoch']}/{epoch['epochs']} loss {epoch['loss']:.4f}",
            flush=True,
        )

    return show


def train(spec: Any, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The harness's training run of `spec` in the image's framework."""
    if spec.framework == "pytorch":
        from validation.train_torch import train as train_torch

        return train_torch(spec, on_epoch)
    from validation.train_tf import train as train_tf

    return train_tf(spec, on_epoch)


#: Variables that make a process a rank of a larger job (launch_env reads these); a trial
#: on a load-balanced engine must train alone.
RANK_VARIABLE_PREFIXES = ("SLURM_", "PMI_", "PMIX_", "OMPI_", "HOROVOD_", "MPI_LOCAL")
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Hide the launcher's rank variables for the duration: the harness sees rank 0 of 1."""
    hidden = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(RANK_VARIABLE_PREFIXES) or k in RANK_VARIABLES
    }
    for name in hidden:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(hidden)


def epochs(suite: str, size: str = "small") -> int:
    """How many epochs the harness trains `suite` at `size`."""
    from validation.config import workload_config

    return int(workload_config(suite, size).epochs)


def publish_epoch(epoch: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """On an engine: publish every epoch so far (the kernel's AsyncResult.data sees them)."""
    from ipyparallel.datapub import publish_data

    history.append(dict(epoch))
    publish_data({"epochs": list(history)})


def trial(
    lr: float,
    suite: str = "cosmoflow",
    seed: int = 1234,
    out_dir: str = "notebook-runs",
    publish: bool = False,
) -> dict[str, Any]:
    """One hyper-parameter trial on whichever engine takes it: train `suite` (small) alone.

    Returns the learning rate, the validation metrics and where and how fast it ran.
    publish: publish each finished epoch for `follow` (live monitoring in the notebook).
    """
    import socket

    from validation.spec import RunSpec

    spec = RunSpec(
        suite=suite,
        framework=framework(),
        size="small",
        out_dir=Path(out_dir),
        tag=f"trial-lr{lr:g}",
        seed=seed,
        sync="none",
        overrides={"lr": lr},
    )
    started = time.perf_counter()
    history: list[dict[str, Any]] = []
    on_epoch = (lambda e: publish_epoch(e, history)) if publish else None
    with single_process():
        result = train(spec, on_epoch)
    return {
        "lr": lr,
        **{k: v for k, v in result["metrics"].items() if isinstance(v, float)},
        "epoch_loss": result["epoch_loss"],
        "samples_per_s": result.get("samples_per_s"),
        "wall_s": time.perf_counter() - started,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


class EpochMonitor:
    """Live monitoring: a progress bar and a loss plot that update as epochs finish.

    Use `monitor.update` as `train`'s on_epoch; `display(monitor.box)` shows the widgets.
    """

    def __init__(self, epochs: int, title: str = "training") -> None:
        import ipywidgets as widgets

        self.losses: list[float] = []
        self.bar = widgets.IntProgress(value=0, min=0, max=epochs, description=title)
        self.label = widgets.HTML(value="waiting for the first epoch")
        self.plot = widgets.HTML(value="")
        self.box = widgets.VBox([self.bar, self.label, self.plot])

    def update(self, epoch: dict[str, Any]) -> None:
        self.losses.append(float(epoch["loss"]))
        self.bar.value = int(epoch["epoch"])
        self.label.value = (
            f"epoch {epoch['epoch']}/{epoch['epochs']}: loss {epoch['loss']:.4f} "
            f"(step {epoch['steps']})"
        )
        points = list(enumerate(self.losses, start=1))
        self.plot.value = svg_plot({"loss": points}, xlabel="epoch", ylabel="training loss")


def follow(result: Any, monitor: EpochMonitor, poll_s: float = 0.5) -> Any:
    """Update `monitor` with the epochs a running `trial(..., publish=True)` publishes, until
    it is done; returns its value (an engine's error is raised here)."""
    seen = 0

    def catch_up() -> None:
        nonlocal seen
        data = result.data or {}
        published = data.get("epochs", []) if isinstance(data, dict) else []
        for epoch in published[seen:]:
            monitor.update(epoch)
        seen = max(seen, len(published))

    while not result.ready():
        catch_up()
        time.sleep(poll_s)
    with contextlib.suppress(Exception):
        result.wait_for_output(10)  # the last epochs' data may trail the result
    catch_up()
    return result.get()


def html_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """rows as an HTML table of `columns` (floats to 4 significant digits)."""

    def cell(value: Any) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(cell(row.get(c, "")) for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


#: Line colours of svg_plot's series, in order.
COLOURS = ("#1f5f9f", "#c0392b", "#27ae60", "#8e44ad", "#d35400")


def svg_plot(
    series: dict[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    width: int = 420,
    height: int = 260,
) -> str:
    """A line plot of named (x, y) series as SVG, so the image needs no plotting library."""
    pad_l, pad_r, pad_t, pad_b = 60, 100, 15, 40
    xs = [math.log10(x) if log_x else x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    if not xs:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"/>'
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def px(x: float) -> float:
        x = math.log10(x) if log_x else x
        return pad_l + (x - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def py(y: float) -> float:
        return height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{width - pad_l - pad_r}" '
        f'height="{height - pad_t - pad_b}" fill="none" stroke="#999"/>',
        f'<text x="{(width - pad_r + pad_l) / 2}" y="{height - 8}" text-anchor="middle">'
        f"{html.escape(xlabel)}{' (log)' if log_x else ''}</text>",
        f'<text x="12" y="{(height - pad_b + pad_t) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(height - pad_b + pad_t) / 2})">{html.escape(ylabel)}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + 10}" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{pad_l - 4}" y="{height - pad_b}" text-anchor="end">{y0:.3g}</text>',
    ]
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in pts
        ]
        parts.append(
            f'<text x="{width - pad_r + 8}" y="{pad_t + 14 * (i + 1)}" fill="{colour}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
