"""Shared by the serving tests: tiny real models exported the course's way.

(A helper module rather than conftest.py, which belongs to the whole suite.)
"""

from __future__ import annotations

from pathlib import Path

import keras
import pytest


def tiny_model(seed: int) -> keras.Model:
    """An untrained 8-unit MLP: real weights, milliseconds to build; seeds give different answers."""
    from mnist_lib.model import build_model

    keras.utils.set_random_seed(seed)
    return build_model("mlp", hidden_layers=1, width=8)


def export_tiny(export_dir: Path, seed: int = 1, version: int | None = None) -> Path:
    """Export a tiny model with the course's exporter; return ``<export_dir>/mnist/<version>``."""
    from mnist_lib.model import export_for_serving

    return export_for_serving(tiny_model(seed), export_dir, "mnist", version)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """Two versions of a tiny model with different weights (import it to use it)."""
    root = tmp_path_factory.mktemp("export")
    export_tiny(root, seed=1, version=1)
    export_tiny(root, seed=2, version=2)
    return root
