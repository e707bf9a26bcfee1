"""The kubernetes backend against a real cluster: real API server, real node, real training operator.

No mocks: ``tests/real_cluster.py`` starts (or reuses) a Kubernetes v1.32 cluster
built from source, with a containerd node, CoreDNS and the Kubeflow training
operator v1.9.4. Every test here runs in its own namespace (``mnist-it``), with
the course's claim ``mnist-outputs`` (no storage class: the cluster's default
StorageClass provisions it, as kind's does), so the course notebooks can run in
another namespace on the same cluster at the same time.

Trainings are tiny (MLP, one epoch, 3,000 images): the machine has two cores.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from real_cluster import RealCluster

from mnist_lib import cluster, manifests
from mnist_lib.cluster import JobPhase
from mnist_lib.cluster.kubernetes import FIELD_MANAGER, KubernetesBackend
from mnist_lib.tf_config import build_tf_config, operator_address

pytestmark = pytest.mark.real_cluster

NS = "mnist-it"
TINY = {"architecture": "mlp", "epochs": 1, "train_limit": 3000, "batch_size": 100}


def wait_until(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class Namespace:
    """Our namespace on the cluster: the backend for it and the host folder behind its volume."""

    backend: KubernetesBackend
    cluster: RealCluster
    kubeconfig: Path

    @property
    def folder(self) -> Path:
        """The node's folder behind the claim; it exists once a pod has used the claim."""
        folder = self.cluster.claim_folder(NS)
        assert folder is not None, f"claim {NS}/{manifests.VOLUME_CLAIM} is not bound: no pod has used it yet"
        return folder

    def pods(self, selector: str) -> list[Any]:
        return self.backend.core.list_namespaced_pod(NS, label_selector=selector).items


def _namespace_gone(core) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        core.read_namespace(NS)
    except ApiException as err:
        return err.status == 404
    return False


@pytest.fixture(scope="module")
def it(_real_cluster_base) -> Iterator[Namespace]:
    """Namespace ``mnist-it`` with the course's claim ``mnist-outputs``, which names no storage class.

    The default StorageClass (WaitForFirstConsumer) provisions its volume when the first
    pod that mounts it is scheduled; deleting the namespace deletes the claim, the PV and
    its folder (reclaimPolicy Delete).
    """
    backend = _real_cluster_base.backend(NS)
    core = backend.core
    # A namespace left Terminating by an earlier run would refuse new objects.
    wait_until(f"namespace {NS} from an earlier run to go", lambda: _namespace_gone(core), timeout=180)
    try:
        backend.apply([manifests.namespace(NS), manifests.volume_claim(namespace=NS)])
        yield Namespace(backend, _real_cluster_base, _real_cluster_base.kubeconfig)
    finally:
        backend.delete([manifests.namespace(NS)])
        wait_until(f"namespace {NS} to be deleted", lambda: _namespace_gone(core), timeout=180, every=2)


def job_gone(it: Namespace, name: str, selector: str) -> bool:
    """The job is deleted and so are its pods."""
    try:
        it.backend.get_job(name)
        return False
    except cluster.NotFoundError:
        return not it.pods(selector)


# -- before the operator: the TFJob resource does not exist ------------------------

def test_missing_tfjob_crd_is_explained(cluster_without_operator, it: Namespace) -> None:
    assert it.backend.supports_tfjob() is False
    job = manifests.tfjob("it-no-operator", manifests.run_config("it-no-operator", **TINY), namespace=NS)
    with pytest.raises(cluster.OperatorMissingError) as err:
        it.backend.create_job(job)
    assert "training operator is not installed" in str(err.value)
    assert cluster.INSTALL_OPERATOR in str(err.value)
    assert "indexed_job" in str(err.value)  # the operator-free way is named too


# -- a batch/v1 Job, from start to delete --------------------------------------------

def test_job_runs_with_status_logs_result_and_delete(it: Namespace) -> None:
    name = "it-job"
    config = manifests.run_config(name, **TINY)
    backend = it.backend
    assert backend.create_job(manifests.training_job(name, config, namespace=NS)) == name
    try:
        status = backend.wait_for_job_conditions(name, timeout=600, polling_interval=2)
        assert status.kind == "Job" and status.succeeded
        assert backend.get_job(name).summary() == f"Job {name}: Succeeded (Pod: 1 succeeded)"
        logs = backend.get_job_logs(name)
        assert "Test accuracy" in logs, logs[-2000:]
        result = backend.read_result(config)  # through a helper pod that mounts the claim
        assert result is not None and result["test_accuracy"] > 0.6, result
        on_host = json.loads((it.folder / name / "checkpoints" / "result.json").read_text())
        assert on_host == result  # the same file, seen from the node's folder
        assert it.pods(f"job-name={name}"), "the finished pod should stay until the job is deleted"
    finally:
        backend.delete_job(name)
    wait_until(f"Job {name} and its pods to be deleted", lambda: job_gone(it, name, f"job-name={name}"), 120)


# -- a TFJob through the real operator ------------------------------------------------

def test_tfjob_two_workers_succeeds_with_the_operators_tf_config(real_cluster, it: Namespace) -> None:
    name = "it-tfjob"
    config = manifests.run_config(name, **TINY)
    backend = it.backend
    backend.create_job(manifests.tfjob(name, config, workers=2, namespace=NS))
    try:
        # Read TF_CONFIG while both pods exist: worker 1's pod may be deleted as soon as
        # the job is Succeeded (cleanPodPolicy Running).
        backend.wait_for_job_conditions(name, expected_conditions=(JobPhase.RUNNING, JobPhase.SUCCEEDED), timeout=300)
        tf_configs = {i: backend.replica_env(name, "worker", i)["TF_CONFIG"] for i in range(2)}
        for i, given in tf_configs.items():
            # What the local backend gives its processes (mnist_lib.tf_config), with the
            # operator's DNS names instead of localhost ports.
            expected = build_tf_config({"Worker": 2}, "Worker", i, operator_address(name, NS))
            assert json.loads(given) == json.loads(expected), (i, given)

        status = backend.wait_for_job_conditions(name, timeout=600, polling_interval=2)
        assert status.kind == "TFJob" and status.succeeded
        assert status.replicas["Worker"].succeeded >= 1 and status.replicas["Worker"].failed == 0
        chief_logs = backend.get_job_logs(name, replica="worker", index=0)
        assert "this is worker 0" in chief_logs and "Test accuracy" in chief_logs, chief_logs[-2000:]
        # The known quirk: the TFJob is Succeeded when worker 0 finishes; worker 1's pod
        # may still be running then, and cleanPodPolicy Running deletes it with its logs.
        try:
            assert "this is worker 1" in backend.get_job_logs(name, replica="worker", index=1)
        except cluster.NotFoundError as err:
            assert "no pod found" in str(err)
        result = backend.read_result(config)
        assert result is not None and result["workers"] == 2, result
    finally:
        backend.delete_job(name)
    wait_until(f"TFJob {name} and its pods to be deleted",
               lambda: job_gone(it, name, f"training.kubeflow.org/job-name={name}"), 120)


# -- server-side apply -----------------------------------------------------------------

def test_server_side_apply_twice_changes_nothing(it: Namespace) -> None:
    backend, core = it.backend, it.backend.core
    service = next(o for o in manifests.tensorboard(name="it-ssa", namespace=NS) if o["kind"] == "Service")
    backend.apply(service)
    first = core.read_namespaced_service("it-ssa", NS)
    backend.apply(service)
    second = core.read_namespaced_service("it-ssa", NS)
    assert second.metadata.resource_version == first.metadata.resource_version  # a true no-op
    managers = {(m.manager, m.operation) for m in second.metadata.managed_fields}
    assert (FIELD_MANAGER, "Apply") in managers, managers

    # A Job too (suspended: no pod), through create_job.
    job = manifests.training_job("it-ssa-job", manifests.run_config("it-ssa-job", **TINY), namespace=NS)
    job["spec"]["suspend"] = True
    try:
        backend.create_job(job)
        uid = backend.batch.read_namespaced_job("it-ssa-job", NS).metadata.uid
        backend.create_job(job)
        again = backend.batch.read_namespaced_job("it-ssa-job", NS)
        assert again.metadata.uid == uid and again.metadata.generation == 1
        assert FIELD_MANAGER in {m.manager for m in again.metadata.managed_fields}
        # A different pod template cannot be applied over it: the error says what to do.
        changed = manifests.training_job("it-ssa-job", manifests.run_config("it-ssa-job", **{**TINY, "epochs": 2}),
                                         namespace=NS)
        changed["spec"]["suspend"] = True
        with pytest.raises(cluster.ConflictError, match="delete it first"):
            backend.create_job(changed)
        assert not it.pods("job-name=it-ssa-job")
    finally:
        backend.delete_job("it-ssa-job", kind="Job")
        backend.delete(service)


# -- port-forward ------------------------------------------------------------------------

def _port_forward_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith("port-forward") or t.name.startswith("Kubernetes port forward proxy")]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_port_forward_to_tensorboard_then_deleted_under_an_open_tunnel(
        it: Namespace, monkeypatch: pytest.MonkeyPatch) -> None:
    thread_errors: list[str] = []
    monkeypatch.setattr(threading, "excepthook",
                        lambda args: thread_errors.append(f"{args.thread.name}: {args.exc_type.__name__}: "
                                                          f"{args.exc_value}"))
    backend = it.backend
    objects = manifests.tensorboard(name="it-tensorboard", namespace=NS)
    backend.apply(objects)
    try:
        forward = backend.port_forward("it-tensorboard", manifests.TENSORBOARD_PORT, timeout=180)
        try:
            def answers() -> int | None:
                try:
                    with urllib.request.urlopen(forward.url + "/", timeout=10) as response:
                        return response.status
                except OSError:
                    return None  # the pod runs, but TensorBoard may not listen yet
            assert wait_until("TensorBoard to answer through the tunnel", answers, timeout=120, every=2) == 200

            # Keep one connection open, and delete the Deployment under it.
            conn = socket.create_connection(("127.0.0.1", forward.local_port), timeout=10)
            conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert conn.recv(64).startswith(b"HTTP/1.1 200")
            backend.delete(objects)
            conn.settimeout(120)
            try:  # the tunnel must end (EOF or reset), not hang
                while conn.recv(65536):
                    pass
            except ConnectionResetError:
                pass
            conn.close()
        finally:
            forward.close()
        assert not _port_open(forward.local_port), "the local port still accepts connections"
        wait_until("the port-forward threads to end", lambda: not _port_forward_threads(), timeout=15, every=0.5)
        assert thread_errors == []  # was: ssl.SSLEOFError printed by the client's proxy thread
    finally:
        backend.delete(objects)


# -- errors --------------------------------------------------------------------------------

def _kubeconfig_for_token(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig with the admin's cluster (server, CA) and a ServiceAccount token as the user."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "limited",
        "clusters": [{"name": "it", "cluster": server}],
        "users": [{"name": "limited", "user": {"token": token}}],
        "contexts": [{"name": "limited", "context": {"cluster": "it", "user": "limited", "namespace": NS}}]}))
    return path


def test_rbac_denied_is_explained(it: Namespace, tmp_path: Path) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    core, rbac = it.backend.core, client.RbacAuthorizationV1Api(it.backend.api_client)
    account = "it-limited"
    core.create_namespaced_service_account(NS, {"metadata": {"name": account}})
    # May read pods and create Jobs, but not patch them, and nothing on tfjobs.
    rbac.create_namespaced_role(NS, {"metadata": {"name": account}, "rules": [
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list"]}]})
    rbac.create_namespaced_role_binding(NS, {
        "metadata": {"name": account},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NS}]})
    token = core.create_namespaced_service_account_token(
        account, NS, {"spec": {"expirationSeconds": 600}}).status.token
    kubeconfig = _kubeconfig_for_token(it.kubeconfig, token, tmp_path / "limited.kubeconfig")
    limited = KubernetesBackend(namespace=NS, api_client=config.new_client_from_config(config_file=str(kubeconfig)))

    # The token is accepted (not a 401): reading pods is allowed.
    def can_list_pods() -> bool:
        try:
            limited.core.list_namespaced_pod(NS)
            return True
        except ApiException:
            return False
    wait_until("the new RoleBinding to take effect", can_list_pods, timeout=30)
    config_ = manifests.run_config("it-rbac", **TINY)
    with pytest.raises(cluster.ForbiddenError) as err:
        limited.create_job(manifests.tfjob("it-rbac", config_, namespace=NS))
    message = str(err.value)
    assert "RBAC forbids you to create TFJob it-rbac" in message
    assert f"system:serviceaccount:{NS}:{account}" in message  # the API server's own words are kept
    assert f"kubectl auth can-i create tfjobs -n {NS}" in message

    # Jobs: `create` is granted, but server-side apply is a PATCH: the advice names both verbs.
    with pytest.raises(cluster.ForbiddenError) as err:
        limited.create_job(manifests.training_job("it-rbac", config_, namespace=NS))
    assert "cannot patch" in str(err.value)
    assert f"kubectl auth can-i patch jobs -n {NS}" in str(err.value)
    with pytest.raises(cluster.NotFoundError):  # nothing was created
        it.backend.get_job("it-rbac", kind="Job")


def test_image_not_on_the_node_fails_fast(it: Namespace) -> None:
    name = "it-no-image"
    job = manifests.training_job(name, manifests.run_config(name, **TINY), namespace=NS,
                                 image="mnist-course:no-such-tag")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "Never"  # never ask a registry: nothing leaves the machine
    backend = it.backend
    backend.create_job(job)
    started = time.monotonic()
    try:
        with pytest.raises(cluster.ImagePullError) as err:
            backend.wait_for_job_conditions(name, timeout=120, polling_interval=1)
        assert time.monotonic() - started < 60
        assert "ErrImageNeverPull" in str(err.value) and "mnist-course:no-such-tag" in str(err.value)
        assert f"delete_job({name!r})" in str(err.value)
    finally:
        backend.delete_job(name)
    wait_until(f"Job {name} and its pods to be deleted", lambda: job_gone(it, name, f"job-name={name}"), 120)


def test_crashing_job_raises_with_its_log_tail(it: Namespace) -> None:
    name = "it-crash"
    job = manifests.training_job(name, manifests.run_config(name, **TINY), namespace=NS)
    job["spec"]["backoffLimit"] = 0
    pod = job["spec"]["template"]["spec"]
    pod["restartPolicy"] = "Never"
    pod["containers"][0]["command"] = ["python", "-c",
                                       "import sys; print('loading the data'); "
                                       "sys.exit('error: the training data is corrupt (it-crash)')"]
    pod["containers"][0].pop("args", None)
    backend = it.backend
    backend.create_job(job)
    try:
        with pytest.raises(cluster.JobFailedError) as err:
            backend.wait_for_job_conditions(name, timeout=180, polling_interval=1)
        assert err.value.status.phase == cluster.JobPhase.FAILED
        assert "the training data is corrupt (it-crash)" in err.value.logs
        assert "loading the data" in str(err.value) and f"Job {name} failed" in str(err.value)
    finally:
        backend.delete_job(name)
    wait_until(f"Job {name} and its pods to be deleted", lambda: job_gone(it, name, f"job-name={name}"), 120)


# -- pods that can never start: explained in seconds (mnist_lib.cluster.diagnose) -------------

STALL_LIMIT = 30  # seconds: each stall must be explained well within this


def _fails_fast(backend: KubernetesBackend, name: str, error: type, kind: str | None = None) -> tuple[str, float]:
    """Wait for job ``name`` (submitted just now): it must raise ``error`` within STALL_LIMIT seconds."""
    started = time.monotonic()
    with pytest.raises(error) as err:
        backend.wait_for_job_conditions(name, timeout=120, polling_interval=1, kind=kind)
    seconds = time.monotonic() - started
    import real_cluster

    real_cluster.record("stall_diagnosis_s", {f"{error.__name__} {kind or 'Job'} {name}": round(seconds, 1)})
    print(f"{error.__name__} for {kind or 'Job'} {name} after {seconds:.1f} s:\n{err.value}")
    assert seconds < STALL_LIMIT, f"{error.__name__} came after {seconds:.1f} s: {err.value}"
    assert isinstance(err.value, cluster.PodStuckError)
    return str(err.value), seconds


def test_claim_naming_a_missing_storage_class_fails_fast(it: Namespace) -> None:
    from kubernetes import client

    name = "it-no-class"
    claim = manifests.volume_claim(storage_class="no-such-class", namespace=NS)
    claim["metadata"]["name"] = name
    job = manifests.training_job(name, manifests.run_config(name, **TINY), namespace=NS)
    for volume in job["spec"]["template"]["spec"]["volumes"]:
        if volume.get("persistentVolumeClaim"):
            volume["persistentVolumeClaim"]["claimName"] = name
    backend = it.backend
    classes = client.StorageV1Api(backend.api_client).list_storage_class().items
    backend.apply(claim)
    backend.create_job(job)
    try:
        message, _ = _fails_fast(backend, name, cluster.VolumeError)
        assert f"its volume claim {name} (namespace {NS}) is Pending" in message
        assert 'it names StorageClass "no-such-class", which does not exist' in message
        for sc in classes:  # the classes that do exist are named, the default marked
            assert sc.metadata.name in message
            if (sc.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true":
                assert f"{sc.metadata.name} (the default;" in message
        assert "MNIST_STORAGE_CLASS" in message and f"kubectl -n {NS} delete pvc {name}" in message
        assert f"delete_job({name!r})" in message
    finally:
        backend.delete_job(name)
        backend.delete(claim)
    wait_until(f"Job {name} and its pods to be deleted", lambda: job_gone(it, name, f"job-name={name}"), 120)
    wait_until(f"claim {name} to be deleted", lambda: not [
        c for c in backend.core.list_namespaced_persistent_volume_claim(NS).items if c.metadata.name == name], 60)


def test_more_cpu_than_the_node_has_fails_fast(it: Namespace) -> None:
    name = "it-64-cpus"
    resources = {"requests": {"cpu": "64", "memory": "1Gi"}, "limits": {"cpu": "64", "memory": "3Gi"}}
    job = manifests.training_job(name, manifests.run_config(name, **TINY), namespace=NS, resources=resources)
    backend = it.backend
    nodes = backend.core.list_node().items
    largest = max(nodes, key=lambda n: float(n.status.allocatable["cpu"].rstrip("m")) /
                  (1000 if n.status.allocatable["cpu"].endswith("m") else 1))
    backend.create_job(job)
    try:
        message, _ = _fails_fast(backend, name, cluster.UnschedulableError)
        assert "cannot be scheduled" in message and "Insufficient cpu" in message
        assert "it requests 64 CPUs" in message
        assert f"the largest node ({largest.metadata.name}) has" in message and "allocatable" in message
        assert "already request" in message  # what the node's pods hold, read from the cluster
        assert "it fits on no node" in message and "bigger node" in message and "lower the pod's resources" in message
    finally:
        backend.delete_job(name)
    wait_until(f"Job {name} and its pods to be deleted", lambda: job_gone(it, name, f"job-name={name}"), 120)


QUOTA_NS = "mnist-it-quota"


def test_quota_smaller_than_one_pod_fails_fast(real_cluster: RealCluster) -> None:
    """A namespace whose ResourceQuota is smaller than one training pod: no pod is ever created,
    for a Job (the Job controller's FailedCreate) or a TFJob (the operator's FailedCreatePod)."""
    backend = real_cluster.backend(QUOTA_NS)
    core = backend.core

    def gone() -> bool:
        return not [n for n in core.list_namespace().items if n.metadata.name == QUOTA_NS]

    wait_until(f"namespace {QUOTA_NS} from an earlier run to go", gone, timeout=180)
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "it-budget", "namespace": QUOTA_NS},
             "spec": {"hard": {"requests.cpu": "100m", "requests.memory": "4Gi", "pods": "4"}}}
    try:
        backend.apply(manifests.namespace(QUOTA_NS))
        core.create_namespaced_resource_quota(QUOTA_NS, quota)
        # Until the quota controller has counted it and the ServiceAccount exists, pods are refused
        # for other reasons ("status unknown for quota", "serviceaccount not found").
        wait_until("the quota to be counted", lambda: (core.read_namespaced_resource_quota(
            "it-budget", QUOTA_NS).status.hard or {}).get("requests.cpu"), timeout=60)
        wait_until("the default ServiceAccount", lambda: [
            s for s in core.list_namespaced_service_account(QUOTA_NS).items if s.metadata.name == "default"], 60)
        jobs = [("Job", manifests.training_job("it-quota-job", manifests.run_config("it-quota-job", **TINY),
                                               namespace=QUOTA_NS))]
        if backend.supports_tfjob():
            jobs.append(("TFJob", manifests.tfjob("it-quota-tfjob", manifests.run_config("it-quota-tfjob", **TINY),
                                                  workers=1, namespace=QUOTA_NS)))
        for kind, job in jobs:
            name = job["metadata"]["name"]
            backend.create_job(job)
            try:
                message, _ = _fails_fast(backend, name, cluster.QuotaError, kind=kind)
                assert f"{kind} {name} cannot create its pods: the ResourceQuota it-budget of namespace " \
                       f"{QUOTA_NS} refuses them, one pod alone asks for more than the quota allows" in message
                assert "requests.cpu: a pod asks for 500m, the quota allows 100m" in message
                assert "The quota it-budget allows: pods 4 (used 0), requests.cpu 100m (used 0)" in message
                assert "fewer replicas" in message and "instructor" in message
                assert not core.list_namespaced_pod(QUOTA_NS).items  # no pod was ever made
            finally:
                backend.delete_job(name, kind=kind)

            def job_deleted() -> bool:
                try:
                    backend.get_job(name, kind=kind)
                    return False
                except cluster.NotFoundError:
                    return True
            wait_until(f"{kind} {name} to be deleted", job_deleted, 120)
    finally:
        backend.delete([manifests.namespace(QUOTA_NS)])
        wait_until(f"namespace {QUOTA_NS} to be deleted", gone, timeout=180, every=2)
