"""Run Kubernetes objects: on a real cluster, or as processes on this machine.

The notebooks build Kubernetes objects as plain dicts (:mod:`mnist_lib.manifests`)
and hand them to a *backend*. Both backends have the same verbs, modelled on the
Kubeflow training SDK's ``TrainingClient``, so a chapter reads the same whether
it runs on a laptop or on a cluster::

    from mnist_lib import cluster
    backend = cluster.get_backend()            # MNIST_BACKEND decides
    name = backend.create_job(objects)         # a Job, a TFJob, or [Service, Job]
    status = backend.wait_for_job_conditions(name)
    print(backend.get_job_logs(name, replica="worker", index=0))
    backend.delete_job(name)

- ``local`` (:mod:`mnist_lib.cluster.local`): every pod becomes a process here,
  wired up the way the Kubeflow training operator and Kubernetes would wire it.
- ``kubernetes`` (:mod:`mnist_lib.cluster.kubernetes`): the official client
  talks to the cluster in your kubeconfig.

The backend is chosen in one place, :func:`get_backend`: its argument, else the
``MNIST_BACKEND`` environment variable, else ``kubernetes`` when a cluster is
configured (a kubeconfig, or running inside a pod) and ``local`` otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

from mnist_lib import settings

BACKEND_ENV = "MNIST_BACKEND"
BACKENDS = ("local", "kubernetes")

# The job kinds the backends know how to follow, and the other kinds they apply.
JOB_KINDS = ("Job", "TFJob")

# Conditions, in the Kubeflow spelling (a batch/v1 Job's "Complete" is reported as "Succeeded").
CREATED, RUNNING, RESTARTING, SUCCEEDED, FAILED = "Created", "Running", "Restarting", "Succeeded", "Failed"
FINISHED = (SUCCEEDED, FAILED)

Manifest = Mapping[str, Any]
Objects = Union[Manifest, Sequence[Manifest]]

INSTALL_OPERATOR = ('kubectl apply --server-side -k '
                    '"github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.4"')


# -- errors: what went wrong and what to do next ---------------------------------

class ClusterError(RuntimeError):
    """Base class: every error of this package says what to do next."""


class NoClusterError(ClusterError):
    """The kubernetes backend was asked for, but no cluster is configured."""


class ClusterUnreachableError(ClusterError):
    """A cluster is configured, but its API server does not answer."""


class OperatorMissingError(ClusterError):
    """The cluster has no TFJob resource: the Kubeflow training operator is not installed."""


class ForbiddenError(ClusterError):
    """The API server refused: bad credentials (401) or RBAC forbids the action (403)."""


class ConflictError(ClusterError):
    """An object of that name already exists in a form that cannot be updated."""


class InvalidObjectError(ClusterError):
    """The API server (or the local backend) rejected a manifest as invalid."""


class NotFoundError(ClusterError, LookupError):
    """No such job, pod or service."""


class PodStuckError(ClusterError):
    """A pod of the job cannot start, or cannot even be created, and will not by itself.

    Kubernetes does not fail such a job: it waits for ever. ``wait_for_job_conditions``
    raises this (or one of its subclasses) within seconds instead, saying what is wrong,
    with the values, and what to do; the job itself is left as it is (delete it).
    The diagnoses are in :mod:`mnist_lib.cluster.diagnose`.
    """


class ImagePullError(PodStuckError):
    """A pod's container image cannot be pulled."""


class VolumeError(PodStuckError):
    """A pod's volume claim cannot be bound (no such StorageClass, no default one, the provisioner
    fails) or its volume cannot be attached or mounted (ReadWriteOnce, already on another node)."""


class UnschedulableError(PodStuckError):
    """No node can take a pod: it asks for more CPU or memory than any node has (or has free), or
    taints or a node selector rule every node out."""


class QuotaError(PodStuckError):
    """The namespace's ResourceQuota (or LimitRange) refuses the job's pods: they are never created."""


class JobFailedError(ClusterError):
    """The job ended Failed. ``status`` and ``logs`` (the tail of the failing replica) are attached."""

    def __init__(self, message: str, status: "JobStatus", logs: str = ""):
        super().__init__(message)
        self.status = status
        self.logs = logs


class JobTimeoutError(ClusterError, TimeoutError):
    """The job did not reach the expected condition in time (it keeps running)."""


# -- status: the same shape on both backends -------------------------------------

@dataclass
class ReplicaStatus:
    """Pods of one replica type, counted as the training operator's replicaStatuses do."""

    active: int = 0
    succeeded: int = 0
    failed: int = 0
    restarts: int = 0

    def __str__(self) -> str:
        parts = [f"{n} {word}" for n, word in ((self.active, "active"), (self.succeeded, "succeeded"),
                                               (self.failed, "failed"), (self.restarts, "restarts")) if n]
        return ", ".join(parts) or "0 active"


@dataclass
class JobStatus:
    """Where a job is: its phase (the latest true condition) and its replicas."""

    name: str
    kind: str
    namespace: str
    phase: str = CREATED
    replicas: dict[str, ReplicaStatus] = field(default_factory=dict)
    conditions: list[dict[str, str]] = field(default_factory=list)
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.phase == SUCCEEDED

    def summary(self) -> str:
        """One line for a learner: ``TFJob mnist-tfjob: Running (Worker: 2 active)``."""
        replicas = "; ".join(f"{role}: {counts}" for role, counts in self.replicas.items())
        return f"{self.kind} {self.name}: {self.phase}" + (f" ({replicas})" if replicas else "")

    def __str__(self) -> str:
        return self.summary()


# -- helpers shared by both backends ---------------------------------------------

def as_list(objects: Objects) -> list[dict[str, Any]]:
    """Accept one object or a list of them; check each looks like a Kubernetes object."""
    items = [objects] if isinstance(objects, Mapping) else list(objects)
    if not items:
        raise InvalidObjectError("nothing to submit: pass a Kubernetes object (a dict) or a list of them")
    for obj in items:
        if not isinstance(obj, Mapping) or not obj.get("kind") or not obj.get("apiVersion") \
                or not (obj.get("metadata") or {}).get("name"):
            raise InvalidObjectError(
                "each object needs apiVersion, kind and metadata.name (build them with "
                f"mnist_lib.manifests); got {str(obj)[:200]}")
    return [dict(obj) for obj in items]


def in_namespace(obj: Manifest, namespace: str) -> dict[str, Any]:
    """``obj`` placed in the backend's ``namespace``; one built for another namespace is refused.

    The course's objects carry no namespace (:mod:`mnist_lib.manifests`): like
    ``kubectl apply -n``, the backend puts them in its own, ``MNIST_NAMESPACE``.
    An object naming another one would land where this backend never looks.
    """
    if obj["kind"] == "Namespace":
        return dict(obj)
    given = (obj.get("metadata") or {}).get("namespace")
    if given and given != namespace:
        raise InvalidObjectError(
            f"{obj['kind']} {obj['metadata']['name']} is for namespace {given!r}, but this backend works in "
            f"{namespace!r} ({settings.NAMESPACE_ENV}): build it without namespace=..., or set "
            f"{settings.NAMESPACE_ENV}={given} before the first get_backend() of the kernel.")
    return {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}


def job_in(objects: Sequence[Manifest]) -> Manifest:
    """The one Job or TFJob among ``objects`` (the thing to wait for)."""
    jobs = [o for o in objects if o["kind"] in JOB_KINDS]
    if len(jobs) != 1:
        kinds = [o["kind"] for o in objects]
        raise InvalidObjectError(
            f"create_job needs exactly one Job or TFJob among the objects, got kinds {kinds}; "
            "use apply() for objects that are not jobs (Deployments, Services...)")
    return jobs[0]


def replica_specs(tfjob: Manifest) -> dict[str, dict[str, Any]]:
    """``spec.tfReplicaSpecs`` of a TFJob, checked: {'Chief': {...}, 'Worker': {...}}."""
    specs = (tfjob.get("spec") or {}).get("tfReplicaSpecs") or {}
    known = ("Chief", "Master", "PS", "Worker", "Evaluator")
    if not specs:
        raise InvalidObjectError(f"TFJob {tfjob['metadata']['name']} has no spec.tfReplicaSpecs")
    for rtype in specs:
        if rtype not in known:
            raise InvalidObjectError(f"TFJob replica type {rtype!r} is not one of {list(known)} "
                                     "(the spelling is case-sensitive)")
    return dict(specs)


def main_replica(kind: str, replicas: Iterable[str]) -> str:
    """The replica whose logs tell the story: the chief (or master) if any, else worker."""
    replicas = list(replicas)
    for rtype in ("Chief", "Master", "Worker"):
        if rtype in replicas:
            return rtype
    return replicas[0] if replicas else ("Job" if kind == "Job" else "Worker")


def canonical_replica(replica: str | None, known: Iterable[str]) -> str | None:
    """Match ``"worker"`` to ``"Worker"``, ``"ps"`` to ``"PS"``: replica names are case-insensitive here."""
    if replica is None:
        return None
    for name in known:
        if name.lower() == replica.lower():
            return name
    raise NotFoundError(f"no replica type {replica!r}; this job has {sorted(known)}")


# -- choosing a backend ----------------------------------------------------------

_backends: dict[str, Any] = {}


def cluster_configured() -> bool:
    """True if a kubeconfig exists (``KUBECONFIG`` or ~/.kube/config) or we run inside a pod."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    candidates = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    candidates = candidates or [str(Path.home() / ".kube" / "config")]
    return any(Path(p).expanduser().is_file() for p in candidates)


def backend_name(name: str | None = None) -> str:
    """Which backend :func:`get_backend` would return, and nothing else."""
    chosen = (name or os.environ.get(BACKEND_ENV, "")).strip().lower()
    if not chosen:
        return "kubernetes" if cluster_configured() else "local"
    if chosen not in BACKENDS:
        raise ClusterError(f"unknown backend {chosen!r} (from {'the argument' if name else BACKEND_ENV}); "
                           f"choose one of {', '.join(BACKENDS)}")
    return chosen


def get_backend(name: str | None = None, namespace: str | None = None):
    """The backend to run jobs with: ``local`` or ``kubernetes``.

    ``name`` wins, then the ``MNIST_BACKEND`` environment variable; with neither,
    ``kubernetes`` if a cluster is configured and ``local`` otherwise. One
    instance per backend and namespace per Python process: the local backend
    owns the processes it started, so every notebook cell must talk to the same one.
    """
    chosen = backend_name(name)
    namespace = settings.check_dns_label(namespace, "namespace") if namespace else settings.namespace()
    key = f"{chosen}/{namespace}"
    if key not in _backends:
        if chosen == "local":
            from mnist_lib.cluster.local import LocalBackend

            _backends[key] = LocalBackend(namespace=namespace)
        else:
            from mnist_lib.cluster.kubernetes import KubernetesBackend

            backend = KubernetesBackend(namespace=namespace)
            prepare_namespace(backend)
            _backends[key] = backend
    return _backends[key]


def prepare_namespace(backend) -> list[str]:
    """Create the course's namespace and its shared volume claim if they are missing.

    Every pod of the course mounts the claim ``mnist-outputs`` at ``/outputs``; a
    pod whose claim does not exist stays Pending without a word. So the first
    backend of a kernel makes sure both exist (server-side apply: a no-op when they
    do), as ``kubectl apply -f manifests/namespace.yaml`` would. On a cluster with a
    default StorageClass (kind, cloud) the claim gets a fresh volume; without one it
    binds to a pre-made PersistentVolume of no class (the test cluster's: ``infra/k8s/cluster.sh``).
    A user whose RBAC forbids creating namespaces can still work in one an admin made.
    """
    from mnist_lib import manifests

    applied = []
    try:
        applied += backend.apply(manifests.namespace(backend.namespace))
    except ForbiddenError:
        pass  # not allowed to create namespaces: an admin made it (or the next call says it is missing)
    applied += backend.apply(manifests.volume_claim(namespace=backend.namespace))
    _wait_for_default_service_account(backend)
    return applied


def _wait_for_default_service_account(backend, timeout: float = 30) -> None:
    """A new namespace gets its ``default`` ServiceAccount a moment later (a controller makes it);
    until then every pod is refused ("serviceaccount default not found"). Wait for it."""
    import time

    core = getattr(backend, "core", None)  # the kubernetes backend's CoreV1Api
    if core is None:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            core.read_namespaced_service_account("default", backend.namespace)
            return
        except Exception:  # 404 until the controller made it (403: not ours to check; go on)
            if time.monotonic() > deadline:
                return  # the pod's own error will then say what is wrong
            time.sleep(0.5)


def describe_backend(name: str | None = None) -> str:
    """One line for chapter 00: which backend is in use and why."""
    chosen = backend_name(name)
    why = (f"{BACKEND_ENV}={os.environ[BACKEND_ENV]}" if not name and os.environ.get(BACKEND_ENV)
           else "chosen explicitly" if name
           else "a cluster is configured" if chosen == "kubernetes"
           else "no cluster configured")
    if chosen == "local":
        return (f"local backend ({why}): jobs run as processes on this machine; "
                f"set {BACKEND_ENV}=kubernetes to use a cluster")
    try:
        return f"kubernetes backend ({why}): {get_backend(chosen).describe()}"
    except ClusterError as err:
        return f"kubernetes backend ({why}), but it cannot be used: {err}"


__all__ = [
    "BACKEND_ENV", "INSTALL_OPERATOR", "CREATED", "RUNNING", "RESTARTING", "SUCCEEDED", "FAILED",
    "ClusterError", "NoClusterError", "ClusterUnreachableError", "OperatorMissingError",
    "ForbiddenError", "ConflictError", "InvalidObjectError", "NotFoundError", "ImagePullError",
    "PodStuckError", "VolumeError", "UnschedulableError", "QuotaError",
    "JobFailedError", "JobTimeoutError", "JobStatus", "ReplicaStatus",
    "get_backend", "prepare_namespace", "describe_backend", "backend_name", "cluster_configured",
]
