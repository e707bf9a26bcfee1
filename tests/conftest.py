"""Fixtures shared by the library tests.

Tests train real models on real MNIST, but small ones: a few thousand images,
one or two epochs, the MLP. The machine has two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_lib.cluster.local import free_port  # noqa: F401 (re-exported for the tests)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COURSE_ROOT = Path(__file__).resolve().parent.parent

# A quick but real training run: enough to be well above chance (~0.9).
QUICK_TRAINING = ["--architecture", "mlp", "--epochs", "1", "--train-limit", "6000",
                  "--batch-size", "100"]


def run_dirs(root: Path) -> list[str]:
    """The --model-dir/--log-dir/--export-dir flags for a run under ``root``."""
    return ["--model-dir", str(root / "checkpoints"), "--log-dir", str(root / "logs"),
            "--export-dir", str(root / "export")]


def run_train(args: list[str], env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_lib.train`` in a fresh process, as a container or job would."""
    return subprocess.run([sys.executable, "-m", "mnist_lib.train", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=COURSE_ROOT)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> Path:
    """A real, short training run (MLP, 6,000 images, 1 epoch); returns its folder."""
    root = tmp_path_factory.mktemp("quick-run")
    done = run_train(QUICK_TRAINING + run_dirs(root))
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture(scope="session")
def exported_model(quick_run) -> Path:
    """The SavedModel folder (``.../export/mnist/1``) of :func:`quick_run`."""
    return quick_run / "export" / "mnist" / "1"


def assert_no_processes_left(backend) -> None:
    """Nothing this test process started is still running (zombies aside), and the
    local backend keeps no record of a live pod."""
    import time

    import psutil

    me = psutil.Process()
    deadline = time.monotonic() + 10
    while True:
        alive = [p for p in me.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not alive, [p.cmdline()[:4] for p in alive]
    assert backend.processes() == []
    assert not list((backend.state_dir / "pids").glob("*.json")), "pid records left behind"


# -- the real Kubernetes cluster (tests/real_cluster.py) ------------------------------
from real_cluster import _real_cluster_base, cluster_without_operator, real_cluster, workshop_room  # noqa: E402,F401,E501
import real_cluster as _real_cluster_module  # noqa: E402


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Tests marked ``real_cluster`` run last (after the notebooks), in their own order."""
    _real_cluster_module.order_last(items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep each real-cluster test's duration in test-artifacts/real-cluster-timings.json."""
    if report.when == "call" and _real_cluster_module.MARKER in report.keywords:
        _real_cluster_module.record_test(report.nodeid, report.duration, report.outcome)
