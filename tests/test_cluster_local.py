"""The local backend: real processes running real training, wired as on a cluster.

Tiny trainings (MLP, 1 epoch, 4,000 images): the machine has two cores. The
accuracy comparisons (12,000 images) use the same data and epochs for every strategy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import assert_no_processes_left, COURSE_ROOT, run_dirs, run_train
from mnist_lib import cluster, manifests
from mnist_lib.cluster import local
from mnist_lib.cluster.local import LocalBackend, rewrite_path
from mnist_lib.constants import EXIT_PEER_LOST

TINY = {"architecture": "mlp", "epochs": 1, "train_limit": 4000}
# Accuracy comparisons need a model past its first steep steps: 4,000 images leave it
# where one step more or less (asynchronous parameter servers) moves accuracy by a point.
COMPARE = {"architecture": "mlp", "epochs": 1, "train_limit": 12000}
COMPARE_ARGS = ["--architecture", "mlp", "--epochs", "1", "--train-limit", "12000"]


@pytest.fixture
def outputs(tmp_path, monkeypatch) -> Path:
    """A fresh MNIST_OUTPUT_DIR: where /outputs of the manifests lands."""
    monkeypatch.setenv("MNIST_OUTPUT_DIR", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


@pytest.fixture
def backend(outputs, tmp_path):
    b = LocalBackend(state_dir=tmp_path / "state")
    yield b
    b.shutdown()
    assert_no_processes_left(b)




def result(outputs: Path, run: str) -> dict:
    return json.loads((outputs / run / "checkpoints" / "result.json").read_text())


@pytest.fixture(scope="module")
def single_accuracy(tmp_path_factory) -> float:
    """Test accuracy of one plain process with the same data and epochs."""
    root = tmp_path_factory.mktemp("single")
    done = run_train(COMPARE_ARGS + run_dirs(root))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((root / "checkpoints" / "result.json").read_text())["test_accuracy"]


# -- distributed training ------------------------------------------------------------

@pytest.mark.slow
def test_two_worker_tfjob_matches_single_process(backend, outputs, single_accuracy):
    config = manifests.run_config("two-workers", **COMPARE)
    name = backend.create_job(manifests.tfjob("two-workers", config, workers=2))
    status = backend.wait_for_job_conditions(name, timeout=300, progress=False)
    assert status.phase == cluster.JobPhase.SUCCEEDED
    # The operator's TF_CONFIG, with localhost ports in place of service names.
    tf_config = json.loads(backend.replica_env(name, "worker", 1)["TF_CONFIG"])
    assert tf_config["task"] == {"type": "worker", "index": 1}
    assert [a.split(":")[0] for a in tf_config["cluster"]["worker"]] == ["localhost", "localhost"]
    run = result(outputs, "two-workers")
    assert run["strategy"] == "multi_worker" and run["workers"] == 2
    assert abs(run["test_accuracy"] - single_accuracy) <= 0.005
    assert "Test accuracy" in backend.get_job_logs(name, replica="worker", index=0)


@pytest.mark.slow
def test_parameter_server_tfjob_matches_single_process(backend, outputs, single_accuracy):
    config = manifests.run_config("with-ps", **COMPARE)
    name = backend.create_job(manifests.tfjob("with-ps", config, workers=2, parameter_servers=1))
    status = backend.wait_for_job_conditions(name, timeout=300, progress=False)
    assert status.phase == cluster.JobPhase.SUCCEEDED
    assert status.replicas["Chief"].succeeded == 1
    # The chief succeeded, so the parameter server (which never exits) was stopped.
    assert status.replicas["PS"].active == 0 and backend.processes() == []
    run = result(outputs, "with-ps")
    assert run["strategy"] == "parameter_server"
    # Asynchronous: the workers' updates interleave differently in every run (0.64 point was seen).
    assert abs(run["test_accuracy"] - single_accuracy) <= 0.01


@pytest.mark.slow
def test_indexed_job_without_the_operator(backend, outputs):
    config = manifests.run_config("indexed", **TINY)
    name = backend.create_job(manifests.indexed_job("indexed", config, workers=2))
    backend.wait_for_job_conditions(name, timeout=300, progress=False)
    env = backend.replica_env(name, index=1)
    assert env["JOB_COMPLETION_INDEX"] == "1"
    assert env["MNIST_WORKER_HOSTS"].count("localhost:") == 2  # cluster DNS, played locally
    assert result(outputs, "indexed")["workers"] == 2


@pytest.mark.slow
def test_killed_worker_restarts_and_training_resumes(backend, outputs):
    epochs = 4
    config = manifests.run_config("resume", architecture="mlp", epochs=epochs, train_limit=12000)
    name = backend.create_job(manifests.tfjob("resume", config, workers=2))
    history = outputs / "resume" / "checkpoints" / "history.json"
    deadline = time.monotonic() + 300
    while not (history.exists() and json.loads(history.read_text() or "[]")):  # epoch 1 checkpointed
        assert time.monotonic() < deadline and not backend.get_job(name).finished
        time.sleep(0.05)
    victim = backend._replica_of(backend._find(name), "worker", 1).proc.pid
    os.kill(victim, signal.SIGKILL)  # as if its node died

    status = backend.wait_for_job_conditions(name, timeout=400, progress=False)
    assert status.phase == cluster.JobPhase.SUCCEEDED
    assert status.replicas["Worker"].restarts >= 1
    logs = backend.get_job_logs(name, replica="worker", index=1)
    assert "restarted" in logs and "Resuming from" in logs
    # The survivor saw its peer vanish and said so, with the retryable exit code (not a bare 1).
    survivor = backend.get_job_logs(name, replica="worker", index=0)
    assert "error: lost a peer (" in survivor and f"exiting with {EXIT_PEER_LOST}" in survivor, survivor[-2000:]
    run = result(outputs, "resume")
    assert [h["epoch"] for h in run["history"]] == list(range(1, epochs + 1))
    assert run["resumed_from_epoch"] >= 1


# -- failures and cleanup -----------------------------------------------------------

def test_crashing_job_ends_failed_with_its_logs(backend):
    config = manifests.run_config("crash", **TINY)
    job = manifests.training_job("crash", config)
    job["spec"]["backoffLimit"] = 1
    job["spec"]["template"]["spec"]["containers"][0]["args"] += ["--width", "0"]  # invalid: exit 2
    name = backend.create_job(job)
    with pytest.raises(cluster.JobFailedError) as err:
        backend.wait_for_job_conditions(name, timeout=120, progress=False)
    assert err.value.status.phase == cluster.JobPhase.FAILED
    # Exit 2 (bad input) fails the Job at once, by its podFailurePolicy: no retry.
    assert "failed with exit code 2 matching FailJob rule at index 1" in str(err.value)
    assert err.value.status.replicas["Pod"].failed == 1
    assert "error: --width must be an integer from 1" in str(err.value)  # the tail of its logs


def exits_with(code: int) -> dict:
    """A training Job (the course's policies) whose one container exits with ``code`` at once."""
    job = manifests.training_job("exits", manifests.run_config("exits", **TINY), backoff_limit=2)
    job["spec"]["template"]["spec"]["containers"][0]["command"] = ["python", "-c", f"raise SystemExit({code})"]
    job["spec"]["template"]["spec"]["containers"][0]["args"] = []
    return job


def test_a_retryable_exit_is_retried_up_to_the_backoff_limit(backend):
    name = backend.create_job(exits_with(EXIT_PEER_LOST))
    with pytest.raises(cluster.JobFailedError, match="backoff limit") as err:
        backend.wait_for_job_conditions(name, timeout=60, progress=False)
    assert err.value.status.replicas["Pod"].failed == 3  # the first try and backoffLimit (2) retries


def test_pod_failure_rules_match_as_the_job_controller_does():
    rules = manifests.pod_failure_policy()["rules"]
    assert local.pod_failure_action(rules, "tensorflow", 2) == (1, "FailJob")
    assert local.pod_failure_action(rules, "tensorflow", 1) == (1, "FailJob")
    for retryable in (137, 138, 143):
        assert local.pod_failure_action(rules, "tensorflow", retryable) == (-1, "Count")
    assert local.pod_failure_action(rules, "sidecar", 2) == (-1, "Count")  # another container's exit
    not_in = [{"action": "FailIndex", "onExitCodes": {"operator": "NotIn", "values": [143]}}]
    assert local.pod_failure_action(not_in, "x", 3) == (0, "FailIndex")
    assert local.pod_failure_action(not_in, "x", 143) == (-1, "Count")


@pytest.mark.slow
def test_deleted_indexed_job_pod_is_replaced_and_training_resumes(backend, outputs):
    config = manifests.run_config("lost-pod", architecture="mlp", epochs=3, train_limit=12000)
    name = backend.create_job(manifests.indexed_job("lost-pod", config, workers=2))
    backend.wait_for_log(name, "epoch 1/", index=0, timeout=300)
    assert backend.delete_pod(name, index=1) == "lost-pod-1"
    status = backend.wait_for_job_conditions(name, timeout=400, progress=False)
    assert status.phase == cluster.JobPhase.SUCCEEDED
    assert status.replicas["Pod"].failed == 2  # worker 1 deleted (143), worker 0 lost its peer (138): both replaced
    deleted, survivor = (backend.get_job_logs(name, index=i) for i in (1, 0))
    assert "stopping: SIGTERM" in deleted and "Resuming from" in deleted
    assert "error: lost a peer (" in survivor
    run = result(outputs, "lost-pod")
    assert run["resumed_from_epoch"] >= 1 and [h["epoch"] for h in run["history"]] == [1, 2, 3]
    # The history shows the restart: epoch 1 by the first processes, the rest after resuming.
    assert run["history"][0]["resumed_from_epoch"] == 0 and run["history"][-1]["resumed_from_epoch"] >= 1


@pytest.mark.slow
def test_deleted_tfjob_pod_fails_the_tfjob_as_the_operator_does_and_resubmitting_resumes(backend, outputs):
    config = manifests.run_config("lost-tf", architecture="mlp", epochs=3, train_limit=12000)
    job = manifests.tfjob("lost-tf", config, workers=2)
    name = backend.create_job(job)
    backend.wait_for_log(name, "epoch 1/", replica="worker", index=0, timeout=300)
    backend.delete_pod(name, replica="worker", index=1)
    with pytest.raises(cluster.JobFailedError, match="submit it again") as err:
        backend.wait_for_job_conditions(name, timeout=60, progress=False)
    assert "has failed because 1 Worker replica(s) failed." in str(err.value)  # the operator's words
    assert backend.processes() == []  # cleanPodPolicy Running stopped worker 0
    backend.delete_job(name)
    backend.create_job(job)
    assert backend.wait_for_job_conditions(name, timeout=400, progress=False).phase == cluster.JobPhase.SUCCEEDED
    assert result(outputs, "lost-tf")["resumed_from_epoch"] >= 1


def sleeper(name: str, ignore_sigterm: bool = False) -> dict:
    """A Job whose one pod sleeps: something long-running that is quick to start."""
    code = ("import signal, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_sigterm else "")
            + "print('sleeping', flush=True)\ntime.sleep(120)")
    container = {"name": "main", "image": "python:3.11", "command": ["python", "-c", code]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}}


def test_delete_stops_everything(backend):
    name = backend.create_job(sleeper("sleepy"))
    backend.wait_for_job_conditions(name, expected_conditions=[cluster.JobPhase.RUNNING], progress=False)
    pids = backend.processes()
    assert len(pids) == 1
    backend.delete_job(name)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    with pytest.raises(cluster.NotFoundError):
        backend.get_job(name)
    backend.delete_job(name)  # deleting twice is fine


def test_same_name_twice_is_a_conflict(backend):
    backend.create_job(sleeper("twice"))
    with pytest.raises(cluster.ConflictError, match="delete_job"):
        backend.create_job(sleeper("twice"))


def test_deployment_and_port_forward(backend):
    server = ("import sys, http.server as h\n"
              "h.HTTPServer(('127.0.0.1', int(sys.argv[2])), h.SimpleHTTPRequestHandler).serve_forever()")
    labels = {"app": "web"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                      "metadata": {"labels": labels},
                      "spec": {"containers": [{"name": "web", "image": "python:3.11",
                                               "command": ["python", "-c", server, "--port", "8080"],
                                               "ports": [{"name": "http", "containerPort": 8080}]}]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]}}
    backend.apply([deployment, service])
    with backend.port_forward("web", 80) as forward:
        assert forward.local_port != 8080  # a free port, so two courses can run side by side
        assert urllib.request.urlopen(forward.url, timeout=10).status == 200
    assert backend.get_job("web").phase == cluster.JobPhase.RUNNING
    backend.delete([deployment, service])
    assert backend.processes() == []


def test_model_server_objects_serve_every_version_through_their_config_map(backend, outputs):
    """manifests.model_server()'s [ConfigMap, Deployment, Service], run as on a cluster.

    The ConfigMap becomes a file under the state folder, mounted where the server reads
    --model_config_file, with /outputs in its text rewritten to this machine's folder; its
    model_version_policy { all {} } lets a client ask for version 1 as well as 2.
    """
    from mnist_lib.predict import PredictionClient
    from mnist_lib.serving_config import parse_model_config
    from serving_support import export_tiny

    for version in (1, 2):
        export_tiny(outputs / "serving", seed=version, version=version)
    objects = manifests.model_server(model_base_path="/outputs/serving/mnist")
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "Service"]
    assert backend.apply(objects) == ["ConfigMap/mnist-serving-config", "Deployment/mnist-serving",
                                      "Service/mnist-serving"]
    written = backend.state_dir / "configmaps" / backend.namespace / "mnist-serving-config" / "models.config"
    model = parse_model_config(written.read_text())
    assert model.base_path == str(outputs / "serving" / "mnist")  # /outputs, rewritten
    assert model.model_version_policy.WhichOneof("policy_choice") == "all"
    argv = backend._find("mnist-serving", "Deployment").replicas[0].argv
    assert f"--model_config_file={written}" in argv  # the mountPath, mapped to the ConfigMap's folder
    try:
        backend.wait_for_job_conditions("mnist-serving", [cluster.JobPhase.RUNNING], kind="Deployment",
                                        timeout=120, progress=False)
        with backend.port_forward("mnist-serving", 8500, timeout=120) as forward:
            for version in (1, 2, None):
                with PredictionClient("127.0.0.1", forward.local_port, version=version) as client:
                    answer = client.predict(np.zeros((28, 28), np.float32))[0]
                    assert answer.model_version == (version or 2)
    except Exception:
        print(backend.get_job_logs("mnist-serving", kind="Deployment")[-3000:])
        raise
    backend.delete(objects)
    assert backend.processes() == []
    assert not written.parent.exists()  # deleting the ConfigMap removes its files


def test_a_pod_mounting_a_missing_config_map_is_refused_before_anything_starts(backend):
    _, deployment, service = manifests.model_server()
    with pytest.raises(cluster.NotFoundError, match='configmap "mnist-serving-config" not found'):
        backend.apply([deployment, service])
    assert backend.processes() == []


def test_config_map_keys_become_files_and_follow_a_reapply(backend, outputs):
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                  "data": {"a.txt": "path: /outputs/run\nother: /outputsx", "b.txt": "two"}}
    backend.apply([config_map])
    folder = backend.state_dir / "configmaps" / backend.namespace / "settings"
    assert (folder / "a.txt").read_text() == f"path: {outputs}/run\nother: /outputsx"
    backend.apply([{**config_map, "data": {"a.txt": "changed"}}])  # as kubelet updates the volume
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]
    assert (folder / "a.txt").read_text() == "changed"
    with pytest.raises(cluster.InvalidObjectError, match="key '../x' is not valid"):
        backend.apply([{**config_map, "data": {"../x": "no"}}])
    backend.delete([config_map])
    assert not folder.exists()


def test_dead_kernels_leftovers_are_stopped(outputs, tmp_path):
    """A kernel killed with SIGKILL runs no atexit hook: the next one cleans up after it."""
    state = tmp_path / "state"
    script = (
        "import sys, time\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_cluster_local import sleeper\n"
        "from mnist_lib.cluster.local import LocalBackend\n"
        f"b = LocalBackend(state_dir={str(state)!r})\n"
        "b.create_job(sleeper('stubborn', ignore_sigterm=True))\n"
        "while 'sleeping' not in b.get_job_logs('stubborn'):\n"
        "    time.sleep(0.1)\n"
        "print(b.processes()[0], flush=True)\n"
        "time.sleep(300)\n")
    kernel = subprocess.Popen([sys.executable, "-c", script], cwd=COURSE_ROOT, stdout=subprocess.PIPE, text=True)
    pid = int(kernel.stdout.readline())
    kernel.kill()
    kernel.wait()
    # It ignores SIGTERM (the kernel's death signal), so only the state folder can find it.
    assert psutil.pid_exists(pid)
    fresh = LocalBackend(state_dir=state)
    assert fresh.cleaned_up == ["Job stubborn pod-0"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    fresh.shutdown()


def python_tfjob(name: str, workers: dict[int, str], policy: str = "OnFailure", **spec) -> dict:
    """A TFJob whose worker i runs the Python code ``workers[i]``: the operator's rules, without TensorFlow."""
    code = ("import os, json, sys, time\n"
            "i = json.loads(os.environ.get('TF_CONFIG') or '{}').get('task', {}).get('index', 0)\n"
            "codes = " + repr(workers) + "\n"
            "exec(codes[i])")
    container = {"name": "tensorflow", "image": "python:3.11", "command": ["python", "-c", code]}
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": name},
            "spec": {**spec, "tfReplicaSpecs": {"Worker": {
                "replicas": len(workers), "restartPolicy": policy,
                "template": {"spec": {"containers": [container]}}}}}}


def test_success_policy_worker_0_or_all_workers(backend):
    quick_and_slow = {0: "sys.exit(0)", 1: "time.sleep(3)"}
    # Default: worker 0 completing is enough (the operator's rule); worker 1 is then stopped.
    backend.create_job(python_tfjob("default-policy", quick_and_slow))
    status = backend.wait_for_job_conditions("default-policy", timeout=60, polling_interval=0.1, progress=False)
    assert status.replicas["Worker"].succeeded == 1 and backend.processes() == []
    # AllWorkers: the job waits for worker 1 too.
    backend.create_job(python_tfjob("all-workers", quick_and_slow, successPolicy="AllWorkers"))
    time.sleep(1.5)
    assert backend.get_job("all-workers").phase == cluster.JobPhase.RUNNING
    status = backend.wait_for_job_conditions("all-workers", timeout=60, progress=False)
    assert status.replicas["Worker"].succeeded == 2


def test_restart_policy_exit_code_retries_codes_from_128(backend, tmp_path):
    """The operator's rule (IsRetryableExitCode: code >= 128), not a list of signals."""
    def exits_once(code: int) -> str:
        marker = tmp_path / f"exited-{code}"
        return f"p = {str(marker)!r}\nif not os.path.exists(p):\n    open(p, 'w').close(); sys.exit({code})"

    # Worker 0 is "killed" (exit 137), worker 1 exits 138 (no signal's code), each the first time only:
    # both are retried under ExitCode. (Worker 0 then lingers a second: its success ends the job.)
    slow_chief = exits_once(137) + "\ntime.sleep(1)"
    backend.create_job(python_tfjob("exit-code", {0: slow_chief, 1: exits_once(138)}, policy="ExitCode"))
    status = backend.wait_for_job_conditions("exit-code", timeout=60, progress=False)
    assert status.replicas["Worker"].restarts == 2
    # Exit code 1 is a permanent error under ExitCode: no retry, the job fails.
    backend.create_job(python_tfjob("exit-one", {0: "sys.exit(1)", 1: "time.sleep(30)"}, policy="ExitCode"))
    with pytest.raises(cluster.JobFailedError, match="exited with code 1"):
        backend.wait_for_job_conditions("exit-one", timeout=60, progress=False)
    assert backend.processes() == []  # the failed job's other worker was stopped


def test_stream_logs_follows_until_the_replica_ends(backend):
    counting = "for n in range(3):\n    print('line', n, flush=True); time.sleep(0.3)"
    backend.create_job(python_tfjob("chatty", {0: counting}))
    lines = list(backend.stream_job_logs("chatty", replica="worker", index=0))
    assert lines == ["line 0", "line 1", "line 2"]


def test_backoff_limit_counts_restarts(backend):
    job = python_tfjob("crash-loop", {0: "sys.exit(1)"}, runPolicy={"backoffLimit": 2})
    backend.create_job(job)
    with pytest.raises(cluster.JobFailedError, match="backoff limit") as err:
        backend.wait_for_job_conditions("crash-loop", timeout=60, progress=False)
    assert err.value.status.replicas["Worker"].restarts == 2


def test_paths_under_mounts_are_rewritten(outputs):
    mounts = {"/outputs": outputs}
    assert rewrite_path("/outputs/run/checkpoints", mounts) == f"{outputs}/run/checkpoints"
    assert rewrite_path("--log-dir=/outputs/run/logs", mounts) == f"--log-dir={outputs}/run/logs"
    assert rewrite_path("/outputsx", mounts) == "/outputsx"
    assert rewrite_path("mlp", mounts) == "mlp"


def test_objects_for_another_namespace_are_refused(backend):
    """Objects carry no namespace (the backend's is used); one built for another is refused, not lost."""
    job = manifests.training_job("ns-check", manifests.run_config("ns-check", architecture="mlp"),
                                 namespace="someone-else")
    with pytest.raises(cluster.InvalidObjectError, match="someone-else.*MNIST_NAMESPACE"):
        backend.create_job(job)
    assert not backend.processes()
