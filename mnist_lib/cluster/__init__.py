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
What both backends report and raise (``JobPhase``, ``JobStatus``, the errors) is
defined in :mod:`mnist_lib.cluster.types` and re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeAlias

from mnist_lib import settings
from mnist_lib.cluster.base import Backend
from mnist_lib.cluster.types import (FINISHED, INSTALL_OPERATOR, ClusterError, ClusterUnreachableError,
                                     ConflictError, ForbiddenError, ImagePullError, InvalidObjectError,
                                     JobFailedError, JobPhase, JobStatus, JobTimeoutError, Manifest,
                                     NoClusterError, NotFoundError, Objects, OperatorMissingError,
                                     PodStuckError, QuotaError, ReplicaStatus, UnschedulableError,
                                     VolumeError)

BACKEND_ENV = "MNIST_BACKEND"
BACKENDS = ("local", "kubernetes")

# What a function that works "through a backend" accepts: a backend, a backend's name, or None
# for get_backend()'s choice (MNIST_BACKEND, else whether a cluster is configured).
BackendChoice: TypeAlias = "Backend | str | None"


# -- choosing a backend ----------------------------------------------------------

_backends: dict[str, Backend] = {}


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


def get_backend(name: str | None = None, namespace: str | None = None) -> Backend:
    """The backend to run jobs with: ``local`` or ``kubernetes``.

    ``name`` wins, then the ``MNIST_BACKEND`` environment variable; with neither,
    ``kubernetes`` if a cluster is configured and ``local`` otherwise. One
    instance per backend and namespace per Python process: the local backend
    owns the processes it started, so every notebook cell must talk to the same one.
    The kubernetes backend first makes sure its namespace and the shared volume's
    claim exist (:meth:`~mnist_lib.cluster.kubernetes.KubernetesBackend.prepare_namespace`).
    """
    chosen = backend_name(name)
    namespace = settings.check_dns_label(namespace, "namespace") if namespace else settings.namespace()
    key = f"{chosen}/{namespace}"
    if key not in _backends:
        # Each backend is imported only when chosen: a laptop on the local backend never loads the
        # kubernetes client, and a training pod (which imports this package through mnist_lib.runs)
        # loads neither, nor psutil, which the course image does not install.
        if chosen == "local":
            from mnist_lib.cluster.local import LocalBackend

            _backends[key] = LocalBackend(namespace=namespace)
        else:
            from mnist_lib.cluster.kubernetes import KubernetesBackend

            backend = KubernetesBackend(namespace=namespace)
            backend.prepare_namespace()
            _backends[key] = backend
    return _backends[key]


def backend_for(choice: BackendChoice) -> Backend:
    """The backend ``choice`` means: itself if it is one, else :func:`get_backend` of it."""
    return choice if isinstance(choice, Backend) else get_backend(choice)


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
    "BACKEND_ENV", "INSTALL_OPERATOR", "JobPhase", "FINISHED", "Manifest", "Objects",
    "ClusterError", "NoClusterError", "ClusterUnreachableError", "OperatorMissingError",
    "ForbiddenError", "ConflictError", "InvalidObjectError", "NotFoundError", "ImagePullError",
    "PodStuckError", "VolumeError", "UnschedulableError", "QuotaError",
    "JobFailedError", "JobTimeoutError", "JobStatus", "ReplicaStatus",
    "Backend", "BackendChoice", "backend_for", "get_backend", "describe_backend", "backend_name", "cluster_configured",
]
