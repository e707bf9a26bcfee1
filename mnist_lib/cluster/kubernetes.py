"""The kubernetes backend: the same verbs, through the official ``kubernetes`` client.

- Objects are sent with **server-side apply** (``PATCH`` with content type
  ``application/apply-patch+yaml`` and a field manager), what
  ``kubectl apply --server-side`` does: submitting the same manifest twice is safe.
  Any kind the cluster serves goes the same way, custom resources (TFJob) included:
  the client's ``DynamicClient`` finds its REST path from the API server's discovery
  documents, as kubectl does, read once per backend (and cached on disk by the client).
- Status comes from the objects themselves: a TFJob's ``status.conditions``
  (Created, Running, Restarting, Succeeded, Failed) and ``replicaStatuses``, a
  Job's ``Complete``/``Failed`` conditions and pod counts.
- Logs come from the pods, found by the labels the operator and the Job
  controller put on them; ``stream_job_logs`` follows them with ``kubernetes.watch``.
- ``port_forward`` tunnels through the API server (the pod's ``portforward``
  subresource over a websocket, with the client's own proxy), like
  ``kubectl port-forward``; no network route to the pods is needed.

Errors from the API become the exceptions of :mod:`mnist_lib.cluster`, each with
a message saying what to do (install the operator, fix RBAC, check the image...).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import quote

import pydantic
import urllib3
from kubernetes import client, config, dynamic, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.stream import ws_client
from websocket import WebSocketException

from mnist_lib import manifests
from mnist_lib.cluster import diagnose
from mnist_lib.cluster.base import Backend, PortForward, as_list, canonical_replica, in_namespace, main_replica
from mnist_lib.cluster.types import (INSTALL_OPERATOR, ClusterError, ClusterUnreachableError, ConflictError,
                                     ForbiddenError, InvalidObjectError, JobPhase, JobStatus, JobTimeoutError, Manifest,
                                     NoClusterError, NotFoundError, Objects, OperatorMissingError,
                                     ReplicaStatus)
from mnist_lib.cluster.volume import VolumeClient, websocket_headers
from mnist_lib.constants import DEFAULT_NAMESPACE
from mnist_lib.waiting import wait_until

FIELD_MANAGER = "mnist-course"
TFJOB = ("kubeflow.org", "v1", "tfjobs")  # group, version, plural
TFJOB_CONTAINER = "tensorflow"  # the container the operator gives TF_CONFIG to
# The API versions of the job kinds, for delete_job(name) when only the name is known.
JOB_API_VERSIONS = {"TFJob": "/".join(TFJOB[:2]), "Job": "batch/v1"}
PHASES = {phase.value for phase in JobPhase}  # the TFJob conditions that are phases
SERVICE_ACCOUNT_TIMEOUT = 30.0  # a new namespace's "default" ServiceAccount is made within a second or two
VOLUME_START_TIMEOUT = 180.0  # the volume helper pod's first start (an image pull on a fresh node)
POD_DELETION_TIMEOUT = 90.0  # a deleted training job's pods: training exits at once on SIGTERM


def load_api_client(context: str | None = None) -> client.ApiClient:
    """An API client for the cluster in your kubeconfig (or this pod's service account)."""
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
            config.load_incluster_config()
            return client.ApiClient()
        return config.new_client_from_config(context=context)
    except (ConfigException, FileNotFoundError, OSError) as err:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise NoClusterError(
            f"no Kubernetes cluster is configured ({where}: {err}). Point KUBECONFIG at your cluster's "
            "config (kind, minikube and cloud CLIs write one), or use the local backend: "
            "unset MNIST_BACKEND or set MNIST_BACKEND=local.") from None


class KubernetesBackend(Backend):
    """Runs the course's objects on a real cluster. Get it with ``get_backend("kubernetes")``."""

    name = "kubernetes"

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, api_client: client.ApiClient | None = None,
                 context: str | None = None, field_manager: str = FIELD_MANAGER):
        self.namespace = namespace
        self.field_manager = field_manager  # server-side apply's owner of the fields it sets
        self.api_client = api_client or load_api_client(context)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self._dynamic: dynamic.DynamicClient | None = None  # made on the first apply or delete
        self._kinds: dict[str, str] = {}  # job name -> kind, for the jobs this client created
        self._companions: dict[str, list[dict[str, Any]]] = {}  # job name -> objects submitted with it
        self._volume: VolumeClient | None = None
        self._volume_pod_ready = False

    def describe(self) -> str:
        return f"API server {self.api_client.configuration.host}, namespace {self.namespace}"

    # -- errors -------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, verb: str, kind: str, name: str, namespace: str | None = None) -> Iterator[None]:
        """Turn what the client raises into an error that says what to do next."""
        namespace = namespace or self.namespace
        try:
            yield
        except ApiException as err:
            raise self._translate(err, verb, kind, name, namespace) from None
        except urllib3.exceptions.HTTPError as err:
            raise ClusterUnreachableError(
                f"cannot reach the Kubernetes API server at {self.api_client.configuration.host} "
                f"({type(err).__name__}: {getattr(err, 'reason', err)}). Is the cluster running? "
                "Check with `kubectl cluster-info`, or use the local backend (MNIST_BACKEND=local).") from None
        except pydantic.ValidationError as err:  # an answer the client's models cannot read
            raise ClusterError(f"unexpected answer from the API server for {kind} {name}: "
                               f"{str(err).splitlines()[0]}. Is this a Kubernetes API server of version 1.27 or later?") from None

    @staticmethod
    def _operator_missing() -> OperatorMissingError:
        return OperatorMissingError(
            "this cluster has no TFJob resource (kubeflow.org/v1): the Kubeflow training operator is "
            f"not installed. Install the Kubeflow training operator with: {INSTALL_OPERATOR} "
            "- or use the operator-free path, manifests.indexed_job().")

    def _translate(self, err: ApiException, verb: str, kind: str, name: str, namespace: str) -> ClusterError:
        try:
            body = json.loads(err.body or "{}")
        except ValueError:
            body = {}
        message = body.get("message") or err.reason or ""
        details = body.get("details") or {}
        where = f"{kind} {name} in namespace {namespace}"
        if err.status == 0:
            return ClusterUnreachableError(f"cannot talk to the API server at {self.api_client.configuration.host}: "
                                           f"{err.reason}. Check the cluster address and certificates in your kubeconfig.")
        if err.status == 401:
            return ForbiddenError(
                f"the API server did not accept your credentials (401 Unauthorized) when trying to {verb} {where}: "
                "the token or certificate in your kubeconfig is missing, expired or revoked. Log in again "
                "(e.g. your cloud's get-credentials command) and retry; in a workshop, ask the instructor for a "
                "new kubeconfig (`python -m mnist_lib.room up --new-tokens` writes them).")
        if err.status == 403:
            check = f"`kubectl auth can-i {verb} {kind.lower()}s -n {namespace}`"
            if verb == "create":  # apply() is a server-side apply: a PATCH that creates, so both verbs
                check += (f" and `kubectl auth can-i patch {kind.lower()}s -n {namespace}` "
                          "(server-side apply needs both)")
            return ForbiddenError(
                f"RBAC forbids you to {verb} {where}: {message}. Check with {check} "
                "and ask your cluster admin for a Role that allows it.")
        if err.status == 404:
            if kind == "TFJob" and not details.get("name"):
                return self._operator_missing()
            if details.get("kind") == "namespaces":
                return NotFoundError(f"namespace {details.get('name')} does not exist: apply a Namespace object "
                                     f"first (or `kubectl create namespace {details.get('name')}`).")
            return NotFoundError(f"{where} does not exist: {message}")
        if err.status == 400 and "waiting to start" in message:  # logs of a container not started yet
            return NotFoundError(f"{where} has no log yet: {message}")
        if err.status == 409:
            return ConflictError(f"cannot {verb} {where}: {message}. Another tool changed it, or it is being "
                                 "deleted: wait a moment and retry, or delete it first.")
        if err.status == 422:
            if "immutable" in message:
                return ConflictError(f"{where} already exists with a different spec, and a Job's pod template "
                                     f"cannot change: delete it first (delete_job({name!r})) or use a new name. "
                                     f"({message})")
            return InvalidObjectError(f"the API server rejected {where} as invalid: {message}")
        return ClusterError(f"could not {verb} {where}: HTTP {err.status} {err.reason}: {message}")

    # -- the namespace ----------------------------------------------------------------
    def prepare_namespace(self) -> list[str]:
        """Create the course's namespace and its shared volume claim if they are missing.

        Every pod of the course mounts the claim ``mnist-outputs`` at ``/outputs``; a
        pod whose claim does not exist stays Pending without a word. So the first
        backend of a kernel makes sure both exist (server-side apply: a no-op when they
        do), as ``kubectl apply -f manifests/namespace.yaml`` would. The claim gets a
        volume of ``MNIST_STORAGE_CLASS``, else of the cluster's default StorageClass (kind,
        cloud clusters and the test cluster have one). A user whose RBAC forbids creating
        namespaces can still work in one an admin made.
        """
        applied = []
        try:
            applied += self.apply(manifests.namespace(self.namespace))
        except ForbiddenError:
            pass  # not allowed to create namespaces: an admin made it (or the next call says it is missing)
        applied += self.apply(manifests.volume_claim(namespace=self.namespace))
        self._wait_for_default_service_account()
        return applied

    def _wait_for_default_service_account(self, timeout: float = SERVICE_ACCOUNT_TIMEOUT) -> None:
        """A new namespace gets its ``default`` ServiceAccount a moment later (a controller makes it);
        until then every pod is refused ("serviceaccount default not found"). Wait for it."""
        def exists() -> bool:
            with self._errors("get", "ServiceAccount", "default"):
                self.core.read_namespaced_service_account("default", self.namespace)
            return True

        try:
            wait_until(exists, timeout, retry_on=(NotFoundError,))
        except (ForbiddenError, TimeoutError):
            pass  # not ours to check, or still missing: a pod's own error will then say what is wrong

    # -- apply and delete ---------------------------------------------------------
    @property
    def dynamic(self) -> dynamic.DynamicClient:
        """The client's DynamicClient: one REST path for any kind, from the API's discovery documents.

        Made on first use, once per backend: its discovery (a few requests, then cached)
        must not slow each apply down."""
        if self._dynamic is None:
            with self._errors("list", "APIGroup", "*"):  # discovery: the groups, kinds and paths served
                self._dynamic = dynamic.DynamicClient(self.api_client)
        return self._dynamic

    def _resource(self, obj: Manifest, verb: str) -> dynamic.Resource:
        """The API resource that serves ``obj``'s apiVersion and kind: its REST path, and whether it is namespaced.

        None served: :class:`OperatorMissingError` for a TFJob, else :class:`InvalidObjectError`."""
        kind, api_version = obj["kind"], obj["apiVersion"]
        with self._errors(verb, kind, obj["metadata"]["name"]):
            try:
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                if kind == "TFJob":
                    raise self._operator_missing() from None
                raise InvalidObjectError(
                    f"this cluster serves no {kind} in {api_version}: check the manifest's apiVersion and kind "
                    "(`kubectl api-resources` lists what it serves); a custom resource needs its operator "
                    "installed first.") from None

    def apply(self, objects: Objects, dry_run: bool = False) -> list[str]:
        """Server-side apply each object, in order (put a Namespace first).

        ``dry_run``: the API server checks everything (validation, RBAC, quota) and stores nothing."""
        items = as_list(objects)
        applied = []
        for obj in items:
            resource = self._resource(obj, "create")
            if resource.namespaced:
                obj = in_namespace(obj, self.namespace)  # the path and the body must agree on the namespace
            kind, name = obj["kind"], obj["metadata"]["name"]
            namespace = self.namespace if resource.namespaced else None
            with self._errors("create", kind, name):
                resource.server_side_apply(body=obj, name=name, namespace=namespace, field_manager=self.field_manager,
                                           force_conflicts=True, **({"dry_run": "All"} if dry_run else {}))
            if kind in JOB_API_VERSIONS:
                self._kinds[name] = kind
                self._companions[name] = [o for o in items if o["kind"] == "Service"]
            applied.append(f"{kind}/{name}")
        return applied

    def delete(self, objects: Objects) -> None:
        """Delete objects (last first), with their pods; objects already gone are fine."""
        for obj in reversed(as_list(objects)):
            self._delete_one(obj)

    def _delete_one(self, obj: Manifest) -> None:
        # Background propagation: the pods go too. (Deleting a Job through the API
        # without it orphans its pods, unlike kubectl.)
        name = obj["metadata"]["name"]
        try:
            resource = self._resource(obj, "delete")
            namespace = self.namespace if resource.namespaced else None
            with self._errors("delete", obj["kind"], name):
                resource.delete(name=name, namespace=namespace, body={"propagationPolicy": "Background"})
        except (NotFoundError, OperatorMissingError, InvalidObjectError):
            pass  # already gone (or a kind this cluster does not serve: never made): deleting is idempotent

    def delete_job(self, name: str, kind: str | None = None, timeout: float = POD_DELETION_TIMEOUT) -> None:
        """Delete the job, its pods, and the Services submitted with it by this client.

        Returns once a training job's pods are gone, as the local backend does: a job submitted
        again under the same name gets pods of the same names, which must not meet the old ones."""
        kinds = [kind or self._kinds.get(name)] if (kind or name in self._kinds) else ["TFJob", "Job"]
        for k in kinds:
            self._delete_one({"apiVersion": JOB_API_VERSIONS[k], "kind": k, "metadata": {"name": name}})
        for companion in self._companions.pop(name, []):
            self._delete_one(companion)
        self._kinds.pop(name, None)
        selectors = [self._selector(k, name) for k in kinds if k in ("TFJob", "Job")]

        def pods_gone() -> bool:
            try:
                return not any(self._pods(selector) for selector in selectors)
            except NotFoundError:
                return True  # the namespace itself is gone, and its pods with it

        def timed_out() -> JobTimeoutError:
            return JobTimeoutError(
                f"the pods of {name} are still there {timeout:.0f} s after it was deleted; see "
                f"`kubectl -n {self.namespace} get pods -l {selectors[0]}`")

        if selectors:
            wait_until(pods_gone, timeout, interval=0.5, on_timeout=timed_out)

    def delete_pod(self, name: str, replica: str | None = None, index: int = 0, kind: str | None = None) -> str:
        pod, _ = self._pod_of(name, replica, index, kind)
        with self._errors("delete", "Pod", pod):
            # With the pod's own grace period, as `kubectl delete pod`: the container gets SIGTERM first.
            self.core.delete_namespaced_pod(pod, self.namespace)
        return pod

    # -- status ---------------------------------------------------------------------
    def _read(self, name: str, kind: str | None) -> tuple[str, dict[str, Any]]:
        kinds = [kind] if kind else ([self._kinds[name]] if name in self._kinds else ["TFJob", "Job", "Deployment"])
        for k in kinds:
            try:
                with self._errors("get", k, name):
                    if k == "TFJob":
                        return k, self.custom.get_namespaced_custom_object(*TFJOB[:2], self.namespace, TFJOB[2], name)
                    if k == "Job":
                        obj = self.batch.read_namespaced_job_status(name, self.namespace)
                    else:
                        obj = self.apps.read_namespaced_deployment_status(name, self.namespace)
                    return k, self.api_client.sanitize_for_serialization(obj)
            except (NotFoundError, OperatorMissingError):
                if kind:
                    raise
        raise NotFoundError(f"no job named {name!r} in namespace {self.namespace!r} (looked for {kinds})")

    def get_job(self, name: str, kind: str | None = None) -> JobStatus:
        kind, obj = self._read(name, kind)
        status = obj.get("status") or {}
        conditions = [{k: str(c.get(k, "")) for k in ("type", "status", "reason", "message")}
                      for c in status.get("conditions") or []]
        true = [c for c in conditions if c["status"] == "True"]
        restarts = self._restarts(kind, name, obj)
        if kind == "TFJob":
            phases = [JobPhase(c["type"]) for c in true if c["type"] in PHASES]  # (not e.g. Suspended)
            phase = phases[-1] if phases else JobPhase.CREATED
            replicas = {rtype: ReplicaStatus(int(s.get("active") or 0), int(s.get("succeeded") or 0),
                                             int(s.get("failed") or 0), restarts.get(rtype.lower(), 0))
                        for rtype, s in (status.get("replicaStatuses") or {}).items()}
        else:
            types = {c["type"] for c in true}
            active = int(status.get("active") or 0) if kind == "Job" else int(status.get("availableReplicas") or 0)
            phase = (JobPhase.SUCCEEDED if "Complete" in types else JobPhase.FAILED if "Failed" in types
                     else JobPhase.RUNNING if active else JobPhase.CREATED)
            replicas = {"Pod": ReplicaStatus(active, int(status.get("succeeded") or 0),
                                             int(status.get("failed") or 0), sum(restarts.values()))}
        message = true[-1]["message"] if true else ""
        return JobStatus(name, kind, self.namespace, phase, replicas, conditions, message)

    def _selector(self, kind: str, name: str, obj: Mapping[str, Any] | None = None) -> str:
        """The label selector of a job's pods, as the operator / the Job controller label them."""
        if kind == "TFJob":
            return f"training.kubeflow.org/job-name={name}"
        if kind == "Job":
            return f"job-name={name}"
        labels = (((obj or {}).get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return ",".join(f"{k}={v}" for k, v in labels.items())

    def _pods(self, selector: str) -> list[dict[str, Any]]:
        with self._errors("list", "Pod", selector):
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        return self.api_client.sanitize_for_serialization(pods).get("items") or []

    def _restarts(self, kind: str, name: str, obj: Mapping[str, Any]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pod in self._pods(self._selector(kind, name, obj)):
            rtype = (pod["metadata"].get("labels") or {}).get("training.kubeflow.org/replica-type", "pod")
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                counts[rtype] = counts.get(rtype, 0) + int(cs.get("restartCount") or 0)
        return counts

    def check_pods(self, status: JobStatus) -> None:
        """Raise a :class:`PodStuckError` (:class:`ImagePullError`, :class:`VolumeError`,
        :class:`UnschedulableError`, :class:`QuotaError`) when a pod of the job cannot start, or
        cannot be created, and never will by itself. See :mod:`mnist_lib.cluster.diagnose`."""
        problem = self.stalls.check_job(status.kind, status.name, status.phase)
        if problem:
            raise problem

    def diagnose_pod(self, pod: Mapping[str, Any], job: str | None = None) -> ClusterError | None:
        """Why ``pod`` (its JSON, as read from the API) cannot start, or None: the error to raise.

        For any loop that waits for a pod of its own (e.g. a helper pod): call it on every
        poll; it looks closer (events, claims, nodes) only after a few seconds of Pending,
        and at most every few seconds."""
        return self.stalls.check_pod(pod, job)

    @functools.cached_property
    def stalls(self) -> diagnose.StallWatch:
        """The pod diagnoses of this backend (one: it keeps how long each pod has waited)."""
        return diagnose.StallWatch(self)

    # -- logs -------------------------------------------------------------------------
    def _pod_of(self, name: str, replica: str | None, index: int, kind: str | None) -> tuple[str, str | None]:
        kind = kind or self._kinds.get(name) or self.get_job(name).kind
        selector = self._selector(kind, name)
        container = None
        if kind == "TFJob":
            status = self.get_job(name, kind)
            rtype = canonical_replica(replica, status.replicas) or main_replica(kind, status.replicas)
            selector += (f",training.kubeflow.org/replica-type={rtype.lower()}"
                         f",training.kubeflow.org/replica-index={index}")
            container = TFJOB_CONTAINER
        elif kind == "Job":
            pods = self._pods(selector)
            if any("batch.kubernetes.io/job-completion-index" in (p["metadata"].get("labels") or {}) for p in pods):
                selector += f",batch.kubernetes.io/job-completion-index={index}"
        pods = self._pods(selector)
        if not pods:
            raise NotFoundError(f"no pod found for {kind} {name} ({selector}); it may not have started yet")
        newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return newest["metadata"]["name"], container

    def _failed_index(self, status: JobStatus, replica: str) -> int:
        """The index label of the pod of ``replica`` whose container failed first (by finishedAt)."""
        selector = self._selector(status.kind, status.name)
        if status.kind == "TFJob":
            selector += f",training.kubeflow.org/replica-type={replica.lower()}"
        failed: list[tuple[str, int]] = []
        for pod in self._pods(selector):
            labels = pod["metadata"].get("labels") or {}
            index = labels.get("training.kubeflow.org/replica-index", labels.get("batch.kubernetes.io/job-completion-index"))
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                for state in (cs.get("state"), cs.get("lastState")):
                    ended = (state or {}).get("terminated") or {}
                    if ended.get("exitCode") and index is not None:
                        failed.append((str(ended.get("finishedAt") or ""), int(index)))
        return min(failed)[1] if failed else 0

    def get_job_logs(self, name: str, replica: str | None = None, index: int = 0,
                     tail: int | None = None, kind: str | None = None) -> str:
        pod, container = self._pod_of(name, replica, index, kind)
        with self._errors("read logs of", "Pod", pod):
            return self.core.read_namespaced_pod_log(pod, self.namespace, container=container, tail_lines=tail)

    def stream_job_logs(self, name: str, replica: str | None = None, index: int = 0,
                        kind: str | None = None) -> Iterator[str]:
        pod, container = self._pod_of(name, replica, index, kind)
        with self._errors("follow logs of", "Pod", pod):
            yield from watch.Watch().stream(self.core.read_namespaced_pod_log, pod, self.namespace,
                                            container=container)

    def replica_env(self, name: str, replica: str | None = None, index: int = 0,
                    kind: str | None = None) -> dict[str, str]:
        """The environment of the replica's pod, as the operator (or the Job controller) filled it in."""
        pod, container = self._pod_of(name, replica, index, kind)
        with self._errors("get", "Pod", pod):
            spec = self.api_client.sanitize_for_serialization(
                self.core.read_namespaced_pod(pod, self.namespace)).get("spec") or {}
        containers = spec.get("containers") or [{}]
        chosen = next((c for c in containers if c.get("name") == container), containers[0])
        env = {v["name"]: v.get("value", "") for v in chosen.get("env") or []}
        if "JOB_COMPLETION_INDEX" in env:  # Kubernetes fills it in from the pod's annotation
            env["JOB_COMPLETION_INDEX"] = env["JOB_COMPLETION_INDEX"] or str(index)
        return {k: v for k, v in env.items() if k in ("TF_CONFIG", "JOB_COMPLETION_INDEX") or k.startswith("MNIST_")}

    def supports_tfjob(self) -> bool:
        """True if the cluster serves kubeflow.org/v1 tfjobs (the training operator's CRD is installed)."""
        try:
            with self._errors("list", "TFJob", "*"):
                self.custom.list_namespaced_custom_object(*TFJOB[:2], self.namespace, TFJOB[2], limit=1)
            return True
        except OperatorMissingError:
            return False

    # -- the shared volume ---------------------------------------------------------------
    # The notebook cannot mount it: files travel through one long-lived helper pod
    # (mnist_lib.cluster.volume). Each call is one exec, never a new pod.
    @property
    def volume(self) -> VolumeClient:
        if self._volume is None:
            self._volume = VolumeClient(self.api_client.configuration, self.namespace, self._volume_pod)
        return self._volume

    def pull(self, *volume_paths: str, missing_ok: bool = False) -> list[Path]:
        return self.volume.pull(*volume_paths, missing_ok=missing_ok)

    def put(self, local_folder: Path | str, dest: str, version: bool = False) -> str:
        return self.volume.put(Path(local_folder), dest, version)

    def copy_version(self, source: str, dest: str) -> str:
        return self.volume.copy_version(source, dest)

    def remove_outputs(self, volume_paths: Iterable[str]) -> None:
        self.volume.remove(list(volume_paths))

    def _volume_pod(self, recheck: bool = False, timeout: float = VOLUME_START_TIMEOUT) -> str:
        """The helper pod's name, once it runs: reused if it does, (re)created if not.

        Once seen running it is trusted (no API call per transfer) until ``recheck``."""
        name = manifests.VOLUME_HELPER
        if self._volume_pod_ready and not recheck:
            return name
        self._volume_pod_ready = False
        # A loop of its own, not waiting.wait_until: a poll may also create, delete or diagnose the pod.
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._errors("get", "Pod", name):
                    current = self.api_client.sanitize_for_serialization(
                        self.core.read_namespaced_pod(name, self.namespace))
            except NotFoundError:
                self.apply(manifests.volume_helper())
                continue
            status = current.get("status") or {}
            phase = status.get("phase")
            if phase == "Running" and all(cs.get("ready") for cs in status.get("containerStatuses") or [{}]):
                self._volume_pod_ready = True
                return name
            if phase in ("Succeeded", "Failed") or (current["metadata"].get("deletionTimestamp")):
                self._delete_one_pod(name)  # ended (its deadline passed) or going: start a fresh one
                time.sleep(1)
                continue
            problem = self.diagnose_pod(current)  # an image it cannot pull, an unbound claim, no room...
            if problem is not None:
                raise problem
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the volume helper pod {name} is still {phase} after {timeout:.0f} s: is the claim "
                    f"{manifests.VOLUME_CLAIM} bound? See `kubectl -n {self.namespace} describe pod {name}` "
                    f"and `kubectl -n {self.namespace} get pvc`.")
            time.sleep(0.5)

    def _delete_one_pod(self, name: str) -> None:
        with contextlib.suppress(ClusterError):
            with self._errors("delete", "Pod", name):
                self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)

    # -- port-forward -----------------------------------------------------------------
    def port_forward(self, name: str, port: int, kind: str = "Service", timeout: float = 60) -> PortForward:
        """Listen on a free local port; each connection is tunnelled to the pod through the API server.

        ``close()`` stops listening, ends open connections and joins every thread it
        started, so no port and no thread outlives the ``with`` block.
        """
        pod, target = wait_until(  # a Deployment's pod may still be starting
            lambda: self._forward_target(name, port, kind), timeout, interval=1.0, retry_on=(NotFoundError,),
            on_timeout=lambda: NotFoundError(f"{kind} {name}: no running pod serves port {port} after "
                                             f"{timeout:.0f} s; look at its pods (kubectl -n {self.namespace} "
                                             "get pods) and their events"))
        forwarder = _Forwarder(self.api_client.configuration, self.namespace, pod, target)
        return PortForward(forwarder.local_port, f"{kind.lower()}/{name}:{port}", close=forwarder.close)

    def _forward_target(self, name: str, port: int, kind: str) -> tuple[str, int]:
        if kind == "Pod":
            return name, port
        with self._errors("get", kind, name):
            if kind == "Service":
                spec = self.api_client.sanitize_for_serialization(
                    self.core.read_namespaced_service(name, self.namespace)).get("spec") or {}
                entry = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
                if entry is None:
                    raise NotFoundError(f"Service {name} has no port {port}")
                selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items())
                target = entry.get("targetPort", port)
            else:
                obj = self.api_client.sanitize_for_serialization(
                    self.apps.read_namespaced_deployment(name, self.namespace))
                selector, target = self._selector("Deployment", name, obj), port
        running = [p for p in self._pods(selector) if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            raise NotFoundError(f"{kind} {name}: no running pod matches {selector} yet; wait and retry")
        pod = running[0]
        if isinstance(target, str):  # a named port: look it up in the pod's containers
            target = next((p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or []
                           if p.get("name") == target), port)
        return pod["metadata"]["name"], int(target)


class _QuietPortForward(ws_client.PortForward):
    """The client's port-forward proxy, made to end quietly when the connection drops.

    The client's proxy thread only expects a clean websocket close. When the pod
    goes away while a tunnel is open (its Deployment deleted), the API server drops
    the TLS connection and the thread died with ``ssl.SSLEOFError`` printed on the
    learner's screen, leaving our end of the tunnel open and waiting forever. Here
    any error ends the thread, and the local sockets are closed so the waiting
    side sees the end of the stream.
    """

    def __init__(self, websocket: Any, ports: list[int]):
        self.done = threading.Event()  # set when the proxy thread has ended
        super().__init__(websocket, ports)  # starts the proxy thread

    def _proxy(self) -> None:
        try:
            super()._proxy()
        except (OSError, WebSocketException, RuntimeError, ValueError):
            pass  # the pod or the API server went away: end the tunnel, say nothing
        finally:
            for port in self.local_ports.values():
                with contextlib.suppress(OSError):
                    port.python.close()
            with contextlib.suppress(Exception):
                self.websocket.close()
            self.done.set()


class _Forwarder:
    """The local end of one ``port_forward``: a listening socket, an accepting thread, a thread per connection.

    Each connection opens its own websocket to the pod's ``portforward`` subresource,
    built from the client's configuration directly. Not ``kubernetes.stream.portforward``:
    that swaps ``call_api`` on the shared ApiClient while it connects, so a status
    call from the notebook's thread at that moment went down the websocket path.
    """

    def __init__(self, configuration: client.Configuration, namespace: str, pod: str, port: int):
        self.configuration, self.namespace, self.pod, self.port = configuration, namespace, pod, port
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(8)
        self.local_port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()  # client connections and tunnel ends still open
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name=f"port-forward {pod}:{port}", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._open.add(conn)
                thread = threading.Thread(target=self._tunnel, args=(conn,), daemon=True,
                                          name=f"port-forward {self.pod}:{self.port} connection")
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _connect(self) -> _QuietPortForward:
        """A websocket to ``pods/<pod>/portforward?ports=<port>``, authenticated as the client is."""
        url = (f"{self.configuration.host}/api/v1/namespaces/{quote(self.namespace)}/pods/"
               f"{quote(self.pod)}/portforward?ports={self.port}")
        websocket = ws_client.create_websocket(self.configuration, ws_client.get_websocket_url(url),
                                               websocket_headers(self.configuration))
        return _QuietPortForward(websocket, [self.port])

    def _tunnel(self, conn: socket.socket) -> None:
        forward = remote = None
        try:
            forward = self._connect()
            remote = forward.socket(self.port)
            remote.setblocking(True)
            with self._lock:
                if self._closed:
                    return
                self._open.add(remote)
            sockets = [conn, remote]
            while True:
                readable, _, _ = select.select(sockets, [], [], 60)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    (remote if s is conn else conn).sendall(data)
        except Exception:  # in a thread of its own, any error only ends this connection: say nothing
            return  # the client sees its connection close; the next one tries again
        finally:
            for s in (conn, remote):
                if s is not None:
                    with self._lock:
                        self._open.discard(s)
                    with contextlib.suppress(OSError):
                        s.close()
            if forward is not None:
                forward.close()  # our end of the proxy's socket pair: its thread then ends
                forward.done.wait(timeout=10)

    def close(self) -> None:
        """Stop listening, end open connections, and wait for every thread to finish."""
        with self._lock:
            self._closed = True
            still_open, self._open = list(self._open), set()
            threads = list(self._threads)
        # shutdown() wakes the thread blocked in accept(); close() alone does not on Linux,
        # and that thread would keep the port open.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        for s in still_open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for thread in [self._acceptor, *threads]:
            thread.join(timeout=10)
