"""The kubernetes backend, without a cluster: the requests it makes and the errors it raises.

These tests need no cluster (they run everywhere, in a second), so
:class:`FakeKubernetesAPI` below plays the API server: a real HTTP server on 127.0.0.1
that answers the Kubernetes REST paths with canned JSON and records every request.
The same backend against a real cluster: tests/test_kubernetes_real_cluster.py. Everything above the socket is real:
the official ``kubernetes`` client objects serialize the requests, and urllib3
sends them, exactly as they would to a cluster.
"""

from __future__ import annotations

import json
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from mnist_lib import cluster
from mnist_lib.cluster.kubernetes import FIELD_MANAGER, KubernetesBackend

NS = "mnist"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply's content type


# What the fake serves in its discovery documents: (group/version, kind, plural, namespaced).
RESOURCES = [
    ("v1", "Namespace", "namespaces", False), ("v1", "Pod", "pods", True), ("v1", "Service", "services", True),
    ("v1", "ConfigMap", "configmaps", True), ("v1", "PersistentVolumeClaim", "persistentvolumeclaims", True),
    ("apps/v1", "Deployment", "deployments", True), ("batch/v1", "Job", "jobs", True),
    ("kubeflow.org/v1", "TFJob", "tfjobs", True),
]


def discovery_documents(resources) -> dict[str, dict]:
    """The discovery answers of an API server serving ``resources`` (what DynamicClient reads first)."""
    documents = {"/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.13"}}
    versions = sorted({gv for gv, *_ in resources})
    for gv in versions:
        path = f"/api/{gv}" if "/" not in gv else f"/apis/{gv}"
        documents[path] = {"kind": "APIResourceList", "groupVersion": gv, "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
            for v, kind, plural, namespaced in resources if v == gv]}
    documents["/apis"] = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
         "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
        for gv in versions if "/" in gv]}
    return documents


class FakeKubernetesAPI:
    """A fake API server (a fake: these tests run without a cluster): canned answers, recorded requests.

    ``routes[(method, path)] = (status, body)``; anything else answers 404 the way
    the API server does for an unknown resource type. Discovery (``/version``, ``/api/v1``,
    ``/apis/...``: what the backend's DynamicClient reads to find each kind's path) is
    answered from ``resources`` and recorded apart, in ``discovery``.
    """

    def __init__(self, resources=RESOURCES) -> None:
        self.requests: list[dict] = []
        self.discovery: list[str] = []
        self.routes: dict[tuple[str, str], tuple[int, object]] = {}
        self.filter_by_labels = False  # lists answer every item unless a test asks for the server's filtering
        self.documents = discovery_documents(resources)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.command == "GET" and url.path in fake.documents:
                    fake.discovery.append(url.path)
                    status, body = 200, fake.documents[url.path]
                else:
                    fake.requests.append({
                        "method": self.command, "path": url.path, "query": parse_qs(url.query),
                        "content_type": self.headers.get("Content-Type"),
                        "body": json.loads(raw) if raw else None})
                    status, body = fake.routes.get((self.command, url.path), (404, not_found()))
                    if fake.filter_by_labels:
                        body = _select(body, parse_qs(url.query).get("labelSelector", [""])[0])
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = do_POST = _answer

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def backend(self) -> KubernetesBackend:
        configuration = client.Configuration(host=self.url)
        return KubernetesBackend(namespace=NS, api_client=client.ApiClient(configuration))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _select(body, selector: str):
    """A list's items that match an equality label selector (``a=b,c=d``), as the API server filters."""
    if not selector or not isinstance(body, dict) or "items" not in body:
        return body
    wanted = dict(term.split("=", 1) for term in selector.split(","))
    return {**body, "items": [item for item in body["items"]
                              if wanted.items() <= ((item.get("metadata") or {}).get("labels") or {}).items()]}


def not_found(name: str | None = None, kind: str | None = None) -> dict:
    details = {"name": name, "kind": kind} if name else {}
    message = f'{kind} "{name}" not found' if name else "the server could not find the requested resource"
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": "NotFound", "details": details, "code": 404}


DELETED = {"kind": "Status", "apiVersion": "v1", "status": "Success"}  # what a DELETE answers


def status_error(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}


@pytest.fixture(autouse=True)
def own_discovery_cache(tmp_path, monkeypatch):
    """The client caches discovery in the temp folder, per server address: a test's own folder, so a
    cache left by an earlier fake on the same port cannot answer for this one."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture
def api():
    fake = FakeKubernetesAPI()
    yield fake
    fake.close()


@pytest.fixture
def api_without_operator():
    fake = FakeKubernetesAPI([r for r in RESOURCES if r[1] != "TFJob"])
    yield fake
    fake.close()


# Hand-written objects of the shape mnist_lib.manifests builds.
def pod_template(args=("--epochs", "1")) -> dict:
    return {"spec": {"containers": [{"name": "tensorflow", "image": "mnist:1",
                                     "command": ["python", "-m", "mnist_lib.train"], "args": list(args)}]}}


def tfjob(name="mnist-tfjob") -> dict:
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": name, "namespace": NS},
            "spec": {"runPolicy": {"cleanPodPolicy": "Running"},
                     "tfReplicaSpecs": {"Worker": {"replicas": 2, "restartPolicy": "OnFailure",
                                                   "template": pod_template()}}}}


def job(name="mnist-job") -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
            "spec": {"backoffLimit": 2, "template": {**pod_template(), "spec": {
                **pod_template()["spec"], "restartPolicy": "OnFailure"}}}}


TFJOB_PATH = f"/apis/kubeflow.org/v1/namespaces/{NS}/tfjobs/mnist-tfjob"
JOB_PATH = f"/apis/batch/v1/namespaces/{NS}/jobs/mnist-job"
PODS_PATH = f"/api/v1/namespaces/{NS}/pods"


# -- requests ----------------------------------------------------------------------

def test_create_tfjob_is_a_server_side_apply(api):
    api.routes[("PATCH", TFJOB_PATH)] = (200, tfjob())
    name = api.backend().create_job(tfjob())
    assert name == "mnist-tfjob"
    (req,) = api.requests
    assert req["method"] == "PATCH" and req["path"] == TFJOB_PATH
    assert req["content_type"] == APPLY_PATCH
    assert req["query"] == {"fieldManager": [FIELD_MANAGER], "force": ["true"]}
    assert req["body"] == tfjob()


def test_each_kind_goes_to_its_rest_path(api):
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "outputs"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mnist-serving-config"},
         "data": {"models.config": "model_config_list {}\n"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mnist-workers"},
         "spec": {"clusterIP": "None", "selector": {"job-name": "mnist-job"}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "tensorboard"},
         "spec": {"selector": {"matchLabels": {"app": "tensorboard"}},
                  "template": {"metadata": {"labels": {"app": "tensorboard"}}, **pod_template()}}},
        job(),
    ]
    paths = [f"/api/v1/namespaces/{NS}", f"/api/v1/namespaces/{NS}/persistentvolumeclaims/outputs",
             f"/api/v1/namespaces/{NS}/configmaps/mnist-serving-config",
             f"/api/v1/namespaces/{NS}/services/mnist-workers",
             f"/apis/apps/v1/namespaces/{NS}/deployments/tensorboard", JOB_PATH]
    for obj, path in zip(objects, paths):
        api.routes[("PATCH", path)] = (200, obj)
    api.backend().apply(objects)
    assert [r["path"] for r in api.requests] == paths
    assert all(r["content_type"] == APPLY_PATCH for r in api.requests)
    # The namespace is filled in where the manifest left it out, so path and body agree.
    assert api.requests[3]["body"]["metadata"]["namespace"] == NS
    assert "namespace" not in api.requests[0]["body"]["metadata"]


def test_model_server_objects_are_applied_and_deleted_in_order(api):
    from mnist_lib import manifests

    objects = manifests.model_server(namespace=NS)
    paths = [f"/api/v1/namespaces/{NS}/configmaps/mnist-serving-config",
             f"/apis/apps/v1/namespaces/{NS}/deployments/mnist-serving",
             f"/api/v1/namespaces/{NS}/services/mnist-serving"]
    for obj, path in zip(objects, paths):
        api.routes[("PATCH", path)] = (200, obj)
        api.routes[("DELETE", path)] = (200, DELETED)
    backend = api.backend()
    assert backend.apply(objects) == ["ConfigMap/mnist-serving-config", "Deployment/mnist-serving",
                                      "Service/mnist-serving"]
    assert [(r["method"], r["path"], r["content_type"]) for r in api.requests] == [
        ("PATCH", path, APPLY_PATCH) for path in paths]  # server-side apply, the ConfigMap first
    assert api.requests[0]["body"]["data"] == objects[0]["data"]
    api.requests.clear()
    backend.delete(objects)
    assert [(r["method"], r["path"]) for r in api.requests] == [("DELETE", path) for path in reversed(paths)]


def test_delete_job_takes_its_pods_and_service_with_it(api):
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mnist-workers"}}
    api.routes[("PATCH", f"/api/v1/namespaces/{NS}/services/mnist-workers")] = (200, service)
    api.routes[("PATCH", JOB_PATH)] = (200, job())
    api.routes[("DELETE", JOB_PATH)] = (200, DELETED)
    backend = api.backend()
    backend.create_job([service, job()])
    api.requests.clear()
    backend.delete_job("mnist-job")
    deletes = [(r["method"], r["path"], r["body"]) for r in api.requests]
    # Without propagationPolicy the API orphans a Job's pods (kubectl sets it for you).
    assert deletes[0] == ("DELETE", JOB_PATH, {"propagationPolicy": "Background"})
    assert deletes[1][1] == f"/api/v1/namespaces/{NS}/services/mnist-workers"  # 404 there is fine


def test_tfjob_status_from_conditions_and_replica_statuses(api):
    running = {**tfjob(), "status": {
        "conditions": [
            {"type": "Created", "status": "True", "reason": "TFJobCreated", "message": "created"},
            {"type": "Running", "status": "True", "reason": "TFJobRunning", "message": "TFJob mnist/mnist-tfjob is running."}],
        "replicaStatuses": {"Worker": {"active": 2}}}}
    api.routes[("GET", TFJOB_PATH)] = (200, running)
    pods = {"kind": "PodList", "apiVersion": "v1", "items": [
        {"metadata": {"name": f"mnist-tfjob-worker-{i}", "labels": {"training.kubeflow.org/replica-type": "worker"}},
         "status": {"containerStatuses": [{"name": "tensorflow", "image": "mnist:1", "imageID": "", "ready": True,
                                           "restartCount": i, "state": {"running": {}}}]}} for i in range(2)]}
    api.routes[("GET", PODS_PATH)] = (200, pods)
    status = api.backend().get_job("mnist-tfjob", kind="TFJob")
    assert status.phase == cluster.JobPhase.RUNNING
    assert status.replicas == {"Worker": cluster.ReplicaStatus(active=2, restarts=1)}
    assert status.summary() == "TFJob mnist-tfjob: Running (Worker: 2 active, 1 restarts)"
    pod_query = [r["query"] for r in api.requests if r["path"] == PODS_PATH][0]
    assert pod_query["labelSelector"] == ["training.kubeflow.org/job-name=mnist-tfjob"]


def test_job_complete_reads_as_succeeded(api):
    done = {**job(), "status": {"succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True", "reason": "Completed", "message": ""}]}}
    api.routes[("GET", JOB_PATH + "/status")] = (200, done)
    api.routes[("GET", PODS_PATH)] = (200, {"kind": "PodList", "items": []})
    status = api.backend().get_job("mnist-job", kind="Job")
    assert status.phase == cluster.JobPhase.SUCCEEDED and status.replicas["Pod"].succeeded == 1


def tfjob_pod(rtype: str, index: int, exit_code: int | None = None, finished: str = "") -> dict:
    """A pod as the operator labels it; with ``exit_code``, its container has ended."""
    labels = {"training.kubeflow.org/job-name": "mnist-tfjob", "training.kubeflow.org/replica-type": rtype,
              "training.kubeflow.org/replica-index": str(index)}
    state = {"terminated": {"exitCode": exit_code, "finishedAt": finished}} if exit_code is not None else {}
    return {"metadata": {"name": f"mnist-tfjob-{rtype}-{index}", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": labels},
            "status": {"containerStatuses": [{"name": "tensorflow", "image": "mnist:1", "imageID": "", "ready": False,
                                              "restartCount": 0, "state": state}]}}


def test_failed_tfjob_raises_with_the_log_tail(api):
    failed = {**tfjob(), "status": {
        "conditions": [{"type": "Failed", "status": "True", "reason": "TFJobFailed",
                        "message": "TFJob mnist/mnist-tfjob has failed because 1 Worker replica(s) failed."}],
        "replicaStatuses": {"Worker": {"failed": 1, "active": 1}}}}
    api.routes[("GET", TFJOB_PATH)] = (200, failed)
    api.routes[("GET", PODS_PATH)] = (200, {"kind": "PodList", "items": [tfjob_pod("worker", 0)]})
    api.routes[("GET", f"{PODS_PATH}/mnist-tfjob-worker-0/log")] = (200, "epoch 1\nerror: out of memory\n")
    with pytest.raises(cluster.JobFailedError) as err:
        api.backend().wait_for_job_conditions("mnist-tfjob", kind="TFJob", progress=False)
    assert "1 Worker replica(s) failed" in str(err.value)
    assert "error: out of memory" in str(err.value)
    log_request = [r for r in api.requests if r["path"].endswith("/log")][0]
    assert log_request["query"]["container"] == ["tensorflow"]
    assert log_request["query"]["tailLines"] == ["30"]
    selectors = [r["query"]["labelSelector"][0] for r in api.requests if r["path"] == PODS_PATH]
    assert ("training.kubeflow.org/job-name=mnist-tfjob,training.kubeflow.org/replica-type=worker,"
            "training.kubeflow.org/replica-index=0") in selectors


def test_the_log_tail_is_the_failed_pods_not_pod_0s(api):
    """Worker 1 failed first; the operator then stopped worker 0 (cleanPodPolicy), whose log says nothing."""
    api.filter_by_labels = True
    failed = {**tfjob(), "status": {
        "conditions": [{"type": "Failed", "status": "True", "message": "1 Worker replica(s) failed."}],
        "replicaStatuses": {"Worker": {"failed": 2}}}}
    api.routes[("GET", TFJOB_PATH)] = (200, failed)
    pods = [tfjob_pod("worker", 0, 143, "2026-01-01T00:00:09Z"), tfjob_pod("worker", 1, 2, "2026-01-01T00:00:07Z")]
    api.routes[("GET", PODS_PATH)] = (200, {"kind": "PodList", "items": pods})
    api.routes[("GET", f"{PODS_PATH}/mnist-tfjob-worker-0/log")] = (200, "stopping: SIGTERM\n")
    api.routes[("GET", f"{PODS_PATH}/mnist-tfjob-worker-1/log")] = (200, "error: --learning-rate 5 ...\n")
    with pytest.raises(cluster.JobFailedError) as err:
        api.backend().wait_for_job_conditions("mnist-tfjob", kind="TFJob", progress=False)
    assert "log lines of worker 1 ---\nerror: --learning-rate" in str(err.value)
    assert "submit it again" not in str(err.value)  # it has a reason of its own: no lost-pod hint


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImageNeverPull"])
def test_image_pull_backoff_is_reported_at_once(api, reason):
    api.routes[("GET", JOB_PATH + "/status")] = (200, {**job(), "status": {"active": 1}})
    pod = {"metadata": {"name": "mnist-job-abcde"}, "status": {"containerStatuses": [
        {"name": "tensorflow", "image": "mnist:typo", "imageID": "", "ready": False, "restartCount": 0,
         "state": {"waiting": {"reason": reason, "message": "image \"mnist:typo\" is not there"}}}]}}
    api.routes[("GET", PODS_PATH)] = (200, {"kind": "PodList", "items": [pod]})
    with pytest.raises(cluster.ImagePullError, match="cannot pull image 'mnist:typo'.*kind load docker-image"):
        api.backend().wait_for_job_conditions("mnist-job", kind="Job", progress=False, timeout=5)


def test_supports_tfjob_asks_for_the_crd(api):
    backend = api.backend()
    assert backend.supports_tfjob() is False  # 404: no such resource type
    api.routes[("GET", f"/apis/kubeflow.org/v1/namespaces/{NS}/tfjobs")] = (200, {"items": []})
    assert backend.supports_tfjob() is True


def test_the_volume_helper_is_one_reused_pod_of_the_course_image(api):
    # The notebook cannot mount the volume: one helper pod per namespace mounts it (the transfers
    # themselves are execs, tested against the real cluster in test_kubernetes_real_cluster.py).
    running = {"kind": "Pod", "metadata": {"name": "mnist-volume"}, "status": {"phase": "Running",
               "containerStatuses": [{"name": "helper", "image": "mnist-course:latest", "imageID": "",
                                      "ready": True, "restartCount": 0, "state": {"running": {}}}]}}
    api.routes[("PATCH", f"{PODS_PATH}/mnist-volume")] = (200, running)
    backend = api.backend()
    gets = []

    def answer_after_apply(name, namespace, **kw):  # 404 first, then the pod it applied
        gets.append(name)
        if len(gets) > 1:
            api.routes[("GET", f"{PODS_PATH}/mnist-volume")] = (200, running)
        return original(name, namespace, **kw)

    original = backend.core.read_namespaced_pod
    backend.core.read_namespaced_pod = answer_after_apply
    assert backend._volume_pod() == "mnist-volume"
    assert backend._volume_pod() == "mnist-volume"  # reused: no second apply
    applied = [r for r in api.requests if r["method"] == "PATCH"]
    assert len(applied) == 1 and applied[0]["content_type"] == APPLY_PATCH
    pod = applied[0]["body"]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "mnist-outputs"
    assert pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == "/outputs"
    assert pod["spec"]["containers"][0]["image"] == "mnist-course:latest"
    assert pod["spec"]["activeDeadlineSeconds"] > 0  # a forgotten helper does not live for ever


def test_port_forward_resolves_a_service_to_a_running_pod(api):
    api.routes[("GET", f"/api/v1/namespaces/{NS}/services/tensorboard")] = (200, {
        "kind": "Service", "metadata": {"name": "tensorboard"},
        "spec": {"selector": {"app": "tensorboard"}, "ports": [{"port": 6006, "targetPort": "http"}]}})
    pod = {"metadata": {"name": "tensorboard-7d9f-abcde"}, "status": {"phase": "Running"},
           "spec": {"containers": [{"name": "tensorboard", "ports": [{"name": "http", "containerPort": 6006}]}]}}
    api.routes[("GET", PODS_PATH)] = (200, {"kind": "PodList", "items": [pod]})
    backend = api.backend()
    assert backend._forward_target("tensorboard", 6006, "Service") == ("tensorboard-7d9f-abcde", 6006)
    with backend.port_forward("tensorboard", 6006) as forward:
        assert forward.local_port > 0 and forward.target == "service/tensorboard:6006"
    selector = [r["query"]["labelSelector"] for r in api.requests if r["path"] == PODS_PATH][0]
    assert selector == ["app=tensorboard"]


# -- errors ------------------------------------------------------------------------------

def test_missing_tfjob_crd_says_how_to_install_the_operator(api_without_operator):
    # Discovery lists no kubeflow.org/v1: the client finds no TFJob resource, nothing is sent.
    with pytest.raises(cluster.OperatorMissingError) as err:
        api_without_operator.backend().create_job(tfjob())
    assert cluster.INSTALL_OPERATOR in str(err.value)
    assert 'kubectl apply --server-side -k "github.com/kubeflow/training-operator.git/manifests/' \
           'overlays/standalone?ref=v1.9.4"' in str(err.value)
    assert api_without_operator.requests == []
    api_without_operator.backend().delete_job("mnist-tfjob", kind="TFJob")  # nothing to delete: fine


def test_a_tfjob_crd_removed_after_discovery_still_says_install_the_operator(api):
    # Discovery (or the client's cache) lists TFJob, but the API server answers 404 for the type.
    with pytest.raises(cluster.OperatorMissingError, match="Install the Kubeflow training operator"):
        api.backend().create_job(tfjob())


def test_a_kind_the_cluster_does_not_serve_is_named(api):
    with pytest.raises(cluster.InvalidObjectError, match="serves no CronTab in stable.example.com/v1"):
        api.backend().apply({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "x"}})


def test_discovery_is_read_once_per_backend(api):
    api.routes[("PATCH", JOB_PATH)] = (200, job())
    backend = api.backend()
    backend.apply(job())
    first = list(api.discovery)
    backend.apply(job())
    backend.apply(job())
    assert api.discovery == first  # the second and third apply ask nothing but the PATCH
    assert len(api.requests) == 3


def test_missing_namespace(api):
    api.routes[("PATCH", JOB_PATH)] = (404, not_found(NS, "namespaces"))
    with pytest.raises(cluster.NotFoundError, match=f"namespace {NS} does not exist"):
        api.backend().create_job(job())


@pytest.mark.parametrize("code, reason, message, error, says", [
    (401, "Unauthorized", "Unauthorized", cluster.ForbiddenError, "credentials"),
    (403, "Forbidden", 'jobs.batch "mnist-job" is forbidden: User "alice" cannot patch resource "jobs"',
     cluster.ForbiddenError, "kubectl auth can-i create jobs -n mnist"),
    (409, "Conflict", "Operation cannot be fulfilled", cluster.ConflictError, "retry"),
    (422, "Invalid", 'Job.batch "mnist-job" is invalid: spec.template: Invalid value: field is immutable',
     cluster.ConflictError, "delete it first"),
    (422, "Invalid", 'Job.batch "mnist-job" is invalid: spec.backoffLimit: Invalid value: -1',
     cluster.InvalidObjectError, "spec.backoffLimit"),
])
def test_api_errors_become_advice(api, code, reason, message, error, says):
    api.routes[("PATCH", JOB_PATH)] = (code, status_error(code, reason, message))
    with pytest.raises(error, match=says.replace("(", r"\(")):
        api.backend().create_job(job())


def test_unreachable_cluster():
    configuration = client.Configuration(host="http://127.0.0.1:1")  # nothing listens on port 1
    configuration.retries = 0
    backend = KubernetesBackend(namespace=NS, api_client=client.ApiClient(configuration))
    with pytest.raises(cluster.ClusterUnreachableError, match="cannot reach the Kubernetes API server"):
        backend.get_job("mnist-job", kind="Job")


def test_no_kubeconfig(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert not cluster.cluster_configured()
    assert cluster.backend_name() == "local"  # with no cluster, the default is local
    with pytest.raises(cluster.NoClusterError, match="MNIST_BACKEND=local"):
        KubernetesBackend()


def test_backend_choice(monkeypatch):
    monkeypatch.setenv("MNIST_BACKEND", "kubernetes")
    assert cluster.backend_name() == "kubernetes"
    assert cluster.backend_name("local") == "local"  # the argument wins
    monkeypatch.setenv("MNIST_BACKEND", "k8s")
    with pytest.raises(cluster.ClusterError, match="choose one of local, kubernetes"):
        cluster.backend_name()


# -- pods that cannot start: diagnosed in seconds (mnist_lib.cluster.diagnose) -------------------

EVENTS_PATH = f"/api/v1/namespaces/{NS}/events"


def test_job_refused_by_a_quota_fails_fast(api, monkeypatch):
    from mnist_lib.cluster import diagnose

    monkeypatch.setattr(diagnose, "LOOK_AFTER", 0.3)
    monkeypatch.setattr(diagnose, "LOOK_EVERY", 0.3)
    created = {**job(), "metadata": {**job()["metadata"], "uid": "uid-job"}, "status": {}}
    api.routes[("GET", JOB_PATH + "/status")] = (200, created)
    api.routes[("GET", PODS_PATH)] = (200, {"kind": "PodList", "items": []})
    refusal = {"metadata": {"name": "mnist-job.1", "resourceVersion": "7"}, "reason": "FailedCreate",
               "type": "Warning", "lastTimestamp": "2026-12-01T10:00:01Z",
               "involvedObject": {"kind": "Job", "name": "mnist-job", "uid": "uid-job"},
               "message": 'Error creating: pods "mnist-job-x" is forbidden: exceeded quota: budget, requested: '
                          'requests.cpu=500m, used: requests.cpu=0, limited: requests.cpu=100m'}
    api.routes[("GET", EVENTS_PATH)] = (200, {"kind": "EventList", "items": [refusal]})
    api.routes[("GET", f"/api/v1/namespaces/{NS}/resourcequotas")] = (200, {"kind": "ResourceQuotaList", "items": [
        {"metadata": {"name": "budget"}, "spec": {"hard": {"requests.cpu": "100m"}},
         "status": {"hard": {"requests.cpu": "100m"}, "used": {"requests.cpu": "0"}}}]})
    with pytest.raises(cluster.QuotaError, match="ResourceQuota budget of namespace mnist refuses them") as err:
        api.backend().wait_for_job_conditions("mnist-job", kind="Job", progress=False, timeout=10,
                                              polling_interval=0.1)
    assert "requests.cpu 100m (used 0)" in str(err.value)
    (events_query,) = [r["query"] for r in api.requests if r["path"] == EVENTS_PATH]
    assert events_query["fieldSelector"] == ["involvedObject.uid=uid-job"]


def test_a_healthy_poll_costs_one_pod_list(api):
    running = {**job(), "metadata": {**job()["metadata"], "uid": "uid-job"}, "status": {"active": 1}}
    api.routes[("GET", JOB_PATH + "/status")] = (200, running)
    pod = {"metadata": {"name": "mnist-job-abcde", "uid": "uid-pod"}, "status": {"phase": "Running"}}
    api.routes[("GET", PODS_PATH)] = (200, {"kind": "PodList", "items": [pod]})
    backend = api.backend()
    status = backend.get_job("mnist-job", kind="Job")
    api.requests.clear()
    for _ in range(3):
        backend.check_pods(status)
    paths = [r["path"] for r in api.requests]
    # the job's spec once (how many pods it should have), then one pod list per poll
    assert paths == [JOB_PATH + "/status", PODS_PATH, PODS_PATH, PODS_PATH]


def test_diagnose_pod_for_a_pod_of_ones_own(api, monkeypatch):
    from mnist_lib.cluster import diagnose

    monkeypatch.setattr(diagnose, "LOOK_AFTER", 0.0)
    api.routes[("GET", f"/api/v1/namespaces/{NS}/persistentvolumeclaims/mnist-outputs")] = (404, not_found(
        "mnist-outputs", "persistentvolumeclaims"))
    helper = {"metadata": {"name": "mnist-volume", "namespace": NS, "uid": "uid-helper"},
              "spec": {"volumes": [{"name": "outputs", "persistentVolumeClaim": {"claimName": "mnist-outputs"}}]},
              "status": {"phase": "Pending", "conditions": [
                  {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                   "message": '0/1 nodes are available: persistentvolumeclaim "mnist-outputs" not found. '
                              "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."}]}}
    problem = api.backend().diagnose_pod(helper)
    assert isinstance(problem, cluster.VolumeError)
    assert "mounts the volume claim mnist-outputs, which does not exist in namespace mnist" in str(problem)
