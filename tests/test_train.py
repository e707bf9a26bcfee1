"""The training entrypoint, run as a real process: outputs, TensorBoard, resume, distribution."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import COURSE_ROOT, QUICK_TRAINING, free_port, run_dirs, run_train
from mnist_lib import paths, tf_config
from mnist_lib.runs import load_history as read_history, load_result as read_result
from mnist_lib.waiting import wait_until


def test_run_writes_history_result_logs_and_export(quick_run):
    history = read_history(quick_run / "checkpoints")
    result = read_result(quick_run / "checkpoints")
    assert [h["epoch"] for h in history] == [1]
    assert set(history[0]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert 0.85 < result["test_accuracy"] <= 1.0  # 10 classes: chance is 0.1
    assert result["export_path"].endswith("export/mnist/1")
    assert result["strategy"] == "single" and result["resumed_from_epoch"] == 0
    assert (quick_run / "checkpoints" / "checkpoint").is_file()


def test_tensorboard_scalars_read_back(quick_run):
    """Keras 3 / tf.summary store scalars as tensor summaries: read them as such."""
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
    from tensorflow import make_ndarray

    history = read_history(quick_run / "checkpoints")
    for split, key in (("train", "accuracy"), ("validation", "val_accuracy")):
        events = EventAccumulator(str(quick_run / "logs" / split), size_guidance={TENSORS: 0})
        events.Reload()
        assert {"epoch_loss", "epoch_accuracy"} <= set(events.Tags()["tensors"])
        (point,) = events.Tensors("epoch_accuracy")
        assert point.step == 1
        assert float(make_ndarray(point.tensor_proto)) == pytest.approx(history[0][key], rel=1e-6)


def test_exported_model_predicts_the_shipped_digit(exported_model):
    from mnist_lib.model import load_exported  # imports Keras: only where a test needs it

    image = np.asarray(Image.open(COURSE_ROOT / "data" / "digits" / "4.png"), np.float32) / 255.0
    out = load_exported(exported_model)(images=image[None])
    assert int(out["classes"][0]) == 4


def test_resume_after_interruption(tmp_path):
    """Kill a run mid-way (as a preempted pod would be), start it again: it resumes and ends."""
    args = ["--architecture", "mlp", "--epochs", "4", "--train-limit", "20000"] + run_dirs(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "mnist_lib.train", *args], cwd=COURSE_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def two_epochs_done() -> bool:
        assert process.poll() is None, "training ended before it could be interrupted"
        return len(read_history(tmp_path / "checkpoints")) >= 2

    try:
        wait_until(two_epochs_done, timeout=240, interval=0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    done_before = len(read_history(tmp_path / "checkpoints"))
    assert 2 <= done_before < 4 and read_result(tmp_path / "checkpoints") is None

    done = run_train(args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Resuming from" in done.stdout and f"{done_before} of 4 epochs done" in done.stdout
    result = read_result(tmp_path / "checkpoints")
    assert result["resumed_from_epoch"] == done_before
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
    assert result["test_accuracy"] > 0.9


def test_invalid_run_leaves_nothing_behind(tmp_path):
    done = run_train(["--learning-rate", "0"] + run_dirs(tmp_path))
    assert done.returncode == 2
    assert not (tmp_path / "checkpoints").exists()  # refused before anything was created


def test_damaged_data_stops_before_training(tmp_path):
    shutil.copytree(paths.data_dir(), tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    done = run_train(QUICK_TRAINING + run_dirs(tmp_path / "run"),
                     env={"MNIST_DATA_DIR": str(tmp_path / "mnist")})
    assert done.returncode == 2
    assert "t10k-labels-idx1-ubyte.gz" in done.stderr and "Traceback" not in done.stderr


# -- distributed, on localhost, with TF_CONFIG exactly as the operator writes it --

def _launch_cluster(replicas: dict[str, int], args: list[str]):
    """Start one process per replica. Returns {(role, index): Popen}. Test-only launcher:
    the course's local backend (mnist_lib.cluster) does this with restarts and cleanup."""
    ports = {(r.lower(), i): free_port() for r, n in replicas.items() for i in range(n)}

    def address(role, index):
        return f"localhost:{ports[(role, index)]}"

    processes = {}
    for role, index in ports:
        env = {**os.environ, "TF_CONFIG": tf_config.build_tf_config(replicas, role, index, address)}
        processes[(role, index)] = subprocess.Popen(
            [sys.executable, "-m", "mnist_lib.train", *args], env=env, cwd=COURSE_ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return processes


def _finish(processes, waits_for):
    try:
        outputs = {}
        for key in waits_for:
            out, _ = processes[key].communicate(timeout=600)
            outputs[key] = (processes[key].returncode, out)
        return outputs
    finally:
        for process in processes.values():  # parameter servers never exit on their own
            if process.poll() is None:
                process.kill()
            process.wait()


DISTRIBUTED = ["--architecture", "mlp", "--epochs", "2", "--train-limit", "10000"]
# Parameter-server training is asynchronous: two workers apply gradients computed from
# weights the other may already have changed, in an order that varies from run to run,
# so its accuracy varies too (the seed fixes the data, not the interleaving). With
# DISTRIBUTED's 10,000 images the test accuracy was 0.898-0.913 (8 runs, one below the
# 0.9 this test asks for); with 20,000 images 0.927-0.933 (9 runs), comfortably above,
# for a few seconds more (the four processes' start-up dominates the test's 23-50 s).
PARAMETER_SERVER = ["--architecture", "mlp", "--epochs", "2", "--train-limit", "20000"]


@pytest.mark.slow
def test_two_worker_multi_worker_training(tmp_path):
    processes = _launch_cluster({"Worker": 2}, DISTRIBUTED + run_dirs(tmp_path))
    outputs = _finish(processes, [("worker", 0), ("worker", 1)])
    for (role, index), (code, out) in outputs.items():
        assert code == 0, out[-3000:]
        assert f"[worker {index}] epoch 2/2" in out
    assert "multi_worker cluster (2 worker)" in outputs[("worker", 0)][1]
    result = read_result(tmp_path / "checkpoints")
    assert result["strategy"] == "multi_worker" and result["workers"] == 2
    assert all(0.5 < h["accuracy"] <= 1.0 for h in result["history"])
    assert result["test_accuracy"] > 0.9
    assert (tmp_path / "export" / "mnist" / "1" / "saved_model.pb").is_file()
    # Only the chief keeps a checkpoint; worker 1's scratch copy is removed.
    assert not list((tmp_path / "checkpoints").glob(".scratch-*"))


@pytest.mark.slow
def test_parameter_server_training(tmp_path):
    shape = {"Chief": 1, "PS": 1, "Worker": 2}
    processes = _launch_cluster(shape, PARAMETER_SERVER + run_dirs(tmp_path))
    outputs = _finish(processes, [("chief", 0)])
    code, out = outputs[("chief", 0)]
    assert code == 0, out[-3000:]
    assert "parameter_server cluster (1 chief, 1 ps, 2 worker)" in out
    result = read_result(tmp_path / "checkpoints")
    assert result["strategy"] == "parameter_server" and result["test_accuracy"] > 0.9
    # Training metrics are sums the coordinator adds up, not Keras metric variables on
    # the parameter servers, which concurrent workers would update inconsistently
    # (an accuracy of 1.08 was seen that way).
    assert all(0.5 < h["accuracy"] <= 1.0 and h["loss"] > 0 for h in result["history"])
    assert (tmp_path / "export" / "mnist" / "1" / "saved_model.pb").is_file()


def test_finished_run_is_not_trained_or_exported_again(quick_run):
    """A pod restarted after its run completed (or a notebook cell run twice) must not
    export a second version: the first result stands."""
    done = run_train(QUICK_TRAINING + run_dirs(quick_run))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Already trained" in done.stdout
    assert sorted(p.name for p in (quick_run / "export" / "mnist").iterdir()) == ["1"]
