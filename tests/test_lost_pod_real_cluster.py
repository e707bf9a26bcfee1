"""A pod lost in the middle of training, on the real cluster and on the local backend.

The fault is what an instructor sees when a node is drained or somebody deletes the wrong
pod: ``delete_pod`` (``kubectl delete pod``, with its grace period) on worker 1 once worker 0
has logged the first epoch. Same fault, both backends, same outcome:

- an Indexed Job replaces the pod (its ``podFailurePolicy``), the run resumes from the epoch
  checkpoint and reaches the accuracy of an undisturbed run;
- a TFJob fails at once (operator v1.9.4 counts a deleted pod as a failed replica,
  kubeflow/trainer#1560), and the same job submitted again resumes from its checkpoint.

Trainings: the MLP on all 55,000 images for 3 epochs, so an epoch lasts long enough (seconds)
for the deletion to land inside the run. Namespace ``mnist-lost``, its own claim.
"""

from __future__ import annotations

import time
from typing import Iterator

import pytest
import real_cluster
from real_cluster import RealCluster

from mnist_lib import cluster, manifests
from mnist_lib.cluster import JobPhase
from mnist_lib.cluster.base import Backend
from mnist_lib.cluster.local import LocalBackend

pytestmark = pytest.mark.real_cluster

NS = "mnist-lost"
FAULT = {"architecture": "mlp", "epochs": 3}
SAME_ACCURACY = 0.005  # half a point: what the issue asks of a run that lost a pod


@pytest.fixture(scope="module")
def kube(_real_cluster_base: RealCluster) -> Iterator[Backend]:
    backend = _real_cluster_base.backend(NS)
    backend.apply([manifests.namespace(NS), manifests.volume_claim(namespace=NS)])
    try:
        yield backend
    finally:
        backend.delete([manifests.namespace(NS)])


@pytest.fixture(scope="module")
def here(tmp_path_factory) -> Iterator[Backend]:
    """The local backend, its outputs in a folder of this test module."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MNIST_OUTPUT_DIR", str(tmp_path_factory.mktemp("lost-pod-outputs")))
        backend = LocalBackend(namespace=NS, state_dir=tmp_path_factory.mktemp("lost-pod-state"))
        try:
            yield backend
        finally:
            backend.shutdown()


def _fresh(backend: Backend, name: str, objects) -> None:
    backend.delete_job(name)
    backend.clear_outputs(manifests.run_config(name, **FAULT))
    backend.create_job(objects)


def _delete_worker_1_after_epoch_1(backend: Backend, name: str, replica: str | None) -> float:
    """Delete worker 1's pod once worker 0 has logged epoch 1 (so ``ckpt-1`` is written); return when."""
    backend.wait_for_log(name, "epoch 1/", replica=replica, index=0, timeout=600)
    backend.delete_pod(name, replica=replica, index=1)
    return time.monotonic()


def _lost_pod_in_indexed_job(backend: Backend, name: str) -> dict:
    config = manifests.run_config(name, **FAULT)
    _fresh(backend, name, manifests.indexed_job(name, config, workers=2, namespace=backend.namespace))
    started = time.monotonic()
    deleted = _delete_worker_1_after_epoch_1(backend, name, None)
    status = backend.wait_for_job_conditions(name, timeout=900, progress=False)
    result = backend.read_result(config)
    outcome = {"phase": status.phase, "failed pods": status.replicas["Pod"].failed,
               "resumed from": result["resumed_from_epoch"], "accuracy": result["test_accuracy"],
               "seconds after the deletion": round(time.monotonic() - deleted, 1),
               "seconds": round(time.monotonic() - started, 1),
               "worker 1 log": backend.get_job_logs(name, index=1)}
    backend.delete_job(name)
    return outcome


@pytest.fixture(scope="module")
def undisturbed(kube: Backend) -> dict:
    """The same multi-worker training on the cluster, no fault: its accuracy and wall time."""
    name = "lost-reference"
    config = manifests.run_config(name, **FAULT)
    _fresh(kube, name, manifests.indexed_job(name, config, workers=2, namespace=NS))
    started = time.monotonic()
    kube.wait_for_job_conditions(name, timeout=900, progress=False)
    seconds = time.monotonic() - started
    kube.delete_job(name)
    return {"accuracy": kube.read_result(config)["test_accuracy"], "seconds": round(seconds, 1)}


def test_a_deleted_indexed_job_pod_is_replaced_and_resumes_on_both_backends(kube: Backend, here: Backend,
                                                                             undisturbed: dict) -> None:
    on_cluster = _lost_pod_in_indexed_job(kube, "lost-indexed")
    locally = _lost_pod_in_indexed_job(here, "lost-indexed")
    real_cluster.record("lost_pod_indexed_job", {
        "undisturbed_s": undisturbed["seconds"], "with_a_deleted_worker_s": on_cluster["seconds"],
        "after_the_deletion_s": on_cluster["seconds after the deletion"], "failed_pods": on_cluster["failed pods"],
        "accuracy": on_cluster["accuracy"], "undisturbed_accuracy": undisturbed["accuracy"],
        "local_accuracy": locally["accuracy"]})
    for outcome in (on_cluster, locally):
        assert outcome["phase"] == JobPhase.SUCCEEDED
        # Worker 1 deleted (exit 143) and worker 0, which lost its peer (138): at least those two.
        assert outcome["failed pods"] >= 2
        assert outcome["resumed from"] >= 1
        assert "Resuming from" in outcome["worker 1 log"]  # the newest pod of index 1
    # The cluster's pod log is the new pod's; the local one keeps the deleted process's lines too.
    assert "stopping: SIGTERM" in locally["worker 1 log"]
    for outcome in (on_cluster, locally):
        assert abs(outcome["accuracy"] - undisturbed["accuracy"]) <= SAME_ACCURACY, (outcome, undisturbed)


def _lost_pod_in_tfjob(backend: Backend, name: str, parameter_servers: int = 0, lose: tuple[str, int] = ("worker", 1),
                       resubmit: bool = True):
    """Delete a pod of a TFJob after epoch 1: (the error, seconds until it, the resubmitted job's status, result)."""
    config = manifests.run_config(name, **FAULT)
    job = manifests.tfjob(name, config, workers=2, parameter_servers=parameter_servers, namespace=backend.namespace)
    _fresh(backend, name, job)
    main = "chief" if parameter_servers else "worker"
    backend.wait_for_log(name, "epoch 1/", replica=main, index=0, timeout=600)
    deleted = time.monotonic()
    backend.delete_pod(name, replica=lose[0], index=lose[1])
    with pytest.raises(cluster.JobFailedError) as failed:
        backend.wait_for_job_conditions(name, timeout=120, progress=False)
    failed_after = time.monotonic() - deleted
    backend.delete_job(name)
    if not resubmit:
        return failed.value, failed_after, None, None
    backend.create_job(job)  # again, its folders kept
    status = backend.wait_for_job_conditions(name, timeout=900, progress=False)
    result = backend.read_result(config)
    backend.delete_job(name)
    return failed.value, failed_after, status, result


@pytest.mark.parametrize("shape", ["multi-worker", "parameter-server"])
def test_a_deleted_tfjob_worker_fails_the_tfjob_and_resubmitting_resumes(kube: Backend, here: Backend, shape,
                                                                         undisturbed: dict) -> None:
    """On both backends for multi-worker; parameter-server on the cluster (locally: tests/test_cluster_local.py)."""
    ps = 1 if shape == "parameter-server" else 0
    name = f"lost-{shape}"
    outcomes = {}
    for where, backend in (("cluster", kube), ("local", here))[:1 if ps else 2]:
        error, failed_after, status, result = _lost_pod_in_tfjob(backend, name, ps)
        outcomes[where] = (error.status.phase, status.phase, result["resumed_from_epoch"] >= 1)
        assert failed_after < 30, f"{where}: the TFJob failed {failed_after:.0f} s after the deletion"
        assert "has failed because 1 Worker replica(s) failed." in str(error)  # the operator's words
        assert "submit it again" in str(error)
        if where == "cluster":
            real_cluster.record("lost_pod_tfjob", {shape: {"failed_after_s": round(failed_after, 1),
                                                           "accuracy": result["test_accuracy"]}})
        # Multi-worker training is the undisturbed run's (an Indexed Job computes what a TFJob does).
        # Parameter servers are asynchronous and train differently: within a point, as in chapter 04.
        assert abs(result["test_accuracy"] - undisturbed["accuracy"]) <= (0.01 if ps else SAME_ACCURACY)
    assert set(outcomes.values()) == {(JobPhase.FAILED, JobPhase.SUCCEEDED, True)}


def test_a_deleted_parameter_server_fails_the_tfjob_at_once(kube: Backend) -> None:
    """The same as a lost worker, and the same answer: submitting again resumes (shown above)."""
    error, failed_after, _, _ = _lost_pod_in_tfjob(kube, "lost-ps", 1, lose=("ps", 0), resubmit=False)
    assert "has failed because 1 PS replica(s) failed." in str(error) and failed_after < 30


@pytest.mark.parametrize("kind", ["indexed-job", "tfjob"])
def test_a_bad_flag_fails_once_and_fast(kube: Backend, kind: str) -> None:
    """Exit 2 is not retried: the Job's podFailurePolicy (FailJob) and the TFJob's ExitCode say so."""
    name = f"lost-bad-{kind}"
    config = manifests.run_config(name, **FAULT)
    objects = (manifests.indexed_job(name, config, namespace=NS) if kind == "indexed-job"
               else manifests.tfjob(name, config, namespace=NS))
    job = objects[1] if kind == "indexed-job" else objects
    pod = job["spec"]["template"] if kind == "indexed-job" else job["spec"]["tfReplicaSpecs"]["Worker"]["template"]
    pod["spec"]["containers"][0]["args"] += ["--learning-rate", "5"]
    kube.delete_job(name)
    started = time.monotonic()
    kube.create_job(objects)
    with pytest.raises(cluster.JobFailedError) as err:
        kube.wait_for_job_conditions(name, timeout=120, progress=False)
    seconds = time.monotonic() - started
    real_cluster.record("bad_flag_fails_s", {kind: round(seconds, 1)})
    assert "--learning-rate" in str(err.value)  # the trainer's one-line reason, from the log tail
    if kind == "indexed-job":
        assert "matching FailJob rule" in str(err.value) and err.value.status.replicas["Pod"].failed <= 2
    assert seconds < 60, f"failed after {seconds:.0f} s"
    kube.delete_job(name)
