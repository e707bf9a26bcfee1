"""Chapters 03-07 in KUBERNETES mode against a real cluster, under strict nbval.

The stored notebook outputs were produced on the local backend (pods as processes).
Running the same notebooks on a real cluster (real kubelet, the Kubeflow training
operator, CoreDNS) and comparing every checked cell with those outputs is the proof
that both backends teach the same thing: the Job, both TFJobs through the real
operator (chapter 04 prints each replica's TF_CONFIG, compared with the local
backend's), the operator-free Indexed Job, TensorBoard reached through the
backend's port-forward, the model server Deployment answering the client, and a
sweep of TFJobs.

How it runs, as attendee 1 of a workshop room would (``python -m mnist_lib.room up``:
the session fixture ``workshop_room``): with nothing but the kubeconfig the instructor
handed out, whose token is a ServiceAccount's with the room's Role (not cluster-admin),
whose context names the attendee's namespace (``mnist-room-attendee-1``, not the default
``mnist``; no ``MNIST_NAMESPACE``), under the attendee's ResourceQuota and LimitRange,
with a notebook output folder that is a fresh local folder, **not** the pods' volume. The
claim ``mnist-outputs`` is provisioned by the cluster's default StorageClass, and
everything the chapters read or write on it goes through the backend (the volume
helper pod: ``mnist_lib.cluster.volume``). One extra sanitiser rule, built here,
writes that local folder as ``outputs`` (what it is for the stored outputs); every
other rule is ``tests/nbval_sanitize.cfg``'s.

Chapter 01 runs first, in the same environment: it trains in the kernel, and chapters
04, 05 and 06 compare with (or serve) its CNN; chapter 05 puts it on the volume for
TensorBoard's pod. Its own fallbacks (a stand-in model) would print other numbers
than the stored ones.

The cluster comes from the session fixture ``real_cluster`` (tests/real_cluster.py:
the kubeconfig and the environment that points the course at it).

The chapters run in order in ONE pytest subprocess (a kernel per notebook, as
``make test`` does), with a JUnit report; then one test per chapter reports that
chapter's failing cells. Each chapter's wall time is written to
``test-artifacts/kubernetes-chapters.json``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from real_cluster import RealCluster, WorkshopRoom

from mnist_lib import paths

ROOT = Path(__file__).resolve().parent.parent
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
ARTIFACTS = ROOT / "test-artifacts"
PREREQUISITES = ("01_train_locally",)
ATTENDEE = "attendee-1"  # of the room: its own namespace on a shared cluster, not the default "mnist"
CHAPTERS = ("03_run_a_job", "04_distributed_training", "05_tensorboard", "06_serving",
            "07_hyperparameter_sweeps")
TIMEOUT = 3600  # the whole run; chapters 03-07 take about 10-15 min on 2 cores

pytestmark = pytest.mark.real_cluster


def sanitizer_with_outputs(outputs: Path, target: Path) -> Path:
    """tests/nbval_sanitize.cfg, preceded by one rule: this run's output folder is the notebooks' ``outputs``.

    The stored (local) outputs print ``outputs/ch01-local/...``; here the output folder is
    elsewhere, printed as its absolute path (or the path a symlink resolves to).
    The rule is first, before ``[tmp-paths]`` would turn it into ``<TMP>``.
    """
    spellings = sorted({str(outputs), str(outputs.resolve())}, key=len, reverse=True)
    pattern = "(" + "|".join(re.escape(s) for s in spellings) + ")"
    rule = ("# Added by tests/test_notebooks_on_kubernetes.py: MNIST_OUTPUT_DIR is a fresh local folder.\n"
            f"[outputs-folder]\nregex: {pattern}\nreplace: outputs\n\n")
    target.write_text(rule + SANITIZE.read_text())
    return target


@dataclass
class ChapterRun:
    name: str
    seconds: float
    cells: int
    failures: list[str]


def _parse_report(report: Path) -> dict[str, ChapterRun]:
    """Per notebook: wall time (sum of its cells' times), cell count, failing cells with their message."""
    runs: dict[str, ChapterRun] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        where = case.get("file") or case.get("classname", "")
        name = next((n for n in PREREQUISITES + CHAPTERS if n in where), None)
        if name is None:
            continue
        run = runs.setdefault(name, ChapterRun(name, 0.0, 0, []))
        run.seconds += float(case.get("time") or 0)
        run.cells += 1
        for problem in list(case.iter("failure")) + list(case.iter("error")):
            text = (problem.get("message") or "") + "\n" + (problem.text or "")
            run.failures.append(f"{case.get('name')}: {text.strip()[:4000]}")
    return runs


@pytest.fixture(scope="module")
def chapter_runs(real_cluster: RealCluster, workshop_room: WorkshopRoom,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, ChapterRun]:
    """Run chapter 01 and chapters 03-07, in order, under nbval against the cluster; parse the report."""
    work = tmp_path_factory.mktemp("k8s-notebooks")
    # The kernel's output folder is a fresh local one; the pods' volume is the claim that the
    # cluster's default StorageClass provisions (read and written through the backend).
    outputs = work / "outputs"
    outputs.mkdir()
    sanitize = sanitizer_with_outputs(outputs, work / "nbval_sanitize.cfg")
    report = work / "report.xml"
    notebooks = [f"notebooks/{name}.ipynb" for name in PREREQUISITES + CHAPTERS]
    command = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider",
               "--nbval", "--current-env", "--nbval-sanitize-with", str(sanitize),
               "--nbval-cell-timeout", "900", f"--junitxml={report}", "-q", *notebooks]
    env = {**os.environ, **real_cluster.env, "MNIST_OUTPUT_DIR": str(outputs),
           "KUBECONFIG": str(workshop_room.kubeconfig(ATTENDEE))}  # the attendee's, not the admin's
    env.pop("MNIST_NAMESPACE", None)  # the kubeconfig's context names the namespace
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "kubernetes-chapters.log"
    started = time.monotonic()
    # The namespace, its claim and its jobs stay: the room's tests read them (`room status`), then `room down`.
    with log.open("w") as out:
        completed = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    total = time.monotonic() - started
    if not report.is_file():
        pytest.fail(f"nbval did not run (exit {completed.returncode}); see {log}")
    runs = _parse_report(report)
    paths.write_json(ARTIFACTS / "kubernetes-chapters.json", {
        "total_seconds": round(total, 1), "exit_code": completed.returncode,
        "chapters": {n: {"seconds": round(r.seconds, 1), "cells": r.cells, "failed_cells": len(r.failures)}
                     for n, r in runs.items()}})
    return runs


@pytest.mark.parametrize("chapter", PREREQUISITES + CHAPTERS)
def test_chapter_on_kubernetes(chapter_runs: dict[str, ChapterRun], chapter: str) -> None:
    """Every checked cell of the chapter prints on the cluster what it printed on the local backend."""
    run = chapter_runs.get(chapter)
    assert run is not None and run.cells, f"{chapter} did not run: see test-artifacts/kubernetes-chapters.log"
    assert not run.failures, f"{chapter} ({run.seconds:.0f} s) differs on kubernetes:\n\n" + "\n\n".join(run.failures)
