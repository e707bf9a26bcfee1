"""TensorBoard: a real ``tensorboard`` process on a real run's logs, read back and compared.

One short training run (MLP, 2 epochs, 4,000 images) is shared by the tests; the
local backend runs TensorBoard's Deployment as a process, as chapter 05 does.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import psutil
import pytest

from conftest import COURSE_ROOT, run_dirs, run_train
from mnist_lib import runs as run_files
from mnist_lib import tensorboard as tb
from mnist_lib.cluster.local import LocalBackend
from mnist_lib.constants import LOG_TAIL_LINES

RUN = "tb-test-run"
TINY = ["--architecture", "mlp", "--epochs", "2", "--train-limit", "4000"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """An output folder (MNIST_OUTPUT_DIR) holding one finished real run."""
    root = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNIST_OUTPUT_DIR", str(root))
        done = run_train(TINY + run_dirs(root / RUN))
        assert done.returncode == 0, done.stderr[-3000:]
        yield root


@pytest.fixture(scope="module")
def backend(outputs, tmp_path_factory):
    b = LocalBackend(namespace="tb-test", state_dir=tmp_path_factory.mktemp("local-cluster"))
    yield b
    b.shutdown()


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _gone(pids: list[int]) -> bool:
    def dead(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    return all(dead(p) for p in pids)


def test_the_fixture_config_writes_where_for_run_says(outputs):
    assert (outputs / RUN / "logs" / "validation").is_dir()
    assert (outputs / RUN / "checkpoints" / "result.json").is_file()


def test_tensorboard_serves_the_run_and_stops_cleanly(outputs, backend):
    log_dir = outputs / RUN / "logs"
    with tb.start_tensorboard(log_dir, backend=backend, timeout=180) as board:
        print(f"\nTensorBoard answered after {board.startup_seconds:.1f} s")
        assert board.url == f"http://127.0.0.1:{board.port}/"
        with urllib.request.urlopen(board.url, timeout=10) as response:
            assert response.status == 200
            assert b"TensorBoard" in response.read()
        assert sorted(board.runs()) == ["train", "validation"]  # TensorBoard's own /data/runs

        # What TensorBoard serves == what read_scalars reads == what training recorded.
        served = board.served_scalars("validation", "epoch_accuracy")
        read = run_files.read_scalars(log_dir)["validation/epoch_accuracy"]
        history = json.loads((outputs / RUN / "checkpoints" / "history.json").read_text())
        assert [s for s, _ in served] == [s for s, _ in read] == [1, 2]
        assert [v for _, v in served] == pytest.approx([v for _, v in read], abs=1e-7)
        assert [v for _, v in read] == pytest.approx([h["val_accuracy"] for h in history], abs=1e-6)
        loss = run_files.read_scalars(log_dir)["train/epoch_loss"]
        assert board.served_scalars("train", "epoch_loss") == loss
        assert loss[-1][1] < loss[0][1]  # it learned

        pids = tb.tensorboard_processes()
        assert pids, "a tensorboard process should run on this machine"
        assert "<iframe" in board.embed(height=400)._repr_html_()
        port = board.port
    assert board.stopped and not board.answers()
    assert _port_closed(port)
    assert _gone(pids) and tb.tensorboard_processes() == []
    assert backend.processes() == []
    board.stop()  # twice is fine


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "no-such-run" / "logs", "does not exist"),
    (lambda root: (root / "empty").mkdir(exist_ok=True) or root / "empty", "no TensorBoard event files"),
    (lambda root: root.parent, "not under the output folder"),
])
def test_bad_log_dir_is_a_clear_error_and_starts_nothing(outputs, backend, make, message):
    with pytest.raises(tb.TensorBoardError, match=message):
        tb.start_tensorboard(make(outputs), backend=backend)
    assert backend.processes() == [] and tb.tensorboard_processes() == []


def test_busy_port_fails_with_tensorboards_own_words(outputs, backend, monkeypatch):
    """If the port is taken, the error says so and shows TensorBoard's output; nothing is left."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(128)  # room for every probe: a real server would answer them
        busy = squatter.getsockname()[1]
        monkeypatch.setattr("mnist_lib.cluster.local.free_port", lambda: busy)
        with pytest.raises(tb.TensorBoardError) as caught:
            tb.start_tensorboard(outputs / RUN / "logs", backend=backend, timeout=180)
    text = str(caught.value)
    assert "already in use" in text and f"last {LOG_TAIL_LINES} lines of its output" in text
    assert str(busy) in text
    assert backend.processes() == [] and tb.tensorboard_processes() == []


def test_no_tensorboard_survives_its_python_process(outputs):
    """A kernel that exits without stop(): atexit and the backend stop TensorBoard."""
    script = textwrap.dedent(f"""
        from mnist_lib import tensorboard as tb
        board = tb.start_tensorboard({str(outputs / RUN / 'logs')!r}, backend="local", timeout=180)
        print(board.port, *tb.tensorboard_processes(), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=COURSE_ROOT, env={**os.environ, "MNIST_OUTPUT_DIR": str(outputs)})
    assert done.returncode == 0, done.stderr[-3000:]
    port, *pids = map(int, done.stdout.split())
    assert pids
    deadline = time.monotonic() + 10
    while not (_gone(pids) and _port_closed(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(pids) and _port_closed(port)


def test_read_scalars_while_a_run_is_still_writing(tmp_path):
    """Training keeps its writer open; read_scalars sees each epoch once it is flushed."""
    import tensorflow as tf

    assert run_files.read_scalars(tmp_path / "missing") == {}
    (tmp_path / "validation").mkdir()
    assert run_files.read_scalars(tmp_path) == {}  # a folder with no events yet
    writer = tf.summary.create_file_writer(str(tmp_path / "validation"))
    try:
        with writer.as_default(step=1):
            tf.summary.scalar("epoch_accuracy", 0.5)
        writer.flush()
        assert run_files.read_scalars(tmp_path) == {"validation/epoch_accuracy": [(1, 0.5)]}
        with writer.as_default(step=2):
            tf.summary.scalar("epoch_accuracy", 0.75)
        writer.flush()
        assert run_files.read_scalars(tmp_path) == {"validation/epoch_accuracy": [(1, 0.5), (2, 0.75)]}
    finally:
        writer.close()


def test_plot_runs_draws_one_line_per_run():
    import matplotlib

    matplotlib.use("Agg")
    runs = {"a": {"validation/epoch_accuracy": [(1, 0.9), (2, 0.95)]},
            "b": {"validation/epoch_accuracy": [(1, 0.8), (2, 0.85), (3, 0.9)]},
            "c": {"train/epoch_loss": [(1, 0.3)]}}
    fig = tb.plot_runs(runs)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["a", "b", "c (no validation/epoch_accuracy)"]
    assert list(lines[1].get_ydata()) == [0.8, 0.85, 0.9] and list(lines[1].get_xdata()) == [1, 2, 3]
    assert len(lines[2].get_xdata()) == 0
    fig2 = tb.plot_train_vs_validation({"train/epoch_loss": [(1, 0.5)], "validation/epoch_loss": [(1, 0.6)]})
    assert [line.get_label() for line in fig2.axes[0].get_lines()] == ["train", "validation"]


def test_compare_runs_reads_result_json(outputs, monkeypatch):
    monkeypatch.setenv("MNIST_OUTPUT_DIR", str(outputs))
    result = json.loads((outputs / RUN / "checkpoints" / "result.json").read_text())
    (row,) = tb.compare_runs([RUN])
    assert row.test_accuracy == result["test_accuracy"] > 0.8
    assert row.final_val_accuracy == result["history"][-1]["val_accuracy"]
    assert (row.epochs, row.strategy, row.workers) == (2, "single", 1)
    table = tb.format_table([row]).splitlines()
    assert table[0].split()[:2] == ["run", "epochs"] and table[1].startswith(RUN)
    assert f"{row.test_accuracy:.3f}" in table[1]
    with pytest.raises(FileNotFoundError, match="ch04-multi-worker"):
        tb.compare_runs(["ch04-multi-worker"])


def test_missing_runs_are_named_with_their_chapter(outputs, monkeypatch, capsys):
    monkeypatch.setenv("MNIST_OUTPUT_DIR", str(outputs))
    assert tb.find_runs([RUN, "ch01-local"]) == ([RUN], ["ch01-local"])
    assert tb.runs_to_compare(["ch01-local", RUN], train_missing=False) == [RUN]
    out = capsys.readouterr().out
    assert "missing ch01-local: run chapter 01" in out and f"found   {RUN}" in out


@pytest.mark.slow
def test_a_missing_run_gets_a_real_stand_in(outputs, backend, monkeypatch):
    monkeypatch.setenv("MNIST_OUTPUT_DIR", str(outputs))
    assert tb.runs_to_compare(["ch01-local"], backend=backend) == ["ch05-standin-ch01-local"]
    (row,) = tb.compare_runs(["ch05-standin-ch01-local"])
    assert (row.epochs, row.strategy) == (2, "single") and row.test_accuracy > 0.8
    assert backend.processes() == []
