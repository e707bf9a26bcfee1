"""Why a pod does not start, in words: the diagnoses behind ``wait_for_job_conditions``.

A pod that can never start does not *fail*: it stays Pending, and its Job (or
TFJob) waits for it for ever. The reason is in the API, each time somewhere else:

====================================  ===========================================  =======================
what ``kubectl get pods`` shows       where the reason is                          error raised
====================================  ===========================================  =======================
ErrImagePull, ImagePullBackOff        the container's waiting reason               :class:`ImagePullError`
CreateContainerConfigError            the container's waiting reason               :class:`PodStuckError`
Pending, claim Pending                the claim's events, the StorageClasses       :class:`VolumeError`
Pending, Unschedulable                condition PodScheduled, nodes' allocatable   :class:`UnschedulableError`
ContainerCreating                     the pod's events (Multi-Attach, FailedMount) :class:`VolumeError`
(no pod at all)                       the Job's / TFJob's events: FailedCreate     :class:`QuotaError`
====================================  ===========================================  =======================

Three layers, so the reasoning can be tested on the API's own JSON:

- **Pure functions** (``image_pull_problem``, ``claim_problem``, ``schedule_problem``,
  ``mount_problem``, ``creation_problem``, and ``diagnose_pod`` which runs the pod
  ones in order) read the dicts the API server sends (camelCase, as
  ``ApiClient.sanitize_for_serialization`` gives them) and return the error to
  raise, or None. No API call, no clock: the caller says how long the pod has
  waited (``waited``, seconds), since a Pending pod is normal for a moment.
- **Facts**: what a diagnosis may have to look up (a claim, events, StorageClasses,
  nodes, quotas). :class:`ListFacts` answers from lists (tests); :class:`ApiFacts`
  asks the API, each question at most once per closer look. Whatever the user may
  not read (nodes and StorageClasses are cluster-wide: RBAC often forbids them in
  a workshop) is simply unknown, and the message says less.
- :class:`StallWatch`, one per backend, decides *when* to look closer, so that a
  healthy wait costs no more API calls than before (see ``check_job``).

A problem that other pods cause and that ends when they end (the node's CPU or the
quota is held by running pods) is reported only after :data:`BUSY_LIMIT`; a problem
that can never end by itself (more CPU than any node has, a StorageClass that does
not exist, a quota smaller than one pod) after :data:`LOOK_AFTER`.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity
from urllib3.exceptions import HTTPError

from mnist_lib.cluster.types import (FINISHED, ClusterError, ImagePullError, JobPhase, PodStuckError, QuotaError,
                                     UnschedulableError, VolumeError)
from mnist_lib.settings import ACCESS_MODE_ENV, STORAGE_CLASS_ENV  # the settings the advice names

if TYPE_CHECKING:
    from mnist_lib.cluster.kubernetes import KubernetesBackend

Obj = Mapping[str, Any]

# -- when to look, and how often (seconds) ------------------------------------------------
LOOK_AFTER = 3.0  # a pod Pending this long (or a job short of pods) gets a closer look
LOOK_EVERY = 3.0  # a closer look costs a few API calls: at most one per job this often
CREATING_LIMIT = 60.0  # ContainerCreating this long with no image being pulled: say why
BUSY_LIMIT = 60.0  # waiting for room that running pods hold (CPU of the node, the quota)
JOB_INFO_TTL = 30.0  # a job's spec (how many pods it should have) is read again after this


# Waiting reasons of a container that will not start by itself.
# ErrImageNeverPull: imagePullPolicy Never and the image is not on the node (kind load it).
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError")
DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")
# Taints the node lifecycle controller sets for a while (a node starting, under pressure).
PASSING_TAINTS = "node.kubernetes.io/"


# -- reading the API's JSON -----------------------------------------------------------------

def name_of(obj: Obj | None) -> str:
    return ((obj or {}).get("metadata") or {}).get("name") or "?"


def namespace_of(obj: Obj | None) -> str:
    return ((obj or {}).get("metadata") or {}).get("namespace") or "?"


def uid_of(obj: Obj | None) -> str:
    return ((obj or {}).get("metadata") or {}).get("uid") or ""


def condition(obj: Obj | None, kind: str) -> dict[str, Any] | None:
    """The status condition of type ``kind`` (e.g. ``PodScheduled``), or None."""
    return next((dict(c) for c in ((obj or {}).get("status") or {}).get("conditions") or []
                 if c.get("type") == kind), None)


def is_pending(pod: Obj) -> bool:
    """Pending and not being deleted: still waiting to start."""
    return ((pod.get("status") or {}).get("phase") in (None, "", "Pending")
            and not (pod.get("metadata") or {}).get("deletionTimestamp"))


def is_terminal(pod: Obj) -> bool:
    return ((pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            or bool((pod.get("metadata") or {}).get("deletionTimestamp")))


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def event_time(event: Obj) -> tuple[datetime, int]:
    """When an event last happened, for ordering: core/v1 events have ``lastTimestamp``; those
    written through events.k8s.io (the scheduler's) ``eventTime`` and ``series``. The
    resourceVersion breaks ties within a second (an update of a repeated event gets a new one)."""
    series = event.get("series") or {}
    meta = event.get("metadata") or {}
    for value in (series.get("lastObservedTime"), event.get("lastTimestamp"), event.get("eventTime"),
                  event.get("firstTimestamp"), meta.get("creationTimestamp")):
        when = _time(value)
        if when:
            break
    else:
        when = _EPOCH
    version = str(meta.get("resourceVersion") or "")
    return when, int(version) if version.isdigit() else 0


def latest(events: Iterable[Obj], reasons: Iterable[str] | None = None) -> dict[str, Any] | None:
    """The most recent event (of one of ``reasons``, prefixes allowed), or None."""
    wanted = tuple(reasons) if reasons is not None else None
    chosen = [e for e in events if wanted is None or str(e.get("reason") or "").startswith(wanted)]
    return dict(max(chosen, key=event_time)) if chosen else None


def claim_names(pod: Obj) -> list[str]:
    """The claims a pod mounts (generic ephemeral volumes too: their claim is ``<pod>-<volume>``)."""
    names = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if (volume.get("persistentVolumeClaim") or {}).get("claimName"):
            names.append(volume["persistentVolumeClaim"]["claimName"])
        elif volume.get("ephemeral"):
            names.append(f"{name_of(pod)}-{volume.get('name')}")
    return names


def quantity(value: Any) -> Decimal | None:
    """``"500m"`` -> 0.5, ``"1Gi"`` -> 1073741824; None if it is not a quantity."""
    if value is None:
        return None
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, InvalidOperation):
        return None


def show(resource: str, value: Decimal | None) -> str:
    """A quantity for a reader: ``64 CPUs``, ``0.5 CPU``, ``3Gi``, ``512Mi``."""
    if value is None:
        return "?"
    if resource.endswith("cpu"):
        text = f"{value.quantize(Decimal('0.001')).normalize():f}"
        return f"{text} CPU" if value <= 1 else f"{text} CPUs"
    if "memory" in resource or "storage" in resource:
        for unit, size in (("Ti", 2 ** 40), ("Gi", 2 ** 30), ("Mi", 2 ** 20), ("Ki", 2 ** 10)):
            if value >= size:
                return f"{(value / size).quantize(Decimal('0.1')).normalize():f}{unit}"
        return f"{value:f} bytes"
    return f"{value.normalize():f}"


def pod_requests(pod: Obj) -> dict[str, Decimal]:
    """What the scheduler counts for a pod: its containers' requests summed, or the largest init
    container's if that is more, plus the pod overhead. (The API server fills requests in from
    limits when only limits are given.)"""
    spec = pod.get("spec") or {}

    def requests(container: Obj) -> dict[str, Decimal]:
        res = container.get("resources") or {}
        given = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return {k: q for k, v in given.items() if (q := quantity(v)) is not None}

    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for k, v in requests(container).items():
            total[k] = total.get(k, Decimal(0)) + v
    for container in spec.get("initContainers") or []:
        for k, v in requests(container).items():
            total[k] = max(total.get(k, Decimal(0)), v)
    for k, v in (spec.get("overhead") or {}).items():
        if (q := quantity(v)) is not None:
            total[k] = total.get(k, Decimal(0)) + q
    return total


def is_default_class(storage_class: Obj) -> bool:
    annotations = (storage_class.get("metadata") or {}).get("annotations") or {}
    return any(str(annotations.get(a, "")).lower() == "true" for a in DEFAULT_CLASS_ANNOTATIONS)


def describe_classes(classes: Sequence[Obj] | None) -> str:
    """``local-path (the default; provisioner rancher.io/local-path, WaitForFirstConsumer)``."""
    if classes is None:
        return "unknown (you may not list them here; `kubectl get storageclass` shows them)"
    if not classes:
        return "none"
    parts = []
    for sc in sorted(classes, key=lambda c: (not is_default_class(c), name_of(c))):
        details = [f"provisioner {sc.get('provisioner') or '?'}"]
        if sc.get("volumeBindingMode"):
            details.append(str(sc["volumeBindingMode"]))
        parts.append(f"{name_of(sc)} ({'the default; ' if is_default_class(sc) else ''}{', '.join(details)})")
    return ", ".join(parts)


def _keeps_waiting(job: str | None, kind: str = "job") -> str:
    return f" The {kind} keeps waiting: delete it with delete_job({job!r})." if job else ""


def _remake_claim(namespace: str, claim: str, bound: bool = False) -> str:
    return ("then make the claim again (its class and access mode cannot be changed): delete the job (a claim "
            f"stays while a pod uses it), `kubectl -n {namespace} delete pvc {claim}`"
            + (" (its files go with it: pull what you need first)" if bound else "")
            + ", and restart the kernel (or run backend.prepare_namespace()); the claim is built "
            "by manifests.volume_claim(storage_class=..., access_mode=...)")


# -- the diagnoses: JSON in, an error (or None) out ----------------------------------------------

def _waiting_containers(pod: Obj) -> Iterable[tuple[Obj, Obj]]:
    """``(container status, its waiting state)`` of each container (init containers first) that waits."""
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            yield cs, waiting


def _waiting_for(pod: Obj, reasons: Iterable[str]) -> tuple[Obj, Obj] | None:
    """The first ``(container status, waiting state)`` of ``pod`` waiting for one of ``reasons``."""
    return next(((cs, waiting) for cs, waiting in _waiting_containers(pod) if waiting.get("reason") in reasons),
                None)


def image_pull_problem(pod: Obj, job: str | None = None) -> ImagePullError | None:
    """A container whose image cannot be pulled: it never starts (at once, no waiting)."""
    if not (found := _waiting_for(pod, IMAGE_PULL_REASONS)):
        return None
    cs, waiting = found
    return ImagePullError(
        f"pod {name_of(pod)} cannot pull image {cs.get('image')!r} "
        f"({waiting['reason']}: {waiting.get('message', '')}). Check the image name and tag, "
        "that it was pushed to a registry the cluster can reach (with kind: "
        "`kind load docker-image IMAGE`), and imagePullSecrets for a private registry."
        + (f" The job keeps trying: delete it with delete_job({job!r})." if job else ""))


def container_problem(pod: Obj, waited: float, job: str | None = None) -> PodStuckError | None:
    """A container the kubelet cannot create (a missing Secret or ConfigMap, a securityContext the
    image does not allow): it retries for ever, and nothing changes until someone acts."""
    if waited < LOOK_AFTER or not (found := _waiting_for(pod, CONFIG_REASONS)):
        return None
    cs, waiting = found
    return PodStuckError(
        f"pod {name_of(pod)} cannot start its container {cs.get('name')!r}: {waiting['reason']}: "
        f"{waiting.get('message', '')}. The kubelet keeps retrying, but this does not mend itself: "
        "create what the message says is missing (a Secret, a ConfigMap), or fix the container "
        "(its command, its securityContext)." + _keeps_waiting(job))


def _why_claim_pending(pvc: Obj, events: Sequence[Obj], classes: Sequence[Obj] | None,
                       scheduler_says: str, waited: float) -> str | None:
    """Why a Pending claim will stay Pending, or None if it may still be bound."""
    spec = pvc.get("spec") or {}
    wanted = spec.get("storageClassName")  # None: left to the default; "": no class at all
    by_name = {name_of(c): c for c in classes or []}
    chosen = by_name.get(wanted or "")
    provisioner = (chosen or {}).get("provisioner") or "?"
    last = latest(events) or {}
    said = str(last.get("message") or "")
    missing = re.search(r'storageclass\.storage\.k8s\.io "([^"]*)" not found', said)
    if missing and missing.group(1) in by_name:
        missing = None  # made since: the controller will try again with it
    if wanted and classes is not None and wanted not in by_name:
        return f'it names StorageClass "{wanted}", which does not exist on this cluster' + \
            (f' (the volume controller says: {said})' if missing else "")
    if missing:
        return f'it names StorageClass "{missing.group(1)}", which does not exist on this cluster ({said})'
    if last.get("reason") == "ProvisioningFailed" and "storageclass.storage.k8s.io" not in said:
        return f'the provisioner {provisioner} of StorageClass "{wanted}" failed to make its volume: {said}'
    if "no storage class is set" in said or (
            not wanted and classes is not None and not any(map(is_default_class, classes))
            and "unbound immediate PersistentVolumeClaims" in scheduler_says):
        if wanted == "":
            return ('it asks for no StorageClass (storageClassName: ""), so only a ready-made '
                    "PersistentVolume could bind it, and none matches")
        return ("it names no StorageClass, the cluster has no default one, and no ready-made "
                "PersistentVolume matches it")
    if re.search(r"did(n't| not) find available persistent volumes to bind", scheduler_says):
        return (f'its StorageClass "{wanted}" (provisioner {provisioner}) makes no volumes, and no '
                f"ready-made PersistentVolume matches it (the scheduler says: {scheduler_says})")
    if last.get("reason") == "ExternalProvisioning" and waited >= BUSY_LIMIT:
        return (f'the provisioner {provisioner} of StorageClass "{wanted}" has made no volume in '
                f"{waited:.0f} s ({said}): is it installed and running?")
    return None  # e.g. WaitForFirstConsumer: bound once the pod is scheduled, which is normal


def claim_problem(pod: Obj, claims: Mapping[str, Obj | None], claim_events: Mapping[str, Sequence[Obj]],
                  storage_classes: Sequence[Obj] | None, waited: float = LOOK_AFTER,
                  job: str | None = None) -> VolumeError | None:
    """A claim of the pod that does not exist, or is Pending and cannot be bound.

    ``claims``: claim name -> the PVC, ``None`` if the API says it does not exist, ``{}``
    if unknown. ``claim_events``: claim name -> its events. ``storage_classes``: the
    cluster's, or None if they cannot be listed. With volumeBindingMode
    WaitForFirstConsumer a claim is Pending until its pod is scheduled: that alone is no
    problem; its events (ProvisioningFailed, FailedBinding) and the scheduler's words are.
    """
    if waited < LOOK_AFTER:
        return None
    namespace = namespace_of(pod)
    scheduled = condition(pod, "PodScheduled") or {}
    scheduler_says = str(scheduled.get("message") or "") if scheduled.get("status") == "False" else ""
    for claim in claim_names(pod):
        if claim not in claims:
            continue
        pvc = claims[claim]
        if pvc is None:
            return VolumeError(
                f"pod {name_of(pod)} cannot start: it mounts the volume claim {claim}, which does not exist in "
                f"namespace {namespace}. Make it: backend.prepare_namespace() does (it applies "
                f"manifests.volume_claim()), or `kubectl -n {namespace} apply -f` a claim named {claim}."
                + _keeps_waiting(job))
        if not pvc:
            continue  # unknown: not allowed to read it
        phase = (pvc.get("status") or {}).get("phase")
        if phase == "Bound":
            continue
        if phase == "Lost":
            return VolumeError(
                f"pod {name_of(pod)} cannot start: its volume claim {claim} is Lost (its PersistentVolume "
                f"{(pvc.get('spec') or {}).get('volumeName')} is gone): the files on it are gone too. "
                f"Delete the claim (`kubectl -n {namespace} delete pvc {claim}`) and make it again (restart the "
                "kernel, or backend.prepare_namespace())." + _keeps_waiting(job))
        why = _why_claim_pending(pvc, claim_events.get(claim) or (), storage_classes, scheduler_says, waited)
        if why is None:
            continue
        no_default = storage_classes is not None and not any(map(is_default_class, storage_classes))
        return VolumeError(
            f"pod {name_of(pod)} cannot start: its volume claim {claim} (namespace {namespace}) is Pending and "
            f"will stay so: {why}.\n"
            f"StorageClasses on this cluster: {describe_classes(storage_classes)}.\n"
            f"What to do: set {STORAGE_CLASS_ENV} to one of them (or unset it, for the default class), "
            f"{_remake_claim(namespace, claim)}."
            + (" This cluster has no default StorageClass: ask your cluster admin for one (e.g. the local-path "
               "provisioner), or for a PersistentVolume the claim can bind to." if no_default else "")
            + _keeps_waiting(job))
    return None


def _tolerates(pod: Obj, taint: Obj) -> bool:
    for toleration in (pod.get("spec") or {}).get("tolerations") or []:
        key, effect = toleration.get("key"), toleration.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists" and (not key or key == taint.get("key")):
            return True
        if key == taint.get("key") and toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def _usable(pod: Obj, node: Obj) -> bool:
    """Could the pod go there, resources aside: not cordoned, no taint it does not tolerate."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    return all(_tolerates(pod, t) for t in spec.get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute"))


def _allocatable(node: Obj, resource: str) -> Decimal:
    return quantity(((node.get("status") or {}).get("allocatable") or {}).get(resource)) or Decimal(0)


def schedule_problem(pod: Obj, nodes: Sequence[Obj] | None, requested_on: Callable[[str], Mapping[str, Decimal] | None]
                     = lambda node: None, events: Sequence[Obj] = (), waited: float = LOOK_AFTER,
                     job: str | None = None) -> ClusterError | None:
    """A pod the scheduler puts on no node (PodScheduled False, reason Unschedulable).

    ``nodes``: the cluster's nodes, or None if they cannot be listed; ``requested_on(node)``:
    what the pods on that node already request (or None); ``events``: the pod's (a
    cluster autoscaler's TriggeredScaleUp means a node is coming). Claim-related
    reasons are left to :func:`claim_problem`, except those about a bound volume.
    """
    scheduled = condition(pod, "PodScheduled") or {}
    if scheduled.get("status") != "False" or scheduled.get("reason") != "Unschedulable" or waited < LOOK_AFTER:
        return None
    says = str(scheduled.get("message") or "")
    pod_name, namespace = name_of(pod), namespace_of(pod)
    if "volume node affinity conflict" in says:
        return VolumeError(
            f"pod {pod_name} cannot be scheduled: its volume is tied to a node it cannot run on (the scheduler "
            f"says: {says}). A local volume (local-path, hostPath) lives on one node: use a claim whose class "
            f"makes volumes any node can mount ({STORAGE_CLASS_ENV}), or let the pod run on that node."
            + _keeps_waiting(job))
    if "ReadWriteOncePod" in says:
        return VolumeError(
            f"pod {pod_name} cannot be scheduled: another pod already uses its volume claim, which is "
            f"ReadWriteOncePod: one pod at a time (the scheduler says: {says}). Use ReadWriteOnce or "
            f"ReadWriteMany ({ACCESS_MODE_ENV}), "
            f"{_remake_claim(namespace, (claim_names(pod) or ['?'])[0], bound=True)}."
            + _keeps_waiting(job))
    if re.search(r"PersistentVolumeClaim|persistentvolumeclaim|persistent volumes", says):
        return None  # a claim being bound or provisioned: claim_problem's business
    if (latest(events, ["TriggeredScaleUp", "NotTriggerScaleUp"]) or {}).get("reason") == "TriggeredScaleUp":
        return None  # the cluster autoscaler is adding a node for it

    insufficient = list(dict.fromkeys(re.findall(r"Insufficient ([\w/-]+(?:\.[\w/-]+)*)", says)))
    if insufficient:
        wants = pod_requests(pod)
        usable = [n for n in nodes or [] if _usable(pod, n)]
        never, parts = False, []
        for resource in insufficient:
            want = wants.get(resource)
            if nodes is None or not usable:
                parts.append(f"{resource}: it requests {show(resource, want)}")
                continue
            best = max(usable, key=lambda n: _allocatable(n, resource))
            cap = _allocatable(best, resource)
            text = (f"{resource}: it requests {show(resource, want)}, the largest node ({name_of(best)}) has "
                    f"{show(resource, cap)} allocatable")
            held = requested_on(name_of(best))  # None: unknown (pods of all namespaces cannot be listed)
            used = None if held is None else held.get(resource, Decimal(0))
            if used is not None:
                text += (f", of which pods there already request {show(resource, used)} "
                         f"({show(resource, max(cap - used, Decimal(0)))} free)")
            if want is not None and want > cap:
                never = True
                text += ": it fits on no node, even an empty one"
            parts.append(text)
        if not never and waited < BUSY_LIMIT:
            return None  # it may fit once pods elsewhere finish: say so only after a while
        shrink = ("lower the pod's resources (resources={'requests': {...}, 'limits': {...}} of the "
                  "mnist_lib.manifests function that made it) or run fewer, smaller replicas")
        if never:
            todo = (f"What to do: ask for less - {shrink} - or ask for a bigger node (your cluster admin; on a "
                    "cloud, a node pool of a larger machine type).")
        elif nodes is None:
            todo = (f"What to do: ask for less - {shrink} - delete jobs and servers you no longer need "
                    "(delete_job), or ask your cluster admin how big the nodes are.")
        else:
            todo = (f"Pods already running hold the room: it starts when they finish. Delete jobs and servers you "
                    f"no longer need (delete_job; `kubectl -n {namespace} get pods`), ask for less (lower the "
                    "resources, fewer replicas), or wait again with wait_for_job_conditions.")
        nodes_note = "" if nodes is not None else " (the nodes cannot be listed here: `kubectl describe nodes`)"
        return UnschedulableError(
            f"pod {pod_name} cannot be scheduled: no node has room for it{nodes_note}. "
            + "; ".join(parts) + f". The scheduler says: {says}\n{todo}" + _keeps_waiting(job))

    taints = re.findall(r"untolerated taint\(?s?\)? ?\{([^}]*)\}", says)
    if taints and all(t.strip().startswith(PASSING_TAINTS) for t in taints) and waited < BUSY_LIMIT:
        return None  # a node starting or under pressure: passes by itself, usually
    if not taints and "affinity/selector" not in says and waited < BUSY_LIMIT:
        return None  # e.g. no node yet, too many pods: may pass
    if "affinity/selector" in says:
        todo = "No node has the labels its nodeSelector or affinity ask for: remove them, or label a node."
    elif taints:
        todo = ("The nodes have taints the pod does not tolerate (" + ", ".join(t.strip() for t in taints)
                + "): add a toleration, or use other nodes.")
    else:
        todo = "Look at the nodes (`kubectl describe nodes`) or ask your cluster admin."
    return UnschedulableError(f"pod {pod_name} cannot be scheduled (the scheduler says: {says}). {todo}"
                              + _keeps_waiting(job))


def _claim_of_volume(claims: Mapping[str, Obj | None], said: str) -> tuple[str, Obj]:
    """The claim an attach/mount event is about (it names the PersistentVolume), else the first."""
    known = [(name, pvc) for name, pvc in claims.items() if pvc]
    for name, pvc in known:
        volume = (pvc.get("spec") or {}).get("volumeName")
        if volume and f'"{volume}"' in said:
            return name, pvc
    return known[0] if known else (next(iter(claims), "?"), {})


def mount_problem(pod: Obj, events: Sequence[Obj], claims: Mapping[str, Obj | None] | None = None,
                  waited: float = LOOK_AFTER, job: str | None = None) -> ClusterError | None:
    """A pod on a node whose volumes cannot be attached or mounted (it shows ContainerCreating).

    At once (after :data:`LOOK_AFTER`) for a Multi-Attach error, FailedAttachVolume or
    FailedMount as the latest event of the pod; after :data:`CREATING_LIMIT` for any
    other warning. An image being pulled (the latest event Pulling) is no problem:
    the kubelet mounts volumes before it pulls.
    """
    scheduled = condition(pod, "PodScheduled") or {}
    if not is_pending(pod) or scheduled.get("status") != "True" or waited < LOOK_AFTER:
        return None
    claims = claims or {}
    pod_name, namespace = name_of(pod), namespace_of(pod)
    node = (pod.get("spec") or {}).get("nodeName") or "?"
    last = latest(events) or {}
    said = str(last.get("message") or "")
    attach = [e for e in events if e.get("reason") in ("FailedAttachVolume", "FailedMount")]
    multi = latest([e for e in attach if "Multi-Attach" in str(e.get("message"))])
    if multi and last.get("reason") in ("FailedAttachVolume", "FailedMount"):
        claim, pvc = _claim_of_volume(claims, str(multi.get("message")))
        modes = "/".join((pvc.get("spec") or {}).get("accessModes") or ["ReadWriteOnce"])
        return VolumeError(
            f"pod {pod_name} cannot start on node {node}: its volume claim {claim} is {modes}, and its volume is "
            f"already attached to another node ({multi.get('message')}). A ReadWriteOnce volume serves the pods "
            "of one node only, and this job's pods landed on several nodes.\n"
            f"What to do: either use a ReadWriteMany claim - set {ACCESS_MODE_ENV}=ReadWriteMany and "
            f"{STORAGE_CLASS_ENV} to a class that offers it (NFS, CephFS, Filestore, EFS, Azure Files...), "
            f"{_remake_claim(namespace, claim, bound=True)} - or run on a one-node cluster (kind, minikube, "
            "Docker Desktop), where all pods share the node's volume." + _keeps_waiting(job))
    if last.get("reason") in ("FailedAttachVolume", "FailedMount"):
        if "not registered" in said and waited < CREATING_LIMIT:
            return None  # the kubelet's cache of a new namespace's ConfigMaps: passes in a second
        claim, _ = _claim_of_volume(claims, said)
        verb = "attached" if "Attach" in last["reason"] else "mounted"
        return VolumeError(
            f"pod {pod_name} cannot start on node {node}: its volumes cannot be {verb} "
            f"({last['reason']}: {said}). Look at the claim and its volume: `kubectl -n {namespace} describe pvc "
            f"{claim}` and `kubectl -n {namespace} describe pod {pod_name}`; a claim whose StorageClass cannot "
            f"serve this node needs another class ({STORAGE_CLASS_ENV})." + _keeps_waiting(job))
    if waited >= CREATING_LIMIT and last.get("type") == "Warning":
        return PodStuckError(
            f"pod {pod_name} has been starting on node {node} for {waited:.0f} s: {last.get('reason')}: {said}. "
            f"See `kubectl -n {namespace} describe pod {pod_name}`; if the node is at fault, ask your cluster "
            "admin." + _keeps_waiting(job))
    return None


def _pairs(text: str) -> dict[str, str]:
    """``requests.cpu=500m,requests.memory=1Gi`` -> {"requests.cpu": "500m", ...}."""
    return dict(part.strip().split("=", 1) for part in text.split(",") if "=" in part)


def describe_quota(quota: Obj | None) -> str:
    """``requests.cpu 200m (used 0), pods 10 (used 1)``: what a ResourceQuota allows."""
    if not quota:
        return "unknown (you may not read the quota here: `kubectl describe resourcequota`)"
    hard = (quota.get("spec") or {}).get("hard") or (quota.get("status") or {}).get("hard") or {}
    used = (quota.get("status") or {}).get("used") or {}
    return ", ".join(f"{k} {v} (used {used.get(k, '0')})" for k, v in sorted(hard.items())) or "nothing"


def creation_problem(kind: str, name: str, events: Sequence[Obj], quotas: Sequence[Obj] | None = None,
                     waited: float = LOOK_AFTER, namespace: str = "?", job: str | None = None) -> ClusterError | None:
    """A job whose pods are refused by the API server (no pod exists, or fewer than it needs).

    ``events``: the job's own (the Job controller says FailedCreate, the training operator
    FailedCreatePod); only the latest of the creation events counts, so a refusal that
    was followed by a SuccessfulCreate is history. ``quotas``: the namespace's
    ResourceQuotas, to say what the one that refuses allows (None if unknown).
    """
    last = latest(events, ["FailedCreate", "SuccessfulCreate"])
    if not last or not str(last.get("reason")).startswith("FailedCreate") or waited < LOOK_AFTER:
        return None
    said = str(last.get("message") or "")
    job = job or name
    by_name = {name_of(q): q for q in quotas or []}
    todo = ("What to do: ask for less - smaller resources (resources=... of the mnist_lib.manifests function that "
            "made the job) or fewer replicas (workers=...) - delete jobs and servers you no longer need "
            "(delete_job: running pods hold their share), or ask the instructor for a bigger quota.")
    exceeded = re.search(r"exceeded quota: ([^,]+), requested: (.*?), used: (.*?), limited: ([^\s\"]*)", said)
    if exceeded:
        quota_name, requested, used, limited = exceeded.groups()
        requested, used, limited = _pairs(requested), _pairs(used), _pairs(limited)
        over = [r for r in requested if r in limited and (quantity(requested[r]) or 0) > (quantity(limited[r]) or 0)]
        if not over and waited < BUSY_LIMIT:
            return None  # it fits once running pods end
        detail = "; ".join(f"{r}: a pod asks for {requested[r]}, the quota allows {limited.get(r, '?')} and "
                           f"{used.get(r, '?')} is in use" for r in requested)
        why = ("one pod alone asks for more than the quota allows" if over
               else "pods already running use the rest of it")
        return QuotaError(
            f"{kind} {name} cannot create its pods: the ResourceQuota {quota_name} of namespace {namespace} refuses "
            f"them, {why} ({detail}).\nThe quota {quota_name} allows: {describe_quota(by_name.get(quota_name))}.\n"
            f"{todo}" + _keeps_waiting(job, kind="job"))
    must = re.search(r"failed quota: ([^:]+): must specify (.*)", said)
    if must:
        return QuotaError(
            f"{kind} {name} cannot create its pods: the ResourceQuota {must.group(1)} of namespace {namespace} "
            f"counts resources that its containers do not set (must specify {must.group(2)}). Give every "
            "container requests and limits (resources=... of the mnist_lib.manifests function that made the job). "
            f"The quota allows: {describe_quota(by_name.get(must.group(1).strip()))}." + _keeps_waiting(job))
    if re.search(r"(maximum|minimum) [\w./-]+ usage per (Container|Pod)|limit to request ratio", said):
        return QuotaError(
            f"{kind} {name} cannot create its pods: the namespace's LimitRange refuses them ({said}). Change the "
            "pods' resources to fit it (resources=... of the mnist_lib.manifests function that made the job; "
            f"`kubectl -n {namespace} describe limitrange` shows it), or ask the instructor." + _keeps_waiting(job))
    passing = "status unknown for quota" in said or ("serviceaccount" in said and "not found" in said)
    if passing and waited < BUSY_LIMIT:
        return None  # a new namespace: its quota is being counted, its default ServiceAccount made
    return PodStuckError(
        f"{kind} {name} cannot create its pods: {said}. The {kind} controller keeps trying, but the API server "
        "will refuse the same pod again: fix what the message names (the pod template), or ask your cluster "
        "admin." + _keeps_waiting(job))


# -- what a diagnosis may look up -----------------------------------------------------------------

class Facts(Protocol):
    """Answers a diagnosis may need; each may be unknown (None) when RBAC forbids it."""

    def claim(self, name: str) -> dict[str, Any] | None:
        """The PVC; None if it does not exist; ``{}`` if unknown."""

    def events(self, obj: Obj) -> list[dict[str, Any]]:
        """The events about this object (by its uid); [] if unknown."""

    def storage_classes(self) -> list[dict[str, Any]] | None: ...

    def nodes(self) -> list[dict[str, Any]] | None: ...

    def requested_on(self, node: str) -> dict[str, Decimal] | None:
        """What the running pods on ``node`` request, summed."""

    def quotas(self) -> list[dict[str, Any]] | None: ...


class ListFacts:
    """Facts from lists of API objects (a test's, or a saved ``kubectl get -o json``)."""

    def __init__(self, claims: Sequence[Obj] = (), events: Sequence[Obj] = (),
                 storage_classes: Sequence[Obj] | None = (), nodes: Sequence[Obj] | None = (),
                 pods: Sequence[Obj] = (), quotas: Sequence[Obj] | None = ()):
        self._claims = {name_of(c): dict(c) for c in claims}
        self._events, self._pods = list(events), list(pods)
        self._classes = None if storage_classes is None else [dict(c) for c in storage_classes]
        self._nodes = None if nodes is None else [dict(n) for n in nodes]
        self._quotas = None if quotas is None else [dict(q) for q in quotas]

    def claim(self, name: str) -> dict[str, Any] | None:
        return self._claims.get(name)

    def events(self, obj: Obj) -> list[dict[str, Any]]:
        uid, name = uid_of(obj), name_of(obj)
        return [dict(e) for e in self._events if (e.get("involvedObject") or {}).get("uid") == uid
                or (not uid and (e.get("involvedObject") or {}).get("name") == name)]

    def storage_classes(self) -> list[dict[str, Any]] | None:
        return self._classes

    def nodes(self) -> list[dict[str, Any]] | None:
        return self._nodes

    def requested_on(self, node: str) -> dict[str, Decimal] | None:
        return _sum_requests(p for p in self._pods if (p.get("spec") or {}).get("nodeName") == node
                             and not is_terminal(p))

    def quotas(self) -> list[dict[str, Any]] | None:
        return self._quotas


def _sum_requests(pods: Iterable[Obj]) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for pod in pods:
        for k, v in pod_requests(pod).items():
            total[k] = total.get(k, Decimal(0)) + v
    return total


class ApiFacts:
    """Facts from the API server, through a :class:`KubernetesBackend`'s clients; each question is
    asked once (an instance lives for one closer look). A refusal (403) or an error is "unknown"."""

    def __init__(self, backend: KubernetesBackend):
        self.backend = backend
        self.namespace = backend.namespace
        self._memo: dict[tuple[str, str], Any] = {}

    def _ask(self, key: tuple[str, str], call: Callable[[], Any], unknown: Any, gone: Any = None) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = self.backend.api_client.sanitize_for_serialization(call())
            except ApiException as err:
                self._memo[key] = gone if err.status == 404 else unknown
            except HTTPError:
                self._memo[key] = unknown
        return self._memo[key]

    def claim(self, name: str) -> dict[str, Any] | None:
        core = self.backend.core
        return self._ask(("claim", name), lambda: core.read_namespaced_persistent_volume_claim(name, self.namespace),
                         unknown={}, gone=None)

    def events(self, obj: Obj) -> list[dict[str, Any]]:
        uid = uid_of(obj)
        if not uid:
            return []
        core = self.backend.core
        answer = self._ask(("events", uid), lambda: core.list_namespaced_event(
            namespace_of(obj) if namespace_of(obj) != "?" else self.namespace,
            field_selector=f"involvedObject.uid={uid}"), unknown={}, gone={})
        return list(answer.get("items") or [])

    def _items(self, key: str, call: Callable[[], Any]) -> list[dict[str, Any]] | None:
        answer = self._ask((key, ""), call, unknown=None, gone=None)
        return None if answer is None else list(answer.get("items") or [])

    def storage_classes(self) -> list[dict[str, Any]] | None:
        return self._items("classes", lambda: client.StorageV1Api(self.backend.api_client).list_storage_class())

    def nodes(self) -> list[dict[str, Any]] | None:
        return self._items("nodes", self.backend.core.list_node)

    def requested_on(self, node: str) -> dict[str, Decimal] | None:
        core = self.backend.core
        pods = self._items(f"pods on {node}", lambda: core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node},status.phase!=Succeeded,status.phase!=Failed"))
        return None if pods is None else _sum_requests(pods)

    def quotas(self) -> list[dict[str, Any]] | None:
        core = self.backend.core
        return self._items("quotas", lambda: core.list_namespaced_resource_quota(self.namespace))


def diagnose_pod(pod: Obj, facts: Facts, waited: float, job: str | None = None) -> ClusterError | None:
    """Every pod diagnosis in turn, looking up only what each needs. ``waited``: seconds the pod
    has been seen Pending. The error to raise, or None (nothing wrong, or nothing known yet)."""
    problem = image_pull_problem(pod, job) or container_problem(pod, waited, job)
    if problem or not is_pending(pod) or waited < LOOK_AFTER:
        return problem
    claims = {name: facts.claim(name) for name in claim_names(pod)}
    unbound = {name: pvc for name, pvc in claims.items() if pvc and (pvc.get("status") or {}).get("phase") != "Bound"}
    if None in claims.values() or unbound:
        problem = claim_problem(pod, claims, {name: facts.events(pvc) for name, pvc in unbound.items()},
                                facts.storage_classes(), waited, job)
        if problem:
            return problem
    scheduled = condition(pod, "PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        says = str(scheduled.get("message") or "")
        nodes = facts.nodes() if "Insufficient" in says else None
        return schedule_problem(pod, nodes, facts.requested_on, facts.events(pod), waited, job)
    if scheduled.get("status") == "True":
        return mount_problem(pod, facts.events(pod), claims, waited, job)
    return None


# -- when to look: one per backend ------------------------------------------------------------

def expected_pods(kind: str, obj: Obj, pods: Sequence[Obj]) -> int:
    """How many pods of the job should be alive (not ended) now, from its spec and its pods."""
    spec = obj.get("spec") or {}
    succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
    if kind == "TFJob":
        total = sum(int((r or {}).get("replicas", 1) or 0) for r in (spec.get("tfReplicaSpecs") or {}).values())
        return max(total - succeeded, 0)
    if kind == "Job":
        if spec.get("suspend"):
            return 0
        parallelism = int(spec.get("parallelism", 1) if spec.get("parallelism") is not None else 1)
        completions = spec.get("completions")
        if completions is None:
            return 0 if succeeded else parallelism
        return max(min(parallelism, int(completions) - succeeded), 0)
    if kind == "Deployment":
        return int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    return 0


class StallWatch:
    """Decides when a job's pods deserve a closer look, and looks (one per backend).

    API calls of ``check_job``, per poll of ``wait_for_job_conditions``:

    - always: one pod list (as before this module existed); the cheap checks (image
      pull, container config) read it and call nothing else;
    - once per :data:`JOB_INFO_TTL` (30 s) per job: one read of the job, for how many
      pods it should have (and a Deployment's selector);
    - only while a pod has been Pending for :data:`LOOK_AFTER` (3 s), or the job has had
      fewer pods than it should for as long: a closer look, at most once per
      :data:`LOOK_EVERY` (3 s) per job, of at most two pods; each question once per look:
      the pod's events, its claims (and their events, the StorageClasses) if unbound,
      the nodes and one node's pods if it is Unschedulable for lack of room, and the
      job's events (and the quotas) if it is short of pods. Typically 2-5 calls.
    """

    def __init__(self, backend: KubernetesBackend, clock: Callable[[], float] = time.monotonic,
                 facts: Callable[[KubernetesBackend], Facts] = ApiFacts):
        self.backend = backend
        self.clock = clock
        self.facts = facts
        self._since: dict[str, float] = {}  # "pod/<uid>" or "short/<kind>/<name>" -> first seen so
        self._looked: dict[str, float] = {}  # job or pod -> last closer look
        self._jobs: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}

    def _waited(self, key: str, now: float) -> float:
        if len(self._since) > 2000:  # pods seen once and never again: forget the old
            self._since = {k: t for k, t in self._since.items() if now - t < 3600}
        return now - self._since.setdefault(key, now)

    def _due(self, key: str, now: float) -> bool:
        if now - self._looked.get(key, float("-inf")) < LOOK_EVERY:
            return False
        self._looked[key] = now
        return True

    def _job(self, kind: str, name: str, now: float) -> dict[str, Any] | None:
        read_at, obj = self._jobs.get((kind, name), (float("-inf"), None))
        if now - read_at >= JOB_INFO_TTL:
            try:
                obj = self.backend._read(name, kind)[1]
            except ClusterError:
                obj = None
            self._jobs[(kind, name)] = (now, obj)
        return obj

    def check_job(self, kind: str, name: str, phase: JobPhase) -> ClusterError | None:
        """The error to raise for job ``name`` now, or None. Called on every poll."""
        now = self.clock()
        obj = self._job(kind, name, now) if phase not in FINISHED or kind == "Deployment" else None
        selector = self.backend._selector(kind, name, obj)
        if not selector:
            return None  # a Deployment we could not read: do not judge every pod of the namespace
        pods = self.backend._pods(selector)
        for pod in pods:
            problem = image_pull_problem(pod, job=name)
            if problem:
                return problem
        short_key = f"short/{kind}/{name}"
        if phase in FINISHED:
            self._since.pop(short_key, None)
            return None
        closer: list[tuple[dict[str, Any], float]] = []
        for pod in pods:
            key = f"pod/{uid_of(pod) or name_of(pod)}"
            if not is_pending(pod):
                self._since.pop(key, None)
                continue
            waited = self._waited(key, now)
            problem = container_problem(pod, waited, job=name)
            if problem:
                return problem
            if waited >= LOOK_AFTER:
                closer.append((pod, waited))
        alive = [p for p in pods if not is_terminal(p)]
        short_for = 0.0
        if obj is not None and len(alive) < expected_pods(kind, obj, pods):
            short_for = self._waited(short_key, now)
        else:
            self._since.pop(short_key, None)
        if not closer and short_for < LOOK_AFTER:
            return None
        if not self._due(f"job/{kind}/{name}", now):
            return None
        facts = self.facts(self.backend)
        for pod, waited in closer[:2]:
            problem = diagnose_pod(pod, facts, waited, job=name)
            if problem:
                return problem
        if short_for >= LOOK_AFTER and obj is not None:
            return self._creation(kind, name, obj, facts, short_for)
        return None

    def _creation(self, kind: str, name: str, obj: Obj, facts: Facts, waited: float) -> ClusterError | None:
        if kind == "Deployment":  # its ReplicaSet is refused; the Deployment says so in a condition
            failure = condition(obj, "ReplicaFailure") or {}
            events = [{"reason": "FailedCreate", "message": failure.get("message", ""),
                       "lastTimestamp": failure.get("lastUpdateTime")}] if failure.get("status") == "True" else []
        else:
            events = facts.events(obj)
        creations = latest(events, ["FailedCreate", "SuccessfulCreate"]) or {}
        quotas = facts.quotas() if "quota" in str(creations.get("message") or "") else None
        return creation_problem(kind, name, events, quotas, waited, namespace=self.backend.namespace, job=name)

    def check_pod(self, pod: Obj, job: str | None = None) -> ClusterError | None:
        """The error to raise for one pod (e.g. a helper pod being waited for), or None.
        Call it on every poll with the pod as just read; it looks closer only when due."""
        now = self.clock()
        key = f"pod/{uid_of(pod) or name_of(pod)}"
        if not is_pending(pod):
            self._since.pop(key, None)
            return image_pull_problem(pod, job)
        waited = self._waited(key, now)
        problem = image_pull_problem(pod, job) or container_problem(pod, waited, job)
        if problem or waited < LOOK_AFTER or not self._due(key, now):
            return problem
        return diagnose_pod(pod, self.facts(self.backend), waited, job)
