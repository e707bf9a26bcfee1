"""TF_CONFIG: how one TensorFlow process learns its place in a cluster.

Kubeflow's training operator sets the ``TF_CONFIG`` environment variable in every
replica of a TFJob. It is JSON with the addresses of every replica and the role
of this one::

    {"cluster": {"worker": ["mnist-worker-0.default.svc:2222",
                            "mnist-worker-1.default.svc:2222"]},
     "task": {"type": "worker", "index": 0},
     "environment": "cloud"}

This module is the one place the course both *builds* that JSON (the local
backend plays the operator's part) and *reads* it (the training entrypoint picks
a distribution strategy from it). Pure Python: no TensorFlow import.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

from mnist_lib.constants import TF_PORT

# Roles a TFJob replica can have, in the operator's spelling (it lowercases the
# replica type of the TFJob spec: Chief -> "chief", PS -> "ps", ...).
CHIEF, MASTER, PS, WORKER, EVALUATOR = "chief", "master", "ps", "worker", "evaluator"
KNOWN_ROLES = (CHIEF, MASTER, PS, WORKER, EVALUATOR)

# Strategy names, from the simplest to the most distributed.
SINGLE = "single"
MULTI_WORKER = "multi_worker"
PARAMETER_SERVER = "parameter_server"


class TFConfigError(ValueError):
    """TF_CONFIG is present but cannot describe a cluster this course can train on."""


@dataclass(frozen=True)
class ClusterRole:
    """What TF_CONFIG says about this process, in the terms training needs."""

    strategy: str  # SINGLE, MULTI_WORKER or PARAMETER_SERVER
    task_type: str = WORKER
    task_index: int = 0
    cluster: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_chief(self) -> bool:
        """The one replica that writes checkpoints, TensorBoard logs and the export.

        With a chief (or master) replica, that is it; with workers only, worker 0
        (TensorFlow's own convention for MultiWorkerMirroredStrategy).
        """
        if self.strategy == SINGLE:
            return True
        if self.task_type in (CHIEF, MASTER):
            return True
        has_chief = CHIEF in self.cluster or MASTER in self.cluster
        return not has_chief and self.task_type == WORKER and self.task_index == 0

    @property
    def runs_training_loop(self) -> bool:
        """False for parameter servers and, under PS strategy, for workers.

        Those only start a ``tf.distribute.Server`` and wait: the chief (the
        coordinator) sends them work.
        """
        if self.strategy == PARAMETER_SERVER:
            return self.task_type in (CHIEF, MASTER)
        return self.task_type != PS

    @property
    def num_workers(self) -> int:
        return len(self.cluster.get(WORKER, [])) or 1

    def describe(self) -> str:
        """A one-line, human description for logs."""
        if self.strategy == SINGLE:
            return "single process (no TF_CONFIG)"
        sizes = ", ".join(f"{len(v)} {k}" for k, v in sorted(self.cluster.items()))
        return f"{self.strategy} cluster ({sizes}); this is {self.task_type} {self.task_index}"


def parse_tf_config(environ: Mapping[str, str] | None = None) -> ClusterRole:
    """Read TF_CONFIG from ``environ`` (default ``os.environ``) into a :class:`ClusterRole`.

    - no TF_CONFIG, or a cluster of one replica -> single process;
    - workers only (an optional chief counts as a worker) -> multi-worker mirrored;
    - any ``ps`` replica -> parameter-server strategy (which needs a chief).
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "").strip() or indexed_job_tf_config(environ)
    if not raw:
        return ClusterRole(strategy=SINGLE)
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise TFConfigError(f"TF_CONFIG is not valid JSON ({err}): {raw[:200]!r}") from None
    if not isinstance(config, dict):
        raise TFConfigError(f"TF_CONFIG must be a JSON object, got: {raw[:200]!r}")

    cluster = config.get("cluster") or {}
    task = config.get("task") or {}
    if not isinstance(cluster, dict) or not all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in cluster.values()
    ):
        raise TFConfigError(
            'TF_CONFIG "cluster" must map roles to lists of "host:port" strings, '
            f"got: {cluster!r}"
        )
    unknown = set(cluster) - set(KNOWN_ROLES)
    if unknown:
        raise TFConfigError(
            f"TF_CONFIG names unknown roles {sorted(unknown)}; known: {list(KNOWN_ROLES)}"
        )
    task_type = str(task.get("type", WORKER)).lower()
    try:
        task_index = int(task.get("index", 0))
    except (TypeError, ValueError):
        raise TFConfigError(f'TF_CONFIG task index must be an integer, got {task!r}') from None
    if task_type not in KNOWN_ROLES:
        raise TFConfigError(f"TF_CONFIG task type {task_type!r} is not one of {list(KNOWN_ROLES)}")
    if task_type != EVALUATOR and task_index >= len(cluster.get(task_type, [])):
        raise TFConfigError(
            f"TF_CONFIG says this is {task_type} {task_index}, but the cluster lists "
            f"{len(cluster.get(task_type, []))} {task_type} address(es): {cluster!r}"
        )

    replicas = sum(len(v) for v in cluster.values())
    if replicas <= 1:
        return ClusterRole(SINGLE, task_type, task_index, cluster)
    if cluster.get(PS):
        if not (cluster.get(CHIEF) or cluster.get(MASTER)):
            raise TFConfigError(
                "parameter-server training needs a Chief replica to coordinate it: "
                "add a Chief (replicas: 1) to the TFJob next to PS and Worker"
            )
        if not cluster.get(WORKER):
            raise TFConfigError("parameter-server training needs at least one Worker replica")
        return ClusterRole(PARAMETER_SERVER, task_type, task_index, cluster)
    return ClusterRole(MULTI_WORKER, task_type, task_index, cluster)


def build_tf_config(
    replicas: Mapping[str, int],
    task_type: str,
    task_index: int,
    address: Callable[[str, int], str],
) -> str:
    """Build the TF_CONFIG JSON the Kubeflow training operator (v1) would inject.

    ``replicas`` maps TFJob replica types (``Chief``, ``PS``, ``Worker``...) to
    counts; ``address(role, index)`` gives each replica's ``host:port``: on a
    cluster ``<job>-<role>-<index>.<namespace>.svc:2222``, locally ``localhost:<port>``.
    Like the operator: roles are lowercased, the evaluator is not part of the
    cluster, and a job of a single replica gets no TF_CONFIG at all (``""``).
    """
    counts = {rtype.lower(): int(n) for rtype, n in replicas.items()}
    if sum(counts.values()) <= 1:
        return ""
    cluster = {
        role: [address(role, i) for i in range(n)]
        for role, n in counts.items()
        if role != EVALUATOR
    }
    config = {
        "cluster": cluster,
        "task": {"type": task_type.lower(), "index": int(task_index)},
        "environment": "cloud",
    }
    return json.dumps(config)


def name_addresses(raw: str, address: Callable[[str, int], str]) -> str:
    """TF_CONFIG with each address that is the right one for its slot written as ``<role index>``.

    ``address(role, index)`` is where that replica listens on this backend (on a
    cluster the operator's DNS name, locally a localhost port). What remains is
    what must be the same everywhere: the roles, their counts, the order, the task.
    So two backends' TF_CONFIGs can be compared line for line, and a *wrong*
    address (a swapped index, another port) stays in the text, where it shows.
    """
    config = json.loads(raw)
    for role, addresses in (config.get("cluster") or {}).items():
        config["cluster"][role] = [f"<{role} {i}>" if a == address(role, i) else a
                                   for i, a in enumerate(addresses)]
    return json.dumps(config)


def operator_address(job_name: str, namespace: str, port: int = TF_PORT):
    """The address function the training operator uses: headless-service DNS names."""

    def address(role: str, index: int) -> str:
        return f"{job_name}-{role}-{index}.{namespace}.svc:{port}"

    return address


# -- clusters without the Kubeflow training operator ---------------------------
# An Indexed Job gives each pod JOB_COMPLETION_INDEX (0, 1, ...) and, with a
# headless Service as its subdomain, a stable DNS name per pod. The manifest
# lists those names once in MNIST_WORKER_HOSTS; each pod derives its own TF_CONFIG.
WORKER_HOSTS_ENV = "MNIST_WORKER_HOSTS"


def indexed_job_tf_config(environ: Mapping[str, str]) -> str:
    """TF_CONFIG for a pod of an Indexed Job (multi-worker), or ``""`` if not in one."""
    hosts = [h.strip() for h in environ.get(WORKER_HOSTS_ENV, "").split(",") if h.strip()]
    index = environ.get("JOB_COMPLETION_INDEX", "")
    if not hosts or index == "":
        return ""
    return build_tf_config({WORKER: len(hosts)}, WORKER, int(index),
                           lambda role, i: hosts[i])


def indexed_job_worker_hosts(job_name: str, service: str, workers: int, port: int = TF_PORT) -> str:
    """The MNIST_WORKER_HOSTS value: Indexed Job pods are ``<job>-<index>.<service>``.

    Without the namespace: the pods' DNS search path adds it, so the same Job runs in any namespace.
    """
    return ",".join(f"{job_name}-{i}.{service}:{port}" for i in range(workers))
