"""A workshop room as data: every Kubernetes object one attendee gets, as plain dicts.

The same style as :mod:`mnist_lib.manifests` (the objects are what the API server
receives; ``manifests/room/``, the kustomize rendering, is made from them:
:mod:`mnist_lib.room.kustomize`). Per attendee, as Educates gives
each session (a namespace, a resource budget, a role, everything labelled so that
teardown finds it):

- a **Namespace** ``<room>-<attendee>``, labelled with the room and the attendee;
- a **ServiceAccount** ``learner``: the identity in the attendee's kubeconfig;
- a **Role** + **RoleBinding**: exactly what chapters 03-07 do in their namespace
  (:data:`LEARNER_RULES`), nothing cluster-wide but reading nodes and StorageClasses
  (a **ClusterRole** shared by the room, one **ClusterRoleBinding** per attendee), which
  the course's diagnoses read to explain a pod that cannot be scheduled or a claim that
  never binds;
- a **ResourceQuota** and a **LimitRange** sized for one attendee doing chapter 04's
  parameter-server job (:data:`QUOTA`);
- the outputs claim ``mnist-outputs`` (:func:`mnist_lib.manifests.volume_claim`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

from mnist_lib import checks, manifests, settings
from mnist_lib.constants import POD_USER_ID

DEFAULT_ROOM = "mnist-room"
ROOM_LABEL = "mnist-course.dev/room"          # on every object of a room: what `room down` deletes
ATTENDEE_LABEL = "mnist-course.dev/attendee"  # ... and whose it is
LEARNER = "learner"                           # the ServiceAccount, Role and RoleBinding in each namespace
CLUSTER_READER_SUFFIX = "cluster-reader"      # the room's ClusterRole: nodes and StorageClasses, read-only

# One attendee's budget: chapter 04's parameter-server TFJob is the largest thing a chapter
# runs (chief, parameter server and two workers: 4 x manifests.TRAINING_RESOURCES requests),
# beside the TensorBoard of chapter 05, the model server of chapter 06, the volume helper,
# and the attendee's JupyterLab if the room has them (`room up --jupyter`).
QUOTA = {
    "requests.cpu": "2500m",
    "requests.memory": "6Gi",
    "limits.cpu": "16",
    "limits.memory": "24Gi",
    "pods": "12",
    "persistentvolumeclaims": "2",
    "requests.storage": "10Gi",
    "services": "10",
}
# A container that says nothing gets these (Katib's sidecar, a learner's own pod), and none may ask for more
# than a node of the test cluster has: the quota cannot be spent by one pod that never schedules.
LIMIT_RANGE = {
    "default": {"cpu": "1", "memory": "1Gi"},
    "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
    "max": {"cpu": "4", "memory": "8Gi"},
}

# What the chapters do in their namespace, found by reading the backend (mnist_lib.cluster.kubernetes):
# server-side apply is a PATCH that creates (so both verbs), the volume helper is reached by exec,
# TensorBoard and the model server by port-forward, diagnoses read events, quotas and claims.
_EDIT = ["get", "list", "watch", "create", "patch", "update", "delete"]
LEARNER_RULES = [
    {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"], "verbs": _EDIT},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods/exec", "pods/portforward"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["events", "resourcequotas", "limitranges", "serviceaccounts"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": _EDIT},
    {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"], "verbs": _EDIT},
    {"apiGroups": ["kubeflow.org"], "resources": ["tfjobs", "experiments", "trials", "suggestions"], "verbs": _EDIT},
    # A subresource is its own resource to RBAC: the backend reads a Job's and a Deployment's status there.
    {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["get"]},
    {"apiGroups": ["apps"], "resources": ["deployments/status"], "verbs": ["get"]},
    {"apiGroups": ["kubeflow.org"], "resources": ["tfjobs/status"], "verbs": ["get"]},
]
CLUSTER_READER_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
    {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list"]},
]


class RoomError(ValueError):
    """A room or attendee name Kubernetes would refuse, or a room that does not fit its cluster."""


@dataclass(frozen=True)
class Attendee:
    """One attendee of room ``room``: their namespace is ``<room>-<name>``."""

    room: str
    name: str

    @property
    def namespace(self) -> str:
        return f"{self.room}-{self.name}"

    @property
    def labels(self) -> dict[str, str]:
        return {ROOM_LABEL: self.room, ATTENDEE_LABEL: self.name}

    @classmethod
    def of_namespace(cls, room: str, namespace: str) -> "Attendee":
        """The attendee whose namespace ``namespace`` is (``<room>-<name>``)."""
        return cls(room, namespace.removeprefix(f"{room}-"))


def check_room_name(room: str) -> str:
    """``room`` if it can prefix a namespace (a DNS label, leaving room for the attendee's name)."""
    checks.check_dns_label("room name", room, RoomError)
    if len(room) > 40:
        raise RoomError(f"room name {room!r} is {len(room)} characters; at most 40, so that "
                        "'<room>-<attendee>' stays a namespace name (63)")
    return room


def attendees(room: str, count: int | None = None, names: list[str] | None = None) -> list[Attendee]:
    """The room's attendees: ``attendee-1`` .. ``attendee-N``, or the given names (one per line of --names)."""
    check_room_name(room)
    if names is None:
        if count is None or count < 1:
            raise RoomError(f"a room needs at least one attendee, got {count!r}")
        names = [f"attendee-{i}" for i in range(1, count + 1)]
    cleaned = [n.strip().lower() for n in names if n.strip() and not n.strip().startswith("#")]
    if not cleaned:
        raise RoomError("the names file lists nobody (one name per line; # starts a comment)")
    for name in cleaned:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(f"{room}-{name}") > 63:
            raise RoomError(f"attendee name {name!r} cannot make the namespace '{room}-{name}': use lowercase "
                            "letters, digits and '-', and keep room + name under 63 characters")
    duplicates = sorted({n for n in cleaned if cleaned.count(n) > 1})
    if duplicates:
        raise RoomError(f"attendee names appear twice: {', '.join(duplicates)}")
    return [Attendee(room, n) for n in cleaned]


def _meta(name: str, who: Attendee | None, room: str, namespace: str | None = None) -> dict[str, Any]:
    labels = {**manifests.labels(name, "room"), **(who.labels if who else {ROOM_LABEL: room})}
    return {"name": name, **({"namespace": namespace} if namespace else {}), "labels": labels}


def cluster_reader(room: str) -> dict[str, Any]:
    """The room's one ClusterRole: read nodes and StorageClasses (for the course's diagnoses)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": _meta(f"{room}-{CLUSTER_READER_SUFFIX}", None, room), "rules": CLUSTER_READER_RULES}


def attendee_objects(who: Attendee, storage_class: str | None = None) -> list[dict[str, Any]]:
    """Everything one attendee gets, in the order to apply it (the namespace first)."""
    ns = who.namespace
    namespace = manifests.namespace(ns)
    namespace["metadata"]["labels"].update(who.labels)
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(LEARNER, who, who.room, ns)}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(LEARNER, who, who.room, ns),
            "rules": LEARNER_RULES}
    subject = [{"kind": "ServiceAccount", "name": LEARNER, "namespace": ns}]
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": _meta(LEARNER, who, who.room, ns), "subjects": subject,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LEARNER}}
    cluster_binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                       "metadata": _meta(f"{ns}-{CLUSTER_READER_SUFFIX}", who, who.room), "subjects": subject,
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                   "name": f"{who.room}-{CLUSTER_READER_SUFFIX}"}}
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": _meta("attendee-budget", who, who.room, ns),
             "spec": {"hard": dict(QUOTA)}}
    limits = {"apiVersion": "v1", "kind": "LimitRange", "metadata": _meta("attendee-defaults", who, who.room, ns),
              "spec": {"limits": [{"type": "Container", **{k: dict(v) for k, v in LIMIT_RANGE.items()}}]}}
    claim = manifests.volume_claim(storage_class=storage_class, namespace=ns)
    claim["metadata"]["labels"].update(who.labels)
    return [namespace, account, role, binding, cluster_binding, quota, limits, claim]


def room_objects(attendee_list: list[Attendee], storage_class: str | None = None) -> list[dict[str, Any]]:
    """The whole room: its ClusterRole, then each attendee's objects."""
    rooms = {a.room for a in attendee_list}
    if len(rooms) != 1:
        raise RoomError(f"attendees of one room expected, got rooms {sorted(rooms)}")
    objects = [cluster_reader(rooms.pop())]
    for who in attendee_list:
        objects += attendee_objects(who, storage_class)
    return objects


PROBE_SAYS = "image and DNS ok"


def minimum_pods() -> list[dict[str, Any]]:
    """What an attendee runs at the very least at one time: chapter 03's one training pod and the volume
    helper beside it. `room plan` refuses a room whose nodes cannot give everyone their requests."""
    job = manifests.training_job("ch03-job", manifests.run_config("ch03-job"))
    return [{"kind": "Pod", "spec": job["spec"]["template"]["spec"]}, manifests.volume_helper()]


def node_probe(node: str, image: str) -> dict[str, Any]:
    """A pod pinned to ``node`` (no scheduler): it pulls the course image, imports the course and
    resolves the API server's Service name, then exits. `room check` runs one per node."""
    script = ("import socket, mnist_lib; "
              f"print('{PROBE_SAYS}:', socket.gethostbyname('kubernetes.default.svc.cluster.local'))")
    container = {"name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": ["python", "-c", script],
                 "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                 "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    suffix = hashlib.sha256(node.encode()).hexdigest()[:8]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"probe-{suffix}", "labels": {**manifests.labels("room-check", "probe")}},
            "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [container],
                     "securityContext": {"runAsNonRoot": True, "runAsUser": POD_USER_ID,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     **({"imagePullSecrets": [{"name": s} for s in settings.image_pull_secrets()]}
                        if settings.image_pull_secrets() else {})}}


def prepull_daemonset(image: str, namespace: str = "kube-system") -> dict[str, Any]:
    """A DaemonSet that keeps the course image on every node (docs/instructor.md): pull it the day before."""
    container = {"name": "hold", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "infinity"],
                 "resources": {"requests": {"cpu": "0", "memory": "16Mi"}, "limits": {"cpu": "50m", "memory": "64Mi"}}}
    selector = {manifests.NAME_LABEL: "mnist-course-prepull"}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "mnist-course-prepull", "namespace": namespace, "labels": selector},
            "spec": {"selector": {"matchLabels": selector},
                     "template": {"metadata": {"labels": selector},
                                  "spec": {"containers": [container], "terminationGracePeriodSeconds": 0,
                                           "tolerations": [{"operator": "Exists"}]}}}}


# Settings of the instructor's that an in-cluster JupyterLab passes on to its kernel (mnist_lib.settings).
FORWARDED_SETTINGS = (settings.IMAGE_ENV, settings.PULL_SECRETS_ENV, settings.STORAGE_CLASS_ENV,
                      settings.ACCESS_MODE_ENV, settings.SERVING_IMAGE_ENV)


def jupyter_objects(who: Attendee, token: str, image: str | None = None) -> list[dict[str, Any]]:
    """An attendee's JupyterLab in their namespace: the login token's Secret, the Deployment, the Service.

    The kernel runs as the attendee's ServiceAccount: it can do exactly what their kubeconfig can."""
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": _meta(manifests.JUPYTER_TOKEN_SECRET, who, who.room, who.namespace),
              "stringData": {"token": token}}
    env = {name: os.environ[name] for name in FORWARDED_SETTINGS if os.environ.get(name, "").strip()}
    lab = manifests.jupyterlab(service_account=LEARNER, image=image, env=env, namespace=who.namespace)
    for obj in lab:
        obj["metadata"]["labels"].update(who.labels)
    return [secret, *lab]
