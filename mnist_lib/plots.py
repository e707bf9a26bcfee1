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


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = 10) -> np.ndarray:
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
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
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
    bars = right.bar(range(10), probabilities, color="lightgray")
    bars[int(np.argmax(probabilities))].set_color("tab:blue")
    right.set_xticks(range(10))
    right.set_ylim(0, 1)
    right.set_ylabel("probability")
    return _finish(fig)
