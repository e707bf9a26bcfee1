"""Chapter helpers: the environment check, plots, the headless course runner."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from mnist_lib import course, plots, run_course


def test_environment_check_passes_here():
    checks = course.check_environment()
    failing = [c for c in checks if not c[1]]
    assert not failing, failing
    assert {"python", "tensorflow", "MNIST data"} <= {what for what, _, _ in checks}


def test_environment_check_names_the_fix_for_damaged_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path))  # an empty folder
    checks = dict((what, (ok, detail)) for what, ok, detail in course.check_environment())
    ok, detail = checks["MNIST data"]
    assert not ok and "is missing" in detail and "git checkout -- data/mnist" in detail


def test_confusion_matrix_counts():
    matrix = plots.confusion_matrix(np.array([1, 1, 2, 3]), np.array([1, 2, 2, 3]))
    assert matrix[1, 1] == 1 and matrix[1, 2] == 1 and matrix[2, 2] == 1 and matrix.sum() == 4


def test_figures_are_returned_closed_so_notebooks_show_them_once():
    history = [{"epoch": e, "loss": 1 / e, "accuracy": 1 - 1 / (e + 1), "val_loss": 1.1 / e,
                "val_accuracy": 1 - 1.1 / (e + 2)} for e in (1, 2, 3)]
    figures = [
        plots.show_digits(np.zeros((12, 28, 28)), list(range(12)), list(range(12))),
        plots.plot_history({"a": history, "b": history}),
        plots.plot_confusion_matrix(np.arange(10), np.arange(10)),
        plots.show_mistakes(np.zeros((3, 28, 28)), np.array([1, 2, 3]), np.array([1, 0, 3])),
        plots.plot_probabilities(np.zeros((28, 28)), np.full(10, 0.1)),
    ]
    assert not plt.get_fignums()
    curves = figures[1].axes[0].get_lines()
    assert len(curves) == 4  # two runs, train and validation each
    mistakes = [ax.get_title() for ax in figures[3].axes if ax.get_title()]
    assert mistakes == ["2 → 0"]


def test_course_lists_chapters_in_order():
    names = [p.name for p in run_course.notebooks()]
    assert names[:2] == ["00_setup.ipynb", "01_train_locally.ipynb"]
    assert names == sorted(names)


def test_run_course_executes_chapters_headless_and_summarises(tmp_path):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mnist_lib.run_course", "00"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MNIST_OUTPUT_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "00_setup.ipynb" in done.stdout and "1 of 1 chapters ran" in done.stdout
    assert (tmp_path / "executed" / "00_setup.ipynb").is_file()
