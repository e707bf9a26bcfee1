"""Notebook setup shared by every chapter: ``from mnist_lib.course import setup; setup()``.

Like fastai's ``setup_book()``: the first code cell of each chapter calls it, so
seeds, log levels and plot defaults live here and not in every notebook.
"""

from __future__ import annotations

import inspect
import os
import random
import sys
from importlib import metadata

import numpy as np

from mnist_lib import data, paths

SEED = 42


def setup(seed: int = SEED, tensorflow: bool = True) -> None:
    """Check the Python version, import TensorFlow quietly, seed, set plot defaults.

    ``tensorflow=False`` skips the TensorFlow import (about 3 seconds) for chapters
    that only talk to servers.
    """
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError(
            f"This course is pinned to Python 3.11, but this kernel runs {sys.version.split()[0]}. "
            "Start JupyterLab with `make course`, which uses the course's .venv."
        )
    # Must be set before TensorFlow is imported to have any effect.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    random.seed(seed)
    np.random.seed(seed)
    if tensorflow:
        _import_tensorflow_quietly()
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 80, "figure.figsize": (6, 4), "axes.grid": False})
    except ImportError:  # plots are optional for command-line use
        pass


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow once with its C++ start-up chatter silenced.

    On import, TensorFlow's C++ runtime writes oneDNN/CUDA notices straight to the
    process's stderr (file descriptor 2), whatever TF_CPP_MIN_LOG_LEVEL says; in a
    notebook they land in whichever cell imports it first. Real errors still raise.
    """
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
            tf.constant(0)  # the first op initialises devices, which logs too
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# -- chapter 00: is this machine ready? -------------------------------------------

# The packages chapter 00 checks; their versions are read from requirements.txt,
# the one place the course pins them.
CHECKED_PACKAGES = ("tensorflow", "keras", "tensorboard", "tensorflow-serving-api", "kubernetes",
                    "jupyterlab", "ipywidgets", "matplotlib", "numpy")


def pinned_versions() -> dict[str, str]:
    """``{package: version}`` for the ``name==version`` lines of requirements.txt."""
    pins = {}
    for line in (paths.COURSE_ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


def check_environment() -> list[tuple[str, bool, str]]:
    """Check versions, data and the backend; return ``[(what, ok, detail or fix)]``.

    Reads package metadata only: importing TensorFlow here would cost seconds.
    """
    checks: list[tuple[str, bool, str]] = []
    python = ".".join(map(str, sys.version_info[:2]))
    checks.append(("python", sys.version_info[:2] == (3, 11),
                   python if sys.version_info[:2] == (3, 11) else
                   f"{python}: the course needs 3.11; start JupyterLab with `make course`"))
    pins = pinned_versions()
    for package in CHECKED_PACKAGES:
        wanted = pins[package]
        try:
            found = metadata.version(package)
        except metadata.PackageNotFoundError:
            checks.append((package, False, "not installed: run `make course` (it installs the pinned set)"))
            continue
        checks.append((package, found == wanted, found if found == wanted else
                       f"{found} installed, the course is tested with {wanted}: run `make setup`"))
    try:
        data.verify_mnist()
        checks.append(("MNIST data", True,
                       f"4 files, SHA-256 verified, in {paths.relative(paths.data_dir())}"))
    except data.MnistDataError as err:
        checks.append(("MNIST data", False, str(err)))
    return checks


def print_checks(checks: list[tuple[str, bool, str]]) -> bool:
    """Print checks as a table; return True when all passed."""
    for what, ok, detail in checks:
        print(f"{'ok ' if ok else 'FIX'}  {what:<24} {detail}")
    return all(ok for _, ok, _ in checks)


def show_source(obj) -> "object":
    """Show the source of a library function in a notebook, highlighted (d2l's habit:
    the chapter that teaches a piece of code shows it; later chapters just call it)."""
    from IPython.display import Markdown

    return Markdown(f"```python\n{inspect.getsource(obj).rstrip()}\n```")


def show_file(path: str, language: str = "") -> "object":
    """Show a file of the course (e.g. the Dockerfile) in a notebook, highlighted."""
    from IPython.display import Markdown

    text = (paths.COURSE_ROOT / path).read_text().rstrip()
    return Markdown(f"`{path}`\n```{language}\n{text}\n```")
