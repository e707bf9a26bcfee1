"""Where the course keeps its data and what it produces.

One place, so that a learner who wonders "where did my model go?" finds the
answer here. Two environment variables move things:

- ``MNIST_DATA_DIR``: the folder with the four MNIST IDX files (default: the
  course's own copy in ``data/mnist``; inside the container image, ``/app/data/mnist``).
- ``MNIST_OUTPUT_DIR``: where checkpoints, TensorBoard logs and exported models go
  (default: ``outputs/`` at the top of the course; on a cluster, the shared volume).
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from mnist_lib.constants import OUTPUT_MOUNT

PACKAGE_DIR = Path(__file__).resolve().parent


def _find_course_root() -> Path:
    # In a checkout the package sits next to data/; when installed elsewhere
    # (a container, site-packages) fall back to the working directory.
    if (PACKAGE_DIR.parent / "data" / "mnist").is_dir():
        return PACKAGE_DIR.parent
    return Path.cwd()


COURSE_ROOT = _find_course_root()


def data_dir() -> Path:
    """The folder holding the MNIST IDX files."""
    return Path(os.environ.get("MNIST_DATA_DIR", COURSE_ROOT / "data" / "mnist"))


def digits_dir() -> Path:
    """The folder with one example PNG per digit (``0.png`` ... ``9.png``)."""
    return COURSE_ROOT / "data" / "digits"


def output_dir() -> Path:
    """The folder under which every run writes its checkpoints, logs and exports."""
    return Path(os.environ.get("MNIST_OUTPUT_DIR", COURSE_ROOT / "outputs"))


def on_this_machine(volume_path: str | PurePosixPath) -> Path:
    """Where this notebook keeps its copy of ``/outputs/...``: the same path under :func:`output_dir`.

    Locally the two are the same files (the local backend mounts ``output_dir()`` as
    ``/outputs``); on a cluster ``output_dir()`` holds what the backend brought over.
    """
    return output_dir() / volume_relative(volume_path)


def on_volume(path: str | Path) -> str:
    """``/outputs/<run>/...`` for a path under :func:`output_dir` (or already under ``/outputs``)."""
    text = str(path)
    if PurePosixPath(text).is_relative_to(OUTPUT_MOUNT):
        return str(PurePosixPath(text))
    local = Path(path).expanduser().resolve()
    root = output_dir().resolve()
    if not local.is_relative_to(root):
        raise ValueError(f"{text!r} is neither under {OUTPUT_MOUNT} nor under the output folder {str(root)!r}")
    inside = local.relative_to(root).as_posix()
    return OUTPUT_MOUNT if inside == "." else f"{OUTPUT_MOUNT}/{inside}"


def volume_relative(volume_path: str | PurePosixPath) -> str:
    """``/outputs/a/b`` -> ``a/b`` (``.`` for the volume itself); refuses paths off the volume."""
    posix = PurePosixPath(str(volume_path))
    if not posix.is_absolute() or not posix.is_relative_to(OUTPUT_MOUNT) or ".." in posix.parts:
        raise ValueError(f"{str(volume_path)!r} is not a path on the shared volume ({OUTPUT_MOUNT}/...)")
    return posix.relative_to(OUTPUT_MOUNT).as_posix()


def relative(path: Path | str) -> str:
    """``path`` relative to the course folder when it is inside it (for stable printouts)."""
    path = Path(path).resolve()
    return str(path.relative_to(COURSE_ROOT)) if path.is_relative_to(COURSE_ROOT) else str(path)


def write_json(path: Path | str, value: object, indent: int = 2) -> Path:
    """Write JSON atomically (a temporary file, then a rename).

    Runs, sweeps and backends read these files while they are being rewritten:
    a reader sees the old content or the new, never half of it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=indent) + "\n")
    tmp.replace(path)
    return path
