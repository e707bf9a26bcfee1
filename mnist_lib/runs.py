"""What a run writes, defined once, and how to read it back or write it, through any backend.

Every run has its own folder on the shared volume, ``/outputs/<run-name>/``::

    checkpoints/           TensorFlow checkpoints, one per epoch (a restart resumes from the latest)
    checkpoints/history.json   one object per finished epoch (loss, accuracy, val_*, seconds)
    checkpoints/result.json    written at the end: test accuracy, export path, config, timings
    logs/train/, logs/validation/   TensorBoard event files (epoch_loss, epoch_accuracy)
    export/<model>/<version>/       the SavedModel for TF Serving

and ``/outputs/serving/<model>/<version>/`` is what the model server serves
(chapter 06 puts version 1 there, chapter 07 promotes the best trial into it).

Pods see the volume at ``/outputs``. This notebook sees its own output folder
(``MNIST_OUTPUT_DIR``, default ``outputs/``): on the local backend it *is* the volume;
on a cluster it holds copies the backend brings over (:meth:`Backend.pull`, changed
files only). So every reader here pulls first, then reads a local file, and the
same cell works on a laptop, on a shared cluster and in a workshop room.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from mnist_lib import cluster, paths  # (a module import: cluster's backends import this module)
from mnist_lib.cluster import volume_agent
from mnist_lib.constants import MODEL_NAME, OUTPUT_MOUNT

CHECKPOINTS, LOGS, EXPORT = "checkpoints", "logs", "export"
HISTORY_FILE, RESULT_FILE = "history.json", "result.json"
SERVING = "serving"


# -- the layout -----------------------------------------------------------------------

def run_dir(run: str, root: Path | str | None = None) -> Path:
    """``<root>/<run>``; ``root`` defaults to this machine's output folder (``/outputs`` for pods)."""
    return Path(root if root is not None else paths.output_dir()) / run


def folders(run: str, root: Path | str | None = None) -> dict[str, Path]:
    """The three folders a run is given: ``{"model_dir": ..., "log_dir": ..., "export_dir": ...}``."""
    base = run_dir(run, root)
    return {"model_dir": base / CHECKPOINTS, "log_dir": base / LOGS, "export_dir": base / EXPORT}


def on_volume(run: str, *parts: str) -> str:
    """``/outputs/<run>/<parts...>``: where pods find it."""
    return str(PurePosixPath(OUTPUT_MOUNT, run, *parts))


def serving_base(model_name: str = MODEL_NAME) -> str:
    """``/outputs/serving/<model>``: the model server's ``model_base_path``."""
    return on_volume(SERVING, model_name)


def version_numbers(base: Path | str) -> list[int]:
    """The numbered version folders of a model base on this machine, sorted: ``[1, 2]``."""
    return volume_agent.version_numbers(Path(base))  # the one rule, also run on the volume's side


def latest_version(base: Path | str) -> Path | None:
    """The highest version folder under ``base`` (what TF Serving serves by default), or None."""
    numbers = version_numbers(base)
    return Path(base) / str(numbers[-1]) if numbers else None


def load_json(path: Path | str) -> Any:
    """A JSON file of this machine, or None if there is none."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def load_history(model_dir: Path | str) -> list[dict[str, float]]:
    """``history.json`` in a folder of this machine (what training reads when it resumes); ``[]`` if none."""
    return load_json(Path(model_dir) / HISTORY_FILE) or []


def load_result(model_dir: Path | str) -> dict[str, Any] | None:
    """``result.json`` in a folder of this machine, or None."""
    return load_json(Path(model_dir) / RESULT_FILE)


# -- through a backend -----------------------------------------------------------------


def pull(*volume_paths: str, backend: cluster.BackendChoice = None) -> list[Path]:
    """Bring these ``/outputs/...`` paths here, in one transfer; those missing on the volume are left out."""
    return cluster.backend_for(backend).pull(*volume_paths, missing_ok=True)


def read_result(model_dir: Path | str, backend: cluster.BackendChoice = None) -> dict[str, Any] | None:
    """A finished run's ``result.json`` (``model_dir`` as a pod or this machine names it), or None."""
    local = pull(f"{paths.on_volume(model_dir)}/{RESULT_FILE}", backend=backend)
    return load_json(local[0]) if local else None  # (the pulled file itself, not its folder)


def read_history(model_dir: Path | str, backend: cluster.BackendChoice = None) -> list[dict[str, float]]:
    """The epochs a run has finished so far (``history.json``); ``[]`` before the first one."""
    local = pull(f"{paths.on_volume(model_dir)}/{HISTORY_FILE}", backend=backend)
    return (load_json(local[0]) or []) if local else []


def result(run: str, backend: cluster.BackendChoice = None) -> dict[str, Any] | None:
    """``result.json`` of run ``run``, or None if it has not finished."""
    return read_result(on_volume(run, CHECKPOINTS), backend)


def finished(run: str, backend: cluster.BackendChoice = None) -> bool:
    """Has ``run`` written its ``result.json``?"""
    return result(run, backend) is not None


def scalars(run: str, backend: cluster.BackendChoice = None) -> dict[str, list[tuple[int, float]]]:
    """``{"validation/epoch_accuracy": [(epoch, value), ...], ...}`` from run ``run``'s event files."""
    return scalars_of([run], backend)[run]


def scalars_of(runs: Iterable[str], backend: cluster.BackendChoice = None) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """:func:`scalars` of several runs, brought over in one transfer (a sweep's live plot)."""
    runs = list(runs)
    pull(*(on_volume(run, LOGS) for run in runs), backend=backend)
    return {run: read_scalars(run_dir(run) / LOGS) for run in runs}


def read_scalars(log_dir: Path | str) -> dict[str, list[tuple[int, float]]]:
    """All scalars under a log folder of this machine: ``{"validation/epoch_accuracy": [(step, value), ...]}``.

    Keys are ``<subfolder>/<tag>`` (``train/...``, ``validation/...``), steps are
    epochs (1, 2, ...). Safe to call while the run is still writing: it reads what
    is on disk now. A folder with no events yet gives ``{}``.
    """
    # Imported here: they load TensorFlow (seconds), which nothing else in this module needs.
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
    from tensorflow import make_ndarray

    log_dir = Path(log_dir)
    scalars: dict[str, list[tuple[int, float]]] = {}
    if not log_dir.is_dir():
        return scalars
    for events_dir in sorted({p.parent for p in log_dir.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(events_dir), size_guidance={TENSORS: 0})
        events.Reload()
        prefix = events_dir.relative_to(log_dir).as_posix()
        for tag in events.Tags().get("tensors", []):
            points = {e.step: float(make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
            # A resumed run may write an epoch twice: keep the latest value per step.
            key = f"{prefix}/{tag}" if prefix != "." else tag
            scalars[key] = sorted(points.items())
    return scalars


def local_copy(volume_path: str, backend: cluster.BackendChoice = None) -> Path:
    """This machine's copy of a file or folder on the volume, brought up to date (NotFoundError if none)."""
    return cluster.backend_for(backend).pull(volume_path)[0]


def versions(base: str, backend: cluster.BackendChoice = None) -> list[int]:
    """The version numbers under a model base on the volume, e.g. ``versions(serving_base())``."""
    local = pull(base, backend=backend)
    return version_numbers(local[0]) if local else []


def latest_export(run: str, model_name: str = MODEL_NAME, backend: cluster.BackendChoice = None) -> str | None:
    """``/outputs/<run>/export/<model>/<n>`` of the newest version a run exported, or None."""
    numbers = versions(on_volume(run, EXPORT, model_name), backend)
    return on_volume(run, EXPORT, model_name, str(numbers[-1])) if numbers else None


def clear(run: str, backend: cluster.BackendChoice = None) -> None:
    """Delete everything run ``run`` wrote, on the volume and here: the next run starts from scratch."""
    cluster.backend_for(backend).remove_outputs([on_volume(run)])  # (this machine's copy goes with it)


def publish(run: str, backend: cluster.BackendChoice = None) -> bool:
    """Put a run trained in this notebook (chapter 01) on the volume, if the volume lacks it.

    A run trained in this kernel lives in this machine's output folder; on a cluster
    the pods (TensorBoard, the model server) see only the volume. What pods use is
    copied: the logs, the export, ``history.json`` and, last, ``result.json`` (the mark
    of a finished run); the TensorFlow checkpoints stay here. True if copied.
    """
    backend = cluster.backend_for(backend)
    local = run_dir(run)
    if not (local / CHECKPOINTS / RESULT_FILE).is_file() or finished(run, backend):
        return False
    for part in (LOGS, EXPORT):
        if (local / part).is_dir():
            backend.put(local / part, on_volume(run, part))
    with tempfile.TemporaryDirectory() as tmp:
        for name in (HISTORY_FILE, RESULT_FILE):
            if (local / CHECKPOINTS / name).is_file():
                shutil.copy2(local / CHECKPOINTS / name, Path(tmp) / name)
        backend.put(Path(tmp), on_volume(run, CHECKPOINTS))
    return True


def put_version(source: Path | str, base: str, version: int | None = None, backend: cluster.BackendChoice = None) -> str:
    """Copy a SavedModel to the model base ``base`` on the volume; return its version folder there.

    ``source``: a folder of this machine, or a folder on the volume (``/outputs/...``,
    copied on the volume itself). ``version``: the number to give it, replacing that
    version if it exists; default: one more than the highest there (a promotion).
    Either way it is staged and renamed into place, so a server watching ``base``
    never loads half a model.
    """
    backend = cluster.backend_for(backend)
    on_the_volume = PurePosixPath(str(source)).is_relative_to(OUTPUT_MOUNT) and \
        not Path(source).resolve().is_relative_to(paths.output_dir().resolve())
    if on_the_volume:
        if version is not None:
            raise ValueError("put_version: a version number is only for a folder of this machine")
        return backend.copy_version(str(source), base)
    if not (Path(source) / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{source} is not a SavedModel (no saved_model.pb)")
    if version is None:
        return backend.put(Path(source), base, version=True)
    return backend.put(Path(source), f"{base}/{version}")
