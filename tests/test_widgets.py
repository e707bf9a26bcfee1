"""The sweep widget, driven as a learner would: set the sliders, press Launch, watch the plot."""

from __future__ import annotations

import time

import psutil
import pytest

from mnist_lib.cluster.local import LocalBackend
from mnist_lib.sweep import TrialStatus
from mnist_lib.widgets import LIVE_PLOT_CLASS, SweepWidget

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def backend(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_OUTPUT_DIR", str(tmp_path / "outputs"))
    b = LocalBackend(state_dir=tmp_path / "state")
    yield b
    b.shutdown()
    me = psutil.Process()
    assert not [p for p in me.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_sliders_launch_a_sweep_and_the_plot_follows_it(backend):
    widget = SweepWidget("widget-test", backend=backend, poll_interval=0.5,
                         fixed={"architecture": "mlp", "train_limit": 3000, "batch_size": 100})
    widget.lr_min.value, widget.lr_max.value = 1e-3, 1e-2
    widget.lr_values.value = 2
    widget.layers.value = (1, 1)
    widget.epochs.value = 2
    widget.parallel.value = 2
    widget.search.value = "grid"
    assert widget.stop_button.disabled
    empty_plot = bytes(widget.live.image.value)

    widget.launch_button.click()

    sweep = widget.sweep
    assert sweep is not None and [t.params["learning_rate"] for t in sweep.trials] == [0.001, 0.01]
    assert all(t.params["epochs"] == 2 and t.params["hidden_layers"] == 1 for t in sweep.trials)
    assert widget.launch_button.disabled and not widget.stop_button.disabled
    assert len(widget.progress.children) == 2
    # While it runs, the plot is redrawn as epochs arrive.
    deadline = time.monotonic() + 300
    while not any(t.curve for t in sweep.result().trials):
        assert time.monotonic() < deadline, sweep.result().table()
        time.sleep(0.2)
    result = widget.wait(timeout=300)

    assert [t.status for t in result.trials] == [TrialStatus.SUCCEEDED] * 2, result.table()
    assert widget.live.redraws >= 3  # empty, then at least one epoch, then the end
    plot = bytes(widget.live.image.value)  # ipywidgets keeps it as a memoryview
    assert plot.startswith(PNG) and plot != empty_plot
    assert LIVE_PLOT_CLASS in widget.live.image._dom_classes
    assert bytes(widget.summary.value).startswith(PNG) and widget.summary.layout.display is None
    for bar, label in (row.children for row in widget.progress.children):
        assert bar.value == 2 and bar.bar_style == "success" and "val acc" in label.value
    assert "Best:" in widget.status.value
    assert not widget.launch_button.disabled and widget.stop_button.disabled


def test_an_upside_down_range_is_explained_and_nothing_runs(backend):
    widget = SweepWidget("widget-test", backend=backend)
    widget.lr_min.value, widget.lr_max.value = 1e-2, 1e-4
    widget.launch_button.click()
    assert widget.sweep is None
    assert "upside down" in widget.status.value
    assert backend.processes() == []
    # The same message for any invalid choice the sliders allow.
    widget.lr_min.value, widget.lr_max.value = 1e-4, 1e-2
    widget.layers.value = (1, 3)
    widget.lr_values.value = 6
    widget.search.value = "random"
    widget.max_trials.value = 2
    sweep = widget.make_sweep()
    assert len(sweep.trials) == 2 and sweep.spec.search == "random"


@pytest.mark.slow
def test_stop_button_stops_every_trial(backend):
    widget = SweepWidget("widget-stop", backend=backend, poll_interval=0.3,
                         fixed={"architecture": "mlp", "train_limit": 20000, "batch_size": 100})
    widget.layers.value = (1, 1)
    widget.lr_values.value = 3
    widget.epochs.value = 10
    widget.parallel.value = 2
    widget.launch_button.click()
    deadline = time.monotonic() + 120
    while len(backend.processes()) < 2:
        assert time.monotonic() < deadline, widget.sweep.result().table()
        time.sleep(0.2)

    widget.stop_button.click()

    result = widget.wait(timeout=60)
    assert [t.status for t in result.trials] == ["Stopped"] * 3
    assert backend.processes() == []
    assert "Done" in widget.status.value and not widget.launch_button.disabled
