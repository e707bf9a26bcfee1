"""Figures the chapters show: sample digits, training curves, confusion matrix, mistakes.

Each function draws with matplotlib and returns the Figure, *closed*: end a notebook
cell with the call (no semicolon) and Jupyter shows it exactly once. (Left open,
pyplot would also show it on its own at the end of the cell, and nbval, which
checks the notebooks, would see it twice.) Tests can inspect the returned Figure.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from mnist_lib.constants import NUM_CLASSES
from mnist_lib.sweep_spec import TrialStatus


def _finish(fig: Figure) -> Figure:
    fig.tight_layout()
    plt.close(fig)
    return fig


def show_digits(images: np.ndarray, labels: Sequence[int], predictions: Sequence[int] | None = None,
                columns: int = 10, title: str | None = None) -> Figure:
    """A grid of digits with their label (and prediction: red when it is wrong)."""
    count = len(images)
    rows = max(1, int(np.ceil(count / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 1.1), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=images[i].max() or 1)
        text, colour = f"{labels[i]}", "black"
        if predictions is not None:
            text = f"{labels[i]} → {predictions[i]}"
            colour = "black" if predictions[i] == labels[i] else "crimson"
        ax.set_title(text, fontsize=9, color=colour)
    if title:
        fig.suptitle(title)
    return _finish(fig)


def plot_history(histories: Mapping[str, Sequence[Mapping[str, float]]] | Sequence[Mapping[str, float]],
                 metrics: Sequence[str] = ("accuracy", "loss")) -> Figure:
    """Training and validation curves per epoch, one panel per metric.

    ``histories`` is one run's ``history.json`` (a list of per-epoch dicts) or
    ``{run name: history}`` to compare runs side by side.
    """
    if not isinstance(histories, Mapping):
        histories = {"": histories}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics):
        for (name, history), colour in zip(histories.items(), colours * 4):
            epochs = [h["epoch"] for h in history]
            label = f"{name} " if name else ""
            ax.plot(epochs, [h[metric] for h in history], "--", color=colour, label=f"{label}train")
            ax.plot(epochs, [h[f"val_{metric}"] for h in history], "-o", color=colour,
                    label=f"{label}validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    return _finish(fig)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts: row = true digit, column = predicted digit."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def plot_confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> Figure:
    """The confusion matrix as a heat map. The diagonal is right; the rest are mistakes."""
    matrix = confusion_matrix(labels, predictions)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    # Log colour scale: otherwise the diagonal (~1,000 each) hides every mistake (~1-10).
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                    color="white" if row == col else "black")
    ax.set_xticks(range(NUM_CLASSES))
    ax.set_yticks(range(NUM_CLASSES))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    return _finish(fig)


def show_mistakes(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                  count: int = 20) -> Figure:
    """The first ``count`` misclassified images, titled ``true → predicted``."""
    wrong = np.flatnonzero(np.asarray(labels) != np.asarray(predictions))[:count]
    return show_digits(images[wrong], labels[wrong], predictions[wrong],
                       title=f"{len(wrong)} of the mistakes (true → predicted)")


def plot_probabilities(image: np.ndarray, probabilities: Sequence[float], title: str = "") -> Figure:
    """An image next to the bar chart of the model's probability for each digit."""
    probabilities = np.asarray(probabilities)
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 2.8), gridspec_kw={"width_ratios": [1, 2]})
    left.imshow(image, cmap="gray")
    left.axis("off")
    left.set_title(title or f"predicted {int(np.argmax(probabilities))}")
    bars = right.bar(range(NUM_CLASSES), probabilities, color="lightgray")
    bars[int(np.argmax(probabilities))].set_color("tab:blue")
    right.set_xticks(range(NUM_CLASSES))
    right.set_ylim(0, 1)
    right.set_ylabel("probability")
    return _finish(fig)


# == Chapter 07: hyperparameter sweeps ===========================================
# (sweep plots: mnist_lib.sweep / mnist_lib.widgets call these)
#
# These build a bare ``Figure`` instead of going through pyplot: the widget redraws
# them from a background thread while trials run, and pyplot is not thread-safe
# (it also keeps every figure it made until it is closed). Jupyter shows a bare
# Figure like any other.

_STATUS_STYLE = {TrialStatus.SUCCEEDED: "-o", TrialStatus.RUNNING: "-o", TrialStatus.EARLY_STOPPED: ":x",
                 TrialStatus.FAILED: ":x", TrialStatus.STOPPED: ":x"}


def plot_sweep_curves(trials: Sequence, title: str = "Validation accuracy per epoch") -> Figure:
    """Validation accuracy per epoch, one line per trial, legend by parameters.

    ``trials`` are :class:`mnist_lib.sweep.Trial` objects (anything with ``label``,
    ``status`` and ``curve``). Dotted lines: trials stopped early or failed; the best
    succeeded trial is drawn thick.
    """
    fig = Figure(figsize=(7, 4), dpi=80)
    ax = fig.add_subplot()
    finished = [t for t in trials if t.status == TrialStatus.SUCCEEDED and t.curve]
    best = max(finished, key=lambda t: t.curve[-1][1]) if finished else None
    for trial in trials:
        if not trial.curve:
            continue
        steps, values = zip(*trial.curve)
        label = f"{trial.label} ({trial.status})" if trial.status != TrialStatus.SUCCEEDED else trial.label
        ax.plot(steps, values, _STATUS_STYLE.get(trial.status, "-o"), label=label,
                linewidth=3 if trial is best else 1.5, markersize=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title + (f" (best: {best.label})" if best else ""), fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if any(t.curve for t in trials):
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.text(0.5, 0.5, "waiting for the first epoch...", ha="center", va="center",
                transform=ax.transAxes, color="grey")
        ax.set_ylim(0, 1)
    return _finish(fig)


def plot_sweep_summary(result) -> Figure:
    """Final validation accuracy against learning rate and layers; the best trial marked.

    Left: accuracy against learning rate (log scale), one colour per number of
    layers. Right: for a grid, a heat map learning rate x layers; otherwise the
    points tried, coloured by accuracy. ``result`` is a :class:`mnist_lib.sweep.SweepResult`.
    """
    from matplotlib.patches import Rectangle

    trials = [t for t in result.trials if t.curve]
    done = [t for t in trials if t.status == TrialStatus.SUCCEEDED]
    best = max(done, key=lambda t: t.curve[-1][1]) if done else None
    fig = Figure(figsize=(10, 4), dpi=80)
    left, right = fig.subplots(1, 2)

    layer_values = sorted({t.params["hidden_layers"] for t in result.trials})
    colours = {n: f"C{i}" for i, n in enumerate(layer_values)}
    for n in layer_values:
        group = sorted((t for t in trials if t.params["hidden_layers"] == n),
                       key=lambda t: t.params["learning_rate"])
        if group:
            left.plot([t.params["learning_rate"] for t in group], [t.curve[-1][1] for t in group],
                      "-o", color=colours[n], label=f"{n} layer{'s' if n != 1 else ''}")
            stopped = [t for t in group if t.status != TrialStatus.SUCCEEDED]  # their last epoch, not a final value
            left.plot([t.params["learning_rate"] for t in stopped], [t.curve[-1][1] for t in stopped],
                      "X", color=colours[n], markersize=10, markeredgecolor="black")
    if best:
        left.plot(best.params["learning_rate"], best.curve[-1][1], "*", markersize=18, color="gold",
                  markeredgecolor="black", label=f"best: {best.label}")
    left.set_xscale("log")
    left.set_xlabel("learning rate (log scale)")
    left.set_ylabel("final validation accuracy")
    left.set_title("Accuracy against learning rate (X: stopped early)", fontsize=10)
    left.legend(fontsize=7)

    rates = sorted({t.params["learning_rate"] for t in result.trials})
    if result.search == "grid" and rates and layer_values:
        grid = np.full((len(layer_values), len(rates)), np.nan)
        notes = {}
        for t in trials:
            cell = layer_values.index(t.params["hidden_layers"]), rates.index(t.params["learning_rate"])
            grid[cell] = t.curve[-1][1]
            if t.status != TrialStatus.SUCCEEDED:
                notes[cell] = f"\n{'failed' if t.status == TrialStatus.FAILED else 'stopped'} at epoch {t.curve[-1][0]}"
        image = right.imshow(grid, cmap="viridis", vmin=np.nanmin(grid) if done else 0, vmax=1,
                             aspect="auto", origin="lower")
        for (row, col), value in np.ndenumerate(grid):
            if not np.isnan(value):
                right.text(col, row, f"{value:.3f}{notes.get((row, col), '')}", ha="center", va="center",
                           fontsize=7,
                           color="white" if value < np.nanmean(grid) else "black")
        if best:
            row = layer_values.index(best.params["hidden_layers"])
            col = rates.index(best.params["learning_rate"])
            right.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="gold",
                                      linewidth=3))
        right.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
        right.set_yticks(range(len(layer_values)), [str(n) for n in layer_values])
        right.set_title("Final validation accuracy (grid; empty: no result)", fontsize=10)
    else:
        image = right.scatter([t.params["learning_rate"] for t in trials],
                              [t.params["hidden_layers"] for t in trials],
                              c=[t.curve[-1][1] for t in trials], cmap="viridis", s=80, vmax=1)
        if best:
            right.plot(best.params["learning_rate"], best.params["hidden_layers"], "*", markersize=18,
                       color="gold", markeredgecolor="black")
        right.set_xscale("log")
        right.yaxis.get_major_locator().set_params(integer=True)
        right.set_title("Points tried, coloured by final validation accuracy", fontsize=10)
    right.set_xlabel("learning rate")
    right.set_ylabel("hidden layers")
    fig.colorbar(image, ax=right, label="validation accuracy")
    return _finish(fig)
