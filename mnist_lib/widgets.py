"""Sliders for a hyperparameter sweep, and a plot that updates while trials run.

:class:`SweepWidget` is a small control panel over :class:`mnist_lib.sweep.Sweep`:
choose the ranges with sliders, press Launch, watch every trial's validation
accuracy grow epoch by epoch, press Stop at any time. Everything it does is a
plain function call underneath (``Sweep(...).start()``), so a notebook or a test
can do the same without clicking.

:class:`LivePlot` is just the plot: give its :meth:`LivePlot.update` to
``Sweep.run(on_update=...)``. It is an ``ipywidgets.Image`` redrawn from a PNG, which
works from the sweep's background thread (a matplotlib figure shown with pyplot
would not) and keeps the notebook small.
"""

from __future__ import annotations

import dataclasses
import io
import threading
from typing import Any

import ipywidgets as w

from mnist_lib import plots
from mnist_lib.cluster.base import Backend
from mnist_lib.config import MAX_HIDDEN_LAYERS
from mnist_lib.sweep import Sweep, SweepResult, TrialStatus
from mnist_lib.sweep_spec import MAX_PARALLEL, MedianStop, SearchSpace, SweepError, SweepSpec

LIVE_PLOT_CLASS = "sweep-live-plot"      # CSS classes: the browser test finds the widgets by them
CONTROLS_CLASS = "sweep-controls"
_BAR_STYLE = {TrialStatus.RUNNING: "info", TrialStatus.SUCCEEDED: "success", TrialStatus.FAILED: "danger",
              TrialStatus.EARLY_STOPPED: "warning", TrialStatus.STOPPED: "warning"}
# Where the sliders start: a small space of one-pod trials (chapter 07 runs them on the local backend).
_START = {"space": SearchSpace(learning_rate=(1e-4, 1e-2), hidden_layers=(1, 2), epochs=2),
          "job_kind": "Job", "workers": 1}
_START_MAX_TRIALS = 6


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


class LivePlot:
    """Validation accuracy per epoch of every trial, redrawn when a sweep reports progress."""

    def __init__(self) -> None:
        self.image = w.Image(format="png", layout=w.Layout(max_width="720px"))
        self.image.add_class(LIVE_PLOT_CLASS)
        self.redraws = 0
        self._last: Any = None
        self.update_trials([])

    def update(self, sweep: Sweep) -> None:
        """Give this to ``Sweep.run(on_update=...)`` or ``Sweep.start(on_update=...)``."""
        self.update_trials(sweep.result().trials)

    def update_trials(self, trials: list) -> None:
        # Redraw only when a curve or a status changed: drawing costs ~0.1 s of a busy CPU.
        state = [(t.name, t.status, tuple(t.curve)) for t in trials]
        if state == self._last:
            return
        self._last = state
        self.image.value = figure_png(plots.plot_sweep_curves(trials))
        self.redraws += 1

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return _with_text(self.image, "LivePlot: validation accuracy per epoch of every trial")


class SweepWidget:
    """Sliders, Launch and Stop, a progress bar per trial, a live plot and a summary.

    ``spec_fields`` are those of :class:`SweepSpec` (``fixed``, ``job_kind``, ``workers``,
    ``space``, ``parallel``...): the sweep the sliders start from, by default a small
    space of one-pod Job trials. Every :class:`Sweep` it launches is that spec with the
    sliders' values, run on ``backend`` (polled every ``poll_interval`` seconds).
    """

    def __init__(self, name: str = "ch07-widget", *, backend: Backend | None = None,
                 poll_interval: float = 1.0, **spec_fields: Any) -> None:
        self.spec = SweepSpec(name, **{**_START, **spec_fields})
        self.backend, self.poll_interval = backend, poll_interval
        self.sweep: Sweep | None = None
        space = self.spec.space
        style = {"description_width": "150px"}
        wide = w.Layout(width="480px")
        self.lr_min = w.FloatLogSlider(value=space.learning_rate[0], base=10, min=-5, max=0, step=0.25,
                                       description="learning rate from", style=style, layout=wide,
                                       readout_format=".1e")
        self.lr_max = w.FloatLogSlider(value=space.learning_rate[1], base=10, min=-5, max=0, step=0.25,
                                       description="learning rate to", style=style, layout=wide,
                                       readout_format=".1e")
        self.lr_values = w.IntSlider(value=space.learning_rate_values, min=1, max=6,
                                     description="learning rates (grid)", style=style, layout=wide)
        self.layers = w.IntRangeSlider(value=space.hidden_layers, min=0, max=MAX_HIDDEN_LAYERS,
                                       description="hidden layers", style=style, layout=wide)
        self.epochs = w.IntSlider(value=space.epochs, min=1, max=10, description="epochs",
                                  style=style, layout=wide)
        self.parallel = w.IntSlider(value=self.spec.parallel, min=1, max=min(8, MAX_PARALLEL),
                                    description="parallel trials", style=style, layout=wide)
        self.max_trials = w.IntSlider(value=self.spec.max_trials or _START_MAX_TRIALS, min=1, max=30,
                                      description="trials (random)", style=style, layout=wide)
        self.search = w.ToggleButtons(options=["grid", "random"], value=self.spec.search, description="search",
                                      style=style)
        self.early_stopping = w.Checkbox(value=self.spec.early_stopping is not None,
                                         description="median-stop early stopping", indent=False)
        self.launch_button = w.Button(description="Launch", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.launch_button.on_click(self.launch)
        self.stop_button.on_click(self.stop)
        self.status = w.HTML("Choose a search space and press <b>Launch</b>.")
        self.progress = w.VBox()
        self.live = LivePlot()
        self.summary = w.Image(format="png", layout=w.Layout(max_width="900px", display="none"))
        controls = w.VBox([self.lr_min, self.lr_max, self.lr_values, self.layers, self.epochs,
                           self.parallel, self.max_trials, self.search, self.early_stopping,
                           w.HBox([self.launch_button, self.stop_button])])
        controls.add_class(CONTROLS_CLASS)
        self.ui = w.VBox([controls, self.status, self.progress, self.live.image, self.summary])
        self._bars: dict[str, tuple[w.IntProgress, w.Label]] = {}
        self._finished = threading.Event()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return _with_text(self.ui, f"SweepWidget {self.spec.name!r}: sliders, Launch and Stop, "
                                   "progress per trial, live plot")

    # -- from sliders to a sweep -----------------------------------------------------
    def make_spec(self) -> SweepSpec:
        """The :class:`SweepSpec` the sliders describe (raises :class:`SweepError` if they make no sense)."""
        if self.lr_min.value > self.lr_max.value:
            raise SweepError(f"the learning rate range is upside down: from {self.lr_min.value:.1e} "
                             f"to {self.lr_max.value:.1e}; move 'from' below 'to'")
        space = SearchSpace(learning_rate=(self.lr_min.value, self.lr_max.value),
                            hidden_layers=tuple(self.layers.value), epochs=self.epochs.value,
                            learning_rate_values=self.lr_values.value)
        random_search = self.search.value == "random"
        rule = (self.spec.early_stopping or MedianStop()) if self.early_stopping.value else None
        return dataclasses.replace(self.spec, space=space, search=self.search.value,
                                   max_trials=self.max_trials.value if random_search else None,
                                   parallel=self.parallel.value, early_stopping=rule)

    def make_sweep(self) -> Sweep:
        """The :class:`Sweep` the sliders describe, ready to run on the widget's backend."""
        return Sweep(self.make_spec(), backend=self.backend, poll_interval=self.poll_interval)

    # -- buttons ---------------------------------------------------------------------
    def launch(self, _button: Any = None) -> Sweep | None:
        """Launch a sweep in the background; an invalid choice is shown, nothing is submitted."""
        if self.sweep is not None and self.sweep.running:
            self.status.value = "A sweep is already running: press <b>Stop</b> first."
            return None
        try:
            sweep = self.make_sweep()
        except SweepError as err:
            self.status.value = f"<span style='color:crimson'>Not launched: {_escape(str(err))}</span>"
            return None
        self.sweep = sweep
        self._finished.clear()
        self._bars = {}
        rows = []
        for trial in sweep.trials:
            bar = w.IntProgress(value=0, min=0, max=trial.params["epochs"], description=trial.label,
                                style={"description_width": "170px"}, layout=w.Layout(width="420px"))
            label = w.Label(TrialStatus.PENDING)
            self._bars[trial.name] = (bar, label)
            rows.append(w.HBox([bar, label]))
        self.progress.children = rows
        self.summary.layout.display = "none"
        self.launch_button.disabled, self.stop_button.disabled = True, False
        self.status.value = f"Running <b>{sweep.name}</b>: {len(sweep.trials)} trials, " \
                            f"{sweep.spec.parallel} at a time ({sweep.spec.job_kind})."
        sweep.start(on_update=self.refresh)
        return sweep

    def stop(self, _button: Any = None) -> None:
        """Stop every trial of the running sweep (their processes or pods are deleted)."""
        if self.sweep is not None:
            self.status.value = "Stopping every trial..."
            self.sweep.stop()

    def wait(self, timeout: float | None = None) -> SweepResult:
        """Block until the launched sweep is over and the summary drawn (for tests and scripts)."""
        if self.sweep is None:
            raise SweepError("nothing launched yet: press Launch (or call launch())")
        result = self.sweep.wait(timeout)
        if not self._finished.wait(30):
            raise TimeoutError("the sweep ended but its summary was not drawn")
        return result

    # -- progress ------------------------------------------------------------------------
    def refresh(self, sweep: Sweep) -> None:
        """Called by the sweep after each look at its trials (from its thread)."""
        result = sweep.result()
        for trial in result.trials:
            bar, label = self._bars.get(trial.name, (None, None))
            if bar is None:
                continue
            bar.value = min(trial.epochs_done, bar.max)
            bar.bar_style = _BAR_STYLE.get(trial.status, "")
            accuracy = f", val acc {trial.val_accuracy:.3f}" if trial.val_accuracy is not None else ""
            label.value = f"{trial.status}: epoch {trial.epochs_done}/{bar.max}{accuracy}"
        self.live.update_trials(result.trials)
        if result.finished is not None:
            self._show_summary(result)

    def _show_summary(self, result: SweepResult) -> None:
        counts = ", ".join(f"{n} {status}" for status, n in result.by_status().items())
        try:
            best = result.best()
            best_text = f"Best: <b>{best.label}</b>, validation accuracy {best.val_accuracy:.3f}."
        except SweepError:
            best_text = "No trial succeeded."
        self.status.value = f"Done in {result.wall_seconds:.0f} s: {counts}. {best_text}"
        if any(t.curve for t in result.trials):
            self.summary.value = figure_png(plots.plot_sweep_summary(result))
            self.summary.layout.display = None
        self.launch_button.disabled, self.stop_button.disabled = False, True
        self._finished.set()


def _with_text(widget: w.DOMWidget, text: str) -> dict[str, Any]:
    """The widget's display data with a short plain-text stand-in.

    Where widgets do not render (a terminal, a stored notebook read as text),
    ipywidgets would print the whole widget tree, PNG bytes included.
    """
    bundle = dict(widget._repr_mimebundle_())
    bundle["text/plain"] = text
    return bundle


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
