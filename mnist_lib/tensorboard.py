"""TensorBoard for chapter 05: start it on the runs' logs, read the metrics back, compare runs.

Three jobs, in the order the chapter needs them:

1. **Serve the logs.** :func:`start_tensorboard` applies the same objects a cluster
   runs (:func:`mnist_lib.manifests.tensorboard`: a Deployment + Service over the
   shared volume) through the backend, then port-forwards to it. On the local
   backend the Deployment is a ``tensorboard`` process on this machine; on a cluster
   it is a pod. Either way you get a :class:`TensorBoardHandle` with a ``url`` that
   already answers, ``embed()`` for the notebook, and ``stop()``.
2. **Read the numbers back.** :func:`mnist_lib.runs.read_scalars` reads the event files directly
   into plain Python lists, so a figure or a table needs no browser.
   Keras 3 and ``tf.summary`` store scalars as *tensor* summaries, so TensorBoard's
   ``EventAccumulator.Scalars()`` finds nothing; ``Tensors()`` does (measured on
   TensorFlow 2.21).
3. **Compare runs.** :func:`plot_runs` draws one curve per run; :func:`compare_runs`
   tabulates what each run's ``result.json`` says (test accuracy, time, strategy).
"""

from __future__ import annotations

import atexit
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import psutil

from mnist_lib import cluster, manifests, paths
from mnist_lib.cluster import BackendChoice, backend_for
from mnist_lib import runs as run_files  # (chapter 05 names its list of runs `runs`)
from mnist_lib.cluster.base import Backend, PortForward
from mnist_lib.constants import LOG_TAIL_LINES, OBJECTIVE, OUTPUT_MOUNT, TENSORBOARD_PORT
from mnist_lib.waiting import wait_until

DEFAULT_NAME = "tensorboard"
# TensorBoard imports TensorFlow before it listens: 4-10 s on an idle machine, 25 s
# measured with both cores busy training. The timeout leaves room for a loaded laptop.
START_TIMEOUT = 120.0
# What TensorBoard prints when its port is taken. It then lingers (150 s measured)
# before exiting, so start_tensorboard watches its output for these words.
PORT_BUSY_WORDS = ("Address already in use", "could not bind", "is in use by another program")

# The runs chapter 05 compares, and the chapter that produces each (docs/architecture.md).
COMPARED_RUNS = {
    "ch01-local": "chapter 01 (one process)",
    "ch03-job": "chapter 03 (one pod, the same MLP as chapter 04: the fair baseline)",
    "ch04-multi-worker": "chapter 04 (multi-worker mirrored, 2 workers)",
    "ch04-parameter-server": "chapter 04 (parameter servers: chief + 1 PS + 2 workers)",
}


class TensorBoardError(RuntimeError):
    """TensorBoard could not be started on these logs. The message says why and what to do."""


# == 1. serving the logs ===========================================================

def _pod_log_dir(log_dir: Path | str | None) -> tuple[str, Path]:
    """The log folder as the pod sees it (under ``/outputs``) and as this machine sees it.

    TensorBoard runs where the shared volume is mounted, so it can only read folders
    on that volume: ``outputs/`` here (``MNIST_OUTPUT_DIR``), ``/outputs`` in a pod.
    """
    root = paths.output_dir()
    if log_dir is None:
        return OUTPUT_MOUNT, root
    text = str(log_dir)
    mount = PurePosixPath(OUTPUT_MOUNT)
    if PurePosixPath(text).is_relative_to(mount) and not Path(text).resolve().is_relative_to(root.resolve()):
        return text, root / PurePosixPath(text).relative_to(mount)  # already a pod path
    local = Path(log_dir).expanduser().resolve()
    if not local.is_relative_to(root.resolve()):
        raise TensorBoardError(
            f"log folder {str(log_dir)!r} is not under the output folder {str(root)!r}: TensorBoard "
            f"runs as a pod that sees only the shared volume ({OUTPUT_MOUNT}). Pass a folder under "
            f"{str(root)!r} (e.g. a run's logs, {str(root / '<run>' / 'logs')!r}), or set "
            "MNIST_OUTPUT_DIR to a folder that contains it.")
    relative = local.relative_to(root.resolve()).as_posix()
    return (OUTPUT_MOUNT if relative == "." else f"{OUTPUT_MOUNT}/{relative}"), local


def _check_has_events(local: Path) -> None:
    """Fail here, with a hint, rather than show an empty TensorBoard."""
    if not local.is_dir():
        raise TensorBoardError(
            f"log folder {str(local)!r} does not exist. Train a run first (chapter 01 writes "
            f"{str(paths.output_dir() / 'ch01-local' / 'logs')!r}), or check the path.")
    if next(local.rglob("events.out.tfevents.*"), None) is None:
        raise TensorBoardError(
            f"log folder {str(local)!r} has no TensorBoard event files (events.out.tfevents.*) yet. "
            "A run writes them after its first epoch: train one (chapter 01), or wait for it.")


def _get(url: str, timeout: float = 2.0) -> bytes | None:
    """The body of a GET that answered 200, or None if nothing (or an error) answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read() if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


class TensorBoardHandle:
    """A TensorBoard that answers on :attr:`url`. Stop it with :meth:`stop` (or use ``with``)."""

    def __init__(self, backend: Backend, objects: list[dict[str, Any]], forward: PortForward,
                 log_dir: str, startup_seconds: float):
        self.backend = backend
        self.objects = objects
        self.name: str = objects[0]["metadata"]["name"]
        self.log_dir = log_dir  # as TensorBoard sees it (under /outputs)
        self.startup_seconds = startup_seconds  # from apply() to answering HTTP 200
        self._forward = forward
        self.stopped = False

    @property
    def port(self) -> int:
        """The port on 127.0.0.1 that reaches TensorBoard (a port-forward on a cluster)."""
        return self._forward.local_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    # -- TensorBoard's own HTTP API (what its web page reads) -----------------------
    def _json(self, route: str, **query: str) -> Any:
        body = _get(self.url + route + ("?" + urllib.parse.urlencode(query) if query else ""), timeout=10)
        if body is None:
            raise TensorBoardError(f"TensorBoard at {self.url} did not answer {route}"
                                   + (" (it was stopped)" if self.stopped else ""))
        return json.loads(body)

    def runs(self) -> list[str]:
        """The runs TensorBoard found, e.g. ``["ch01-local/logs/train", ...]`` (``/data/runs``)."""
        return self._json("data/runs")

    def served_scalars(self, run: str, tag: str) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of one curve, exactly as TensorBoard's scalars dashboard gets it."""
        return [(int(step), float(value))
                for _wall_time, step, value in self._json("data/plugin/scalars/scalars", run=run, tag=tag)]

    def answers(self) -> bool:
        """Does TensorBoard answer HTTP 200 right now?"""
        return not self.stopped and _get(self.url) is not None

    # -- in the notebook ---------------------------------------------------------------
    def embed(self, height: int = 600) -> Any:
        """TensorBoard inside the notebook: an IFrame of :attr:`url`.

        It loads in *your browser*, so it works when the browser runs on the machine
        that runs the kernel (a laptop, or a port-forwarded JupyterLab). Otherwise open
        the URL with the same forwarding as JupyterLab.
        """
        from IPython.display import IFrame

        return IFrame(self.url, width="100%", height=height)

    # -- stopping --------------------------------------------------------------------------
    def stop(self) -> None:
        """Close the port-forward and delete the Deployment and Service (its process or pod).

        Safe to call twice; it also runs when Python exits. On the local backend it
        returns once the process is gone and its port is free.
        """
        if self.stopped:
            return
        self.stopped = True
        atexit.unregister(self.stop)
        _running.pop(self.name, None)
        try:
            self._forward.close()
        finally:
            self.backend.delete(self.objects)

    def __enter__(self) -> "TensorBoardHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else self.url
        return f"TensorBoard({self.log_dir} -> {state})"


_running: dict[str, TensorBoardHandle] = {}  # by Deployment name, so a re-run cell replaces it


def tensorboard_processes() -> list[int]:
    """PIDs of TensorBoard processes started from this Python process that still run.

    Empty after :meth:`TensorBoardHandle.stop`: the way to check nothing is left behind
    (on a cluster, TensorBoard runs in a pod, so this is empty there too).
    """
    alive = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any("tensorboard" in part for part in p.cmdline()):
                alive.append(p.pid)
        except psutil.Error:
            pass  # it ended while we looked
    return alive


def _logs(backend: Backend, name: str) -> str:
    """The last lines TensorBoard printed ("" before its pod exists)."""
    try:
        return backend.get_job_logs(name, kind="Deployment", tail=LOG_TAIL_LINES)
    except Exception:  # no pod yet, or its container has not started
        return ""


def _failure(backend: Backend, name: str, what: str) -> TensorBoardError:
    """An error with the tail of TensorBoard's own output, which usually says why."""
    try:
        logs = backend.get_job_logs(name, kind="Deployment", tail=LOG_TAIL_LINES).rstrip()
    except Exception as err:  # the failure matters more than missing logs
        logs = f"(logs unavailable: {err})"
    hint = ""
    if any(words in logs for words in PORT_BUSY_WORDS):
        hint = "\nIts port is already in use by another program: stop that program, or try again."
    return TensorBoardError(f"TensorBoard {what}.{hint}\n"
                            f"--- last {LOG_TAIL_LINES} lines of its output ---\n{logs}")


def start_tensorboard(log_dir: Path | str | None = None, backend: BackendChoice = None,
                      timeout: float = START_TIMEOUT, name: str = DEFAULT_NAME) -> TensorBoardHandle:
    """Start TensorBoard on ``log_dir`` through the cluster backend; return once it answers.

    ``log_dir``: a folder under the output folder (``outputs/``, the shared volume)
    or a pod path under ``/outputs``; default: the whole volume, so every run shows
    up side by side. ``backend``: a backend or its name; default
    :func:`mnist_lib.cluster.get_backend` (``MNIST_BACKEND``).

    The same objects run on both backends (:func:`mnist_lib.manifests.tensorboard`),
    so chapter 05 reads the same on a laptop and on a cluster. It waits until
    TensorBoard answers HTTP 200 and lists at least one run, and raises
    :class:`TensorBoardError` with the tail of TensorBoard's output if it fails.
    Starting a second one of the same ``name`` stops the first.
    """
    backend = backend_for(backend)
    pod_dir, local_dir = _pod_log_dir(log_dir)
    if backend.name == "local":  # on a cluster the volume is not necessarily visible from here
        _check_has_events(local_dir)
    if name in _running:
        _running[name].stop()
    objects = manifests.tensorboard(name=name, log_dir=pod_dir)
    forward: PortForward | None = None
    answers = False  # did TensorBoard answer HTTP at the last look (with or without runs)?

    def lists_runs() -> bool:
        nonlocal forward, answers
        status = backend.get_job(name, kind="Deployment")
        if any(r.restarts or r.failed for r in status.replicas.values()):
            raise _failure(backend, name, "exited while starting")
        if any(words in _logs(backend, name) for words in PORT_BUSY_WORDS):
            raise _failure(backend, name, "could not listen on its port")
        if forward is None:
            try:
                forward = backend.port_forward(name, TENSORBOARD_PORT, kind="Service", timeout=1.0)
            except cluster.NotFoundError:
                return False  # no pod (or nothing listening) yet
        runs = _get(f"http://127.0.0.1:{forward.local_port}/data/runs")
        answers = runs is not None
        return answers and bool(json.loads(runs))

    started = time.monotonic()
    backend.apply(objects)
    try:
        try:
            wait_until(lists_runs, timeout)
        except TimeoutError:
            if not answers:
                raise _failure(backend, name, f"did not answer within {timeout:.0f} s") from None
            warnings.warn(f"TensorBoard answers at http://127.0.0.1:{forward.local_port}/ but lists no "
                          f"runs in {pod_dir} yet: it shows runs as their first epoch is written.",
                          stacklevel=2)
    except BaseException:
        if forward is not None:
            forward.close()
        backend.delete(objects)
        raise
    handle = TensorBoardHandle(backend, objects, forward, pod_dir, time.monotonic() - started)
    _running[name] = handle
    atexit.register(handle.stop)
    return handle


# == 2. reading the numbers back =====================================================

def find_runs(runs: Sequence[str] = tuple(COMPARED_RUNS),
              backend: BackendChoice = None) -> tuple[list[str], list[str]]:
    """``(finished, missing)``: a run is finished when it wrote ``result.json`` on the volume.

    A run this notebook trained itself (chapter 01, in the kernel) is first put on the
    volume, so that TensorBoard's pod sees it too (:func:`mnist_lib.runs.publish`).
    """
    finished = [r for r in runs if run_files.finished(r, backend) or run_files.publish(r, backend)]
    return finished, [r for r in runs if r not in finished]


def stand_in_name(run: str) -> str:
    """The name of the tiny run chapter 05 trains when ``run`` is missing.

    A different name: the real chapter would otherwise resume from the stand-in's
    checkpoints and skip its own training.
    """
    return f"ch05-standin-{run}"


def train_stand_in(run: str, backend: BackendChoice = None, timeout: float = 900) -> str:
    """Train a tiny stand-in for a missing run (MLP, 2 epochs, 4,000 images), the same way.

    Same strategy as the original (one process, 2 workers, or chief + PS + 2 workers),
    submitted through the backend, so it lands on the shared volume on a cluster
    too. Returns the stand-in's run name; an existing finished stand-in is reused.
    """
    name = stand_in_name(run)
    backend = backend_for(backend)
    if not find_runs([name], backend)[1]:
        return name
    config = manifests.run_config(name, architecture="mlp", epochs=2, train_limit=4000)
    if run.startswith("ch04-parameter-server"):
        job = manifests.tfjob(name, config, workers=2, parameter_servers=1)
    elif run.startswith("ch04"):
        job = manifests.tfjob(name, config, workers=2)
    else:
        job = manifests.training_job(name, config)
    backend.delete_job(name)  # a failed earlier attempt of the same name
    backend.create_job(job)
    try:
        backend.wait_for_job_conditions(name, timeout=timeout, progress=False)
    finally:
        backend.delete_job(name)
    return name


def runs_to_compare(runs: Sequence[str] = tuple(COMPARED_RUNS), backend: BackendChoice = None,
                    train_missing: bool = True) -> list[str]:
    """The runs to compare, saying which exist; missing ones are replaced by tiny stand-ins.

    Chapter 05 is meant to run after chapters 01 and 04. Opened first, it still
    works: each missing run is named with the chapter that produces it, and a
    stand-in is trained (about a minute in all on a laptop).
    """
    finished, missing = find_runs(runs, backend)
    chosen = []
    for run in runs:
        if run in finished:
            print(f"found   {run}")
            chosen.append(run)
            continue
        where = COMPARED_RUNS.get(run, "its chapter")
        if not train_missing:
            print(f"missing {run}: run {where} to produce it")
            continue
        print(f"missing {run}: {where} produces it. Training a tiny stand-in, "
              f"{stand_in_name(run)} (MLP, 2 epochs, 4,000 images): its numbers are not the chapter's.",
              flush=True)
        chosen.append(train_stand_in(run, backend))
    return chosen


@dataclass
class RunSummary:
    """One row of :func:`compare_runs`: what a finished run reported in ``result.json``."""

    run: str
    epochs: int
    final_val_accuracy: float
    test_accuracy: float
    training_seconds: float
    strategy: str
    workers: int


def compare_runs(runs: Sequence[str], backend: BackendChoice = None) -> list[RunSummary]:
    """Final validation accuracy, test accuracy, training time and strategy of each run.

    Read from ``/outputs/<run>/checkpoints/result.json`` (what training writes at the
    end). A run without it raises ``FileNotFoundError`` naming the run.
    """
    rows = []
    for run in runs:
        result = run_files.result(run, backend)
        if result is None:
            raise FileNotFoundError(f"run {run!r} has no {run_files.on_volume(run, run_files.CHECKPOINTS)}/"
                                    f"{run_files.RESULT_FILE}: it has not finished (or never ran). "
                                    "See runs_to_compare().")
        history = result.get("history") or [{}]
        rows.append(RunSummary(run, len(result.get("history") or []),
                               float(history[-1].get("val_accuracy", float("nan"))),
                               float(result["test_accuracy"]), float(result["training_seconds"]),
                               str(result["strategy"]), int(result["workers"])))
    return rows


def format_table(rows: Sequence[RunSummary]) -> str:
    """The comparison as aligned text; accuracies to 3 decimals, seconds to 1."""
    header = ("run", "epochs", "val acc", "test acc", "train s", "strategy", "workers")
    lines = [(r.run, str(r.epochs), f"{r.final_val_accuracy:.3f}", f"{r.test_accuracy:.3f}",
              f"{r.training_seconds:.1f}", r.strategy, str(r.workers)) for r in rows]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in [header, *lines])


# == 3. plotting runs side by side =====================================================

def plot_runs(scalars_by_run: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
              tag: str = OBJECTIVE, ax: Any = None) -> Any:
    """One line per run of scalar ``tag`` against the epoch; returns the Figure.

    ``scalars_by_run``: ``{run: runs.read_scalars(...)}``. Pass ``ax`` to draw into a panel
    of a larger figure (e.g. accuracy beside loss). A run without ``tag`` is skipped
    with a note in the legend, rather than failing the whole figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    for run, scalars in scalars_by_run.items():
        points = scalars.get(tag) or []
        if not points:
            ax.plot([], [], label=f"{run} (no {tag})")
            continue
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o", label=run)
    ax.set_xlabel("epoch")
    ax.set_ylabel(tag)
    ax.set_title(tag)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")
    return ax.figure


def plot_train_vs_validation(scalars: Mapping[str, Sequence[tuple[int, float]]], metric: str = "epoch_loss",
                             title: str = "", ax: Any = None) -> Any:
    """Training and validation curves of one run: a gap that widens is overfitting."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    for split, style in (("train", "--"), ("validation", "-")):
        points = scalars.get(f"{split}/{metric}") or []
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, style, marker="o", label=split)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")
    return ax.figure
