"""Notebook setup shared by every chapter: ``from mnist_lib.course import setup; setup()``.

Like fastai's ``setup_book()``: the first code cell of each chapter calls it, so
seeds, log levels and plot defaults live here and not in every notebook.
"""

from __future__ import annotations

import os
import sys

SEED = 42


def setup(seed: int = SEED) -> None:
    """Check the Python version, quiet TensorFlow's C++ logs, seed, set plot defaults."""
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError(
            f"This course is pinned to Python 3.11, but this kernel runs {sys.version.split()[0]}. "
            "Start JupyterLab with `make course`, which uses the course's .venv."
        )
    # Must be set before TensorFlow is imported to have any effect.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 80, "figure.figsize": (6, 4), "axes.grid": False})
    except ImportError:  # plots are optional for command-line use
        pass
