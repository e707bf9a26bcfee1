"""What the instructor's commands do on the cluster: plan, up, check, status, down.

Each returns data (a :class:`Plan`, a list of :class:`Check`, rows of :class:`AttendeeStatus`)
that ``python -m mnist_lib.room`` prints as a table or as JSON. All of it talks to the
API server with the instructor's kubeconfig, through the course's Kubernetes backend (so a
refusal or an unreachable cluster reads as it does in the chapters).
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from mnist_lib import manifests, settings
from mnist_lib.cluster import diagnose
from mnist_lib.cluster.kubernetes import KubernetesBackend, load_api_client
from mnist_lib.cluster.types import INSTALL_OPERATOR, ClusterError, ForbiddenError, NotFoundError
from mnist_lib.room import kubeconfigs
from mnist_lib.manifests import JUPYTER_TOKEN_SECRET
from mnist_lib.room.objects import (QUOTA, ROOM_LABEL, Attendee, RoomError, attendee_objects,
                                    cluster_reader, jupyter_objects, minimum_pods, node_probe)
from mnist_lib.waiting import wait_until

FIELD_MANAGER = "mnist-room"
NAMESPACE_GONE_TIMEOUT = 180.0  # `room down`: a namespace goes once its pods have stopped (training exits on SIGTERM)
JUPYTER_START_TIMEOUT = 300.0   # `room up --jupyter`: every attendee's JupyterLab answers (an image pull, a start)
PROBE_TIMEOUT = 240.0           # `room check`: a node pulls the course image (minutes on a cold node)


# -- talking to the cluster ---------------------------------------------------------------------

class Cluster:
    """The instructor's connection: one API client, one backend per namespace (sharing its discovery)."""

    def __init__(self, api_client: client.ApiClient | None = None, context: str | None = None):
        self.api_client = api_client or load_api_client(context)
        self.core = client.CoreV1Api(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)
        self.calls = 0  # API requests made, for the benchmark
        self._backends: dict[str, KubernetesBackend] = {}
        self._count_calls()

    def _count_calls(self) -> None:
        rest = self.api_client.rest_client
        request = rest.request

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return request(*args, **kwargs)

        rest.request = counted  # every HTTP request of every API class (and the dynamic client) goes through here

    def backend(self, namespace: str) -> KubernetesBackend:
        if namespace not in self._backends:
            # Its own field manager: when an attendee's chapter applies the claim again (prepare_namespace), the
            # fields only the room set (its labels, a --storage-class) stay the room's and are not removed.
            backend = KubernetesBackend(namespace=namespace, api_client=self.api_client, field_manager=FIELD_MANAGER)
            if self._backends:  # discovery once per room, not once per attendee
                backend._dynamic = next(iter(self._backends.values())).dynamic
            self._backends[namespace] = backend
        return self._backends[namespace]

    def ask(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()``, with an API error turned into the backend's explained errors."""
        with self.backend("default")._errors("read", what, "*"):
            return self.api_client.sanitize_for_serialization(call())

    def room_namespaces(self, room: str, terminating: bool = False) -> list[str]:
        """The room's namespaces; those being deleted only if ``terminating``."""
        answer = self.ask("Namespace", lambda: self.core.list_namespace(label_selector=f"{ROOM_LABEL}={room}"))
        return sorted(item["metadata"]["name"] for item in answer.get("items") or []
                      if terminating or (item.get("status") or {}).get("phase") != "Terminating")


# -- plan ---------------------------------------------------------------------------------------

@dataclass
class Plan:
    room: str
    attendees: list[str]
    objects: dict[str, int]                     # kind -> how many `room up` applies
    allocatable: dict[str, str]                 # the nodes' total, as Kubernetes writes quantities
    quota_total: dict[str, str]                 # attendees x QUOTA
    minimum_total: dict[str, str]               # attendees x one chapter-03 pod: what must fit at once
    storage_class: str | None                   # the class the claims get (None: the cluster's default)
    operator: bool
    problems: list[str] = field(default_factory=list)  # refusals: `room up` does not start
    notes: list[str] = field(default_factory=list)     # worth knowing, not refusals

    @property
    def fits(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fits": self.fits}


def _cpu(value: Decimal) -> str:
    return f"{value.normalize():f}" if value == value.to_integral() else f"{int(value * 1000)}m"


def _gib(value: Decimal) -> str:
    return f"{(value / (1 << 30)).quantize(Decimal('0.1'))}Gi"


def requests_of(pods: list[dict[str, Any]]) -> dict[str, Decimal]:
    """The CPU and memory the containers of ``pods`` request together (what the scheduler reserves)."""
    containers = [c for pod in pods for c in pod["spec"]["containers"]]
    return {r: sum((parse_quantity(c["resources"]["requests"].get(r, "0")) for c in containers), Decimal(0))
            for r in ("cpu", "memory")}


def default_storage_class(cluster: Cluster) -> str | None:
    classes = cluster.ask("StorageClass", lambda: client.StorageV1Api(cluster.api_client).list_storage_class())
    return next((item["metadata"]["name"] for item in classes.get("items") or [] if diagnose.is_default_class(item)),
                None)


def plan(cluster: Cluster, attendee_list: list[Attendee], storage_class: str | None = None) -> Plan:
    """What `room up` would create, and whether the cluster can hold the room (with the numbers)."""
    objects: dict[str, int] = {}
    for obj in [cluster_reader(attendee_list[0].room)] + [o for a in attendee_list for o in attendee_objects(a)]:
        objects[obj["kind"]] = objects.get(obj["kind"], 0) + 1
    nodes = cluster.ask("Node", cluster.core.list_node).get("items") or []
    ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True"
                                      for c in (n.get("status") or {}).get("conditions") or [])
             and not (n.get("spec") or {}).get("unschedulable")]
    cpu = sum((parse_quantity(n["status"]["allocatable"]["cpu"]) for n in ready), Decimal(0))
    memory = sum((parse_quantity(n["status"]["allocatable"]["memory"]) for n in ready), Decimal(0))
    count = len(attendee_list)
    quota_cpu, quota_memory = parse_quantity(QUOTA["requests.cpu"]), parse_quantity(QUOTA["requests.memory"])
    minimum = requests_of(minimum_pods())
    need_cpu, need_memory = count * minimum["cpu"], count * minimum["memory"]
    the_plan = Plan(
        room=attendee_list[0].room, attendees=[a.name for a in attendee_list], objects=objects,
        allocatable={"nodes": str(len(ready)), "cpu": _cpu(cpu), "memory": _gib(memory)},
        quota_total={"cpu": _cpu(count * quota_cpu), "memory": _gib(count * quota_memory)},
        minimum_total={"cpu": _cpu(need_cpu), "memory": _gib(need_memory)},
        storage_class=storage_class or default_storage_class(cluster),
        operator=cluster.backend(attendee_list[0].namespace).supports_tfjob())
    if not ready:
        the_plan.problems.append("no node is Ready and schedulable (`kubectl get nodes`)")
    if need_cpu > cpu or need_memory > memory:
        the_plan.problems.append(
            f"too small: {count} attendees each running chapter 03's one training pod need {_cpu(need_cpu)} CPU "
            f"and {_gib(need_memory)} of memory at once; the ready nodes have {_cpu(cpu)} CPU and {_gib(memory)} "
            f"allocatable. Add nodes, or make the room smaller (at most "
            f"{int(min(cpu / minimum['cpu'], memory / minimum['memory']))} attendees).")
    elif count * quota_cpu > cpu or count * quota_memory > memory:
        the_plan.notes.append(
            f"overcommitted: the quotas add up to {_cpu(count * quota_cpu)} CPU and {_gib(count * quota_memory)} "
            f"against {_cpu(cpu)} CPU and {_gib(memory)}; attendees running chapter 04 at the same moment "
            "queue (their pods wait Pending and the chapter says why). See docs/instructor.md for sizing.")
    if the_plan.storage_class is None:
        the_plan.problems.append("the cluster has no default StorageClass, and none was given (--storage-class): "
                                 "the attendees' claims would never bind (`kubectl get storageclass`)")
    if not the_plan.operator:
        the_plan.notes.append("the Kubeflow training operator is not installed: chapters 04 and 07's TFJobs "
                              "will fail (the Indexed Job of chapter 04 still works)")
    return the_plan


# -- up -----------------------------------------------------------------------------------------

@dataclass
class UpReport:
    room: str
    applied: int
    kubeconfigs: list[str]
    renewed: list[str]
    archive: str
    seconds: float
    api_calls: int


def up(cluster: Cluster, attendee_list: list[Attendee], folder: Path, hours: float = 8,
       storage_class: str | None = None, dry_run: bool = False, new_tokens: bool = False,
       jupyter: bool = False) -> UpReport:
    """Create (or complete) the room: server-side apply is a no-op for what exists, so running it
    twice changes nothing, and a longer attendee list adds only the newcomers. A kubeconfig is
    written again only when its token lasts less than half of ``hours`` (or ``new_tokens``).
    ``jupyter``: also a JupyterLab per attendee in their namespace (:func:`wait_for_jupyter`)."""
    if not 1 / 6 <= hours <= 7 * 24:
        raise RoomError(f"--hours {hours} : a token lasts between 10 minutes and a week (the API server's limits)")
    started = time.monotonic()
    room = attendee_list[0].room
    applied = len(cluster.backend("default").apply([cluster_reader(room)], dry_run=dry_run))
    written, renewed = [], []
    for who in attendee_list:
        objects = attendee_objects(who, storage_class)
        namespace, rest = objects[0], objects[1:]
        applied += len(cluster.backend(who.namespace).apply([namespace], dry_run=dry_run))
        if dry_run and who.namespace not in cluster.room_namespaces(room):
            continue  # a dry-run namespace is not made, so nothing can be dry-run inside it
        applied += len(cluster.backend(who.namespace).apply(rest, dry_run=dry_run))
        if dry_run:
            continue
        token = kubeconfigs.existing_token(folder, who)
        if new_tokens or not kubeconfigs.still_valid(token, hours):
            with cluster.backend(who.namespace)._errors("create", "ServiceAccount token", who.namespace):
                token = kubeconfigs.request_token(cluster.core, who, hours)
            kubeconfigs.write(folder, who, kubeconfigs.kubeconfig(cluster.api_client.configuration, who, token))
            renewed.append(who.name)
        written.append(str(kubeconfigs.path_of(folder, who)))
        if jupyter:
            lab = jupyter_objects(who, jupyter_token(cluster, who) or secrets.token_hex(24))
            applied += len(cluster.backend(who.namespace).apply(lab))
    if jupyter and not dry_run:
        wait_for_jupyter(cluster, attendee_list)
    archive = "" if dry_run else str(kubeconfigs.archive(folder, room))
    return UpReport(room, applied, written, renewed, archive, round(time.monotonic() - started, 2), cluster.calls)


def jupyter_token(cluster: Cluster, who: Attendee) -> str:
    """The login token of an attendee's JupyterLab ('' if it has none yet: `room up --jupyter` makes it)."""
    try:
        secret = cluster.ask("Secret", lambda: cluster.core.read_namespaced_secret(JUPYTER_TOKEN_SECRET,
                                                                                     who.namespace))
    except NotFoundError:
        return ""
    return base64.b64decode((secret.get("data") or {}).get("token", "")).decode()


def wait_for_jupyter(cluster: Cluster, attendee_list: list[Attendee], timeout: float = JUPYTER_START_TIMEOUT) -> None:
    """Until every attendee's JupyterLab answers; a pod that cannot start raises at once, with why."""
    waiting = {who.namespace for who in attendee_list}

    def all_ready() -> bool:
        for namespace in sorted(waiting):
            backend = cluster.backend(namespace)
            pods = cluster.ask("Pod", lambda: cluster.core.list_namespaced_pod(
                namespace, label_selector=f"{manifests.COMPONENT_LABEL}=jupyterlab"))
            for pod in pods.get("items") or []:
                problem = backend.diagnose_pod(pod)
                if problem:
                    raise problem
                ready = [c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
                if ready and ready[0]["status"] == "True":
                    waiting.discard(namespace)
        return not waiting

    wait_until(all_ready, timeout, interval=1.0, on_timeout=lambda: ClusterError(
        f"the JupyterLab of {', '.join(sorted(waiting))} is not ready after {timeout:.0f} s: "
        f"`kubectl -n NAMESPACE describe pod -l {manifests.COMPONENT_LABEL}=jupyterlab`"))


def jupyter_forward(cluster: Cluster, who: Attendee) -> tuple[str, Any]:
    """A port-forward to an attendee's JupyterLab: (its URL with the login token, the forward to close)."""
    token = jupyter_token(cluster, who)
    if not token:
        raise RoomError(f"{who.name} has no JupyterLab: run `room up --jupyter` first")
    forward = cluster.backend(who.namespace).port_forward("jupyter", manifests.JUPYTER_PORT)
    return f"{forward.url}/lab?token={token}", forward


# -- down ---------------------------------------------------------------------------------------

@dataclass
class DownReport:
    room: str
    namespaces: list[str]
    cluster_objects: list[str]
    left: list[str]          # what is still there after the wait: empty when the room is gone
    seconds: float
    api_calls: int


def _cluster_scoped(cluster: Cluster, room: str) -> list[tuple[str, str]]:
    selector = f"{ROOM_LABEL}={room}"
    roles = cluster.ask("ClusterRole", lambda: cluster.rbac.list_cluster_role(label_selector=selector))
    bindings = cluster.ask("ClusterRoleBinding", lambda: cluster.rbac.list_cluster_role_binding(label_selector=selector))
    return ([("ClusterRoleBinding", i["metadata"]["name"]) for i in bindings.get("items") or []]
            + [("ClusterRole", i["metadata"]["name"]) for i in roles.get("items") or []])


def leftovers(cluster: Cluster, room: str, namespaces: list[str]) -> list[str]:
    """Everything of the room still on the cluster: its namespaces (also Terminating), its cluster-wide
    objects, and volumes that its claims had and that are not deleted."""
    left = [f"Namespace/{name}" for name in cluster.room_namespaces(room, terminating=True)]
    left += [f"{kind}/{name}" for kind, name in _cluster_scoped(cluster, room)]
    volumes = cluster.ask("PersistentVolume", cluster.core.list_persistent_volume).get("items") or []
    left += [f"PersistentVolume/{v['metadata']['name']} ({(v.get('status') or {}).get('phase')}, was "
             f"{v['spec']['claimRef']['namespace']}/{v['spec']['claimRef']['name']})"
             for v in volumes if ((v.get("spec") or {}).get("claimRef") or {}).get("namespace") in namespaces]
    return left


def down(cluster: Cluster, room: str, folder: Path | None = None, timeout: float = NAMESPACE_GONE_TIMEOUT) -> DownReport:
    """Delete every object labelled with the room, wait until it is gone, and list what is left."""
    started = time.monotonic()
    namespaces = cluster.room_namespaces(room, terminating=True)
    for namespace in namespaces:
        cluster.backend(namespace).delete([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    scoped = _cluster_scoped(cluster, room)
    for kind, name in scoped:
        cluster.backend("default").delete([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                                            "metadata": {"name": name}}])
    left: list[str] = []

    def gone() -> bool:
        left[:] = leftovers(cluster, room, namespaces)
        return not left

    try:
        wait_until(gone, timeout, interval=1.0, on_timeout=lambda: TimeoutError())
    except TimeoutError:
        pass  # reported: `left` names what is still there
    if folder is not None:
        for namespace in namespaces:
            kubeconfigs.path_of(folder, Attendee.of_namespace(room, namespace)).unlink(missing_ok=True)
        kubeconfigs.archive_path(folder, room).unlink(missing_ok=True)
    return DownReport(room, namespaces, [f"{k}/{n}" for k, n in scoped], left,
                      round(time.monotonic() - started, 2), cluster.calls)


# -- check --------------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    ok: bool | None          # None: not run (what it needs is not there yet)
    detail: str
    todo: str = ""

    @property
    def word(self) -> str:
        return {True: "OK", False: "FAIL", None: "SKIP"}[self.ok]


def _check(name: str, todo: str, run: Callable[[], str]) -> Check:
    try:
        return Check(name, True, run())
    except (ClusterError, RoomError, ApiException, OSError, TimeoutError) as err:
        return Check(name, False, str(err).splitlines()[0][:300], todo)


def check(cluster: Cluster, room: str, folder: Path, image: str | None = None,
          probe_timeout: float = PROBE_TIMEOUT) -> list[Check]:
    """The preflight of the evening before: one line per check, what failed and what to do."""
    results = [_check("API server", "check the kubeconfig (`kubectl cluster-info`)",
                      lambda: "Kubernetes " + cluster.ask("Version", client.VersionApi(cluster.api_client).get_code)
                      ["gitVersion"])]
    if not results[0].ok:
        return results  # nothing else can be asked

    def operator() -> str:
        if not cluster.backend("default").supports_tfjob():
            raise ClusterError("no TFJob resource (kubeflow.org/v1): the training operator is not installed")
        return "TFJob (kubeflow.org/v1) served"

    def storage() -> str:
        name = default_storage_class(cluster)
        if name is None:
            raise ClusterError("no StorageClass is marked default")
        return f"default StorageClass {name}"

    results.append(_check("training operator", f"install it: {INSTALL_OPERATOR}", operator))
    results.append(_check("storage class", "mark one default, or pass --storage-class to `room up`", storage))
    results += probe_nodes(cluster, room, image or settings.image(), probe_timeout)
    results += attendee_checks(cluster, room, folder)
    return results


def probe_nodes(cluster: Cluster, room: str, image: str, timeout: float) -> list[Check]:
    """A tiny pod of the course image on each node: it pulls the image, imports the course, resolves DNS."""
    namespace = f"{room}-check"
    backend = cluster.backend(namespace)
    nodes = [n["metadata"]["name"] for n in cluster.ask("Node", cluster.core.list_node).get("items") or []]
    try:
        backend.apply([{"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": namespace, "labels": {ROOM_LABEL: room}}}])
        pods = [node_probe(node, image) for node in nodes]
        backend.apply(pods)
        results: dict[str, Check] = {}

        def all_done() -> bool:
            for node, pod in zip(nodes, pods):
                if node in results:
                    continue
                current = cluster.ask("Pod", lambda: cluster.core.read_namespaced_pod(pod["metadata"]["name"],
                                                                                     namespace))
                phase = (current.get("status") or {}).get("phase")
                problem = backend.diagnose_pod(current)
                if phase == "Succeeded":
                    log = cluster.core.read_namespaced_pod_log(pod["metadata"]["name"], namespace)
                    results[node] = Check(f"node {node}", True, log.strip().splitlines()[-1][:200])
                elif phase == "Failed" or problem:
                    log = _safe_log(cluster, pod["metadata"]["name"], namespace)
                    results[node] = Check(f"node {node}", False, str(problem or log).splitlines()[0][:300],
                                          "pre-pull the image on every node (docs/instructor.md: the DaemonSet)")
            return len(results) == len(nodes)

        try:
            wait_until(all_done, timeout, interval=1.0, on_timeout=lambda: TimeoutError())
        except TimeoutError:
            for node in nodes:
                results.setdefault(node, Check(f"node {node}", False, f"the probe pod did not finish in {timeout:.0f} s",
                                               "pre-pull the image (docs/instructor.md); `kubectl describe pod`"))
        return [results[node] for node in nodes]
    except ClusterError as err:
        return [Check("nodes", False, str(err).splitlines()[0][:300], "run `room check` with cluster-admin rights")]
    finally:
        backend.delete([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])


def _safe_log(cluster: Cluster, pod: str, namespace: str) -> str:
    try:
        return cluster.core.read_namespaced_pod_log(pod, namespace, tail_lines=5) or "(no log)"
    except ApiException as err:
        return f"(no log: {err.reason})"


def attendee_checks(cluster: Cluster, room: str, folder: Path) -> list[Check]:
    """With the first two attendees' kubeconfigs: a Job is allowed at home and forbidden next door."""
    namespaces = cluster.room_namespaces(room)
    people = [who for who in (Attendee.of_namespace(room, ns) for ns in namespaces)
              if kubeconfigs.path_of(folder, who).is_file()]
    if not people:
        return [Check("attendee access", None, f"no room {room!r} with kubeconfigs in {folder} yet",
                      "run `room up` first")]
    first = people[0]
    own = attendee_backend(folder, first)

    def runs_a_job() -> str:
        job = manifests.training_job("room-check", manifests.run_config("room-check", epochs=1))
        own.apply([job], dry_run=True)  # validation, RBAC and the quota's admission, nothing stored
        return f"{first.name} may create a Job in {first.namespace} (server-side dry run)"

    results = [_check(f"{first.name} at home", "compare the Role with mnist_lib.room.objects.LEARNER_RULES",
                      runs_a_job)]
    if len(people) > 1:
        other = people[1]

        def forbidden_next_door() -> str:
            try:
                attendee_backend(folder, first, namespace=other.namespace).get_job_logs("x", kind="Job")
            except ForbiddenError:
                return f"{first.name} is forbidden to read {other.namespace}"
            except NotFoundError:
                pass
            raise ClusterError(f"{first.name} can read pods in {other.namespace}: the namespaces are not isolated")

        results.append(_check(f"{first.name} next door", "look for a ClusterRoleBinding that grants more",
                              forbidden_next_door))
    return results


def attendee_backend(folder: Path, who: Attendee, namespace: str | None = None) -> KubernetesBackend:
    """The course's backend as the attendee sees it: their kubeconfig, their namespace."""
    from kubernetes import config as kube_config

    api = kube_config.new_client_from_config(config_file=str(kubeconfigs.path_of(folder, who)))
    return KubernetesBackend(namespace=namespace or who.namespace, api_client=api)


# -- status -------------------------------------------------------------------------------------

@dataclass
class AttendeeStatus:
    attendee: str
    namespace: str
    chapters: list[str]          # the chapters whose jobs or servers are there ("03", "04", ...)
    running: int
    failed: int
    pending: list[str]           # "pod: why"
    cpu_used: str                # of the quota's requests.cpu
    cpu_hard: str


def _chapter_of(name: str) -> str | None:
    if name.startswith("ch") and name[2:4].isdigit():
        return name[2:4]
    return {"tensorboard": "05", "mnist-serving": "06"}.get(name)


def status(cluster: Cluster, room: str) -> list[AttendeeStatus]:
    """One row per attendee: how far they got, what runs, what waits and why, the quota used."""
    rows = []
    for namespace in cluster.room_namespaces(room):
        jobs = cluster.ask("Job", lambda: client.BatchV1Api(cluster.api_client).list_namespaced_job(namespace))
        deployments = cluster.ask("Deployment", lambda: client.AppsV1Api(cluster.api_client)
                                  .list_namespaced_deployment(namespace))
        try:
            tfjobs = cluster.ask("TFJob", lambda: client.CustomObjectsApi(cluster.api_client)
                                 .list_namespaced_custom_object("kubeflow.org", "v1", namespace, "tfjobs"))
        except ClusterError:
            tfjobs = {}  # no operator
        names = [i["metadata"]["name"] for answer in (jobs, deployments, tfjobs) for i in answer.get("items") or []]
        pods = cluster.ask("Pod", lambda: cluster.core.list_namespaced_pod(namespace)).get("items") or []
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        pending = []
        for pod in pods:
            if (pod.get("status") or {}).get("phase") == "Pending":
                problem = cluster.backend(namespace).diagnose_pod(pod)
                why = str(problem).splitlines()[0][:120] if problem else _pending_reason(pod)
                pending.append(f"{pod['metadata']['name']}: {why}")
        quotas = cluster.ask("ResourceQuota", lambda: cluster.core.list_namespaced_resource_quota(namespace))
        quota = ((quotas.get("items") or [{}])[0].get("status")) or {}
        rows.append(AttendeeStatus(
            attendee=Attendee.of_namespace(room, namespace).name, namespace=namespace,
            chapters=sorted({c for c in map(_chapter_of, names) if c}),
            running=phases.count("Running"), failed=phases.count("Failed"), pending=pending,
            cpu_used=(quota.get("used") or {}).get("requests.cpu", "0"),
            cpu_hard=(quota.get("hard") or {}).get("requests.cpu", "-")))
    return rows


def _pending_reason(pod: dict[str, Any]) -> str:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("status") == "False" and c.get("message"):
            return str(c["message"])[:120]
    waiting = [cs["state"]["waiting"].get("reason", "") for cs in (pod.get("status") or {}).get("containerStatuses") or []
               if (cs.get("state") or {}).get("waiting")]
    return ", ".join(waiting) or "starting"

