"""TensorBoard: read a run's metrics back from its event files (and, later, serve them).

Keras 3 and ``tf.summary`` store scalars as *tensor* summaries, so TensorBoard's
``EventAccumulator.Scalars()`` finds nothing; ``Tensors()`` does (facts the
course measured on TensorFlow 2.21).
"""

from __future__ import annotations

from pathlib import Path


def read_scalars(log_dir: Path | str) -> dict[str, list[tuple[int, float]]]:
    """All scalars under a run's log folder: ``{"validation/epoch_accuracy": [(step, value), ...]}``.

    Keys are ``<subfolder>/<tag>`` (``train/...``, ``validation/...``), steps are
    epochs (1, 2, ...). Safe to call while the run is still writing: it reads what
    is on disk now. A folder with no events yet gives ``{}``.
    """
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
    from tensorflow import make_ndarray

    log_dir = Path(log_dir)
    scalars: dict[str, list[tuple[int, float]]] = {}
    if not log_dir.is_dir():
        return scalars
    for run_dir in sorted({p.parent for p in log_dir.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(run_dir), size_guidance={TENSORS: 0})
        events.Reload()
        prefix = run_dir.relative_to(log_dir).as_posix()
        for tag in events.Tags().get("tensors", []):
            points = {e.step: float(make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
            # A resumed run may write an epoch twice: keep the latest value per step.
            key = f"{prefix}/{tag}" if prefix != "." else tag
            scalars[key] = sorted(points.items())
    return scalars
