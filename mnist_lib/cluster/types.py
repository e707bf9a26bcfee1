"""What both backends speak: the errors they raise and the status they report.

Everything here is plain data, with no API client and no process behind it, so
every part of :mod:`mnist_lib.cluster` (and the notebooks, through
``from mnist_lib import cluster``) can use it without loading a backend.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

Manifest = Mapping[str, Any]
Objects = Union[Manifest, Sequence[Manifest]]

INSTALL_OPERATOR = ('kubectl apply --server-side -k '
                    '"github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.4"')


class JobPhase(enum.StrEnum):
    """A job's conditions, in the Kubeflow spelling (a batch/v1 Job's "Complete" reads as SUCCEEDED).

    A ``str``: ``JobPhase.RUNNING == "Running"``, and it prints as ``Running``.
    """

    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# The phases a job never leaves.
FINISHED = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED})


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

    def __init__(self, message: str, status: JobStatus, logs: str = ""):
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
    phase: JobPhase = JobPhase.CREATED
    replicas: dict[str, ReplicaStatus] = field(default_factory=dict)
    conditions: list[dict[str, str]] = field(default_factory=list)
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.phase == JobPhase.SUCCEEDED

    def summary(self) -> str:
        """One line for a learner: ``TFJob mnist-tfjob: Running (Worker: 2 active)``."""
        replicas = "; ".join(f"{role}: {counts}" for role, counts in self.replicas.items())
        return f"{self.kind} {self.name}: {self.phase}" + (f" ({replicas})" if replicas else "")

    def __str__(self) -> str:
        return self.summary()
