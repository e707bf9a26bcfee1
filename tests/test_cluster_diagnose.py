"""Why a pod cannot start (mnist_lib.cluster.diagnose), on the API server's own JSON.

The objects below have the shapes a Kubernetes 1.32 API server answers (pods,
events, claims, StorageClasses, nodes, quotas), trimmed to the fields that matter
and with the messages the scheduler, the volume controllers, the kubelet, the
quota admission and the training operator really write.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from mnist_lib import cluster
from mnist_lib.cluster import diagnose
from mnist_lib.cluster.diagnose import (ListFacts, StallWatch, claim_problem, creation_problem, diagnose_pod,
                                        expected_pods, image_pull_problem, mount_problem, pod_requests,
                                        schedule_problem)

NS = "mnist-it"
T0 = "2026-12-01T10:00:00Z"


# -- the objects, as the API server sends them ------------------------------------------------

def pod(name="it-job-x7k2p", phase="Pending", conditions=(), container_statuses=None, claim="mnist-outputs",
        requests=None, limits=None, node=None, job="it-job", uid=None) -> dict[str, Any]:
    requests = requests or {"cpu": "500m", "memory": "1Gi"}
    limits = limits or {"cpu": "2", "memory": "3Gi"}
    spec: dict[str, Any] = {
        "containers": [{"name": "tensorflow", "image": "mnist-course:latest", "imagePullPolicy": "IfNotPresent",
                        "command": ["python", "-m", "mnist_lib.train"],
                        "resources": {"requests": requests, "limits": limits},
                        "volumeMounts": [{"name": "outputs", "mountPath": "/outputs"},
                                         {"name": "kube-api-access-9dx4q", "readOnly": True,
                                          "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
        "restartPolicy": "OnFailure", "schedulerName": "default-scheduler", "serviceAccountName": "default",
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300}],
        "volumes": [{"name": "outputs", "persistentVolumeClaim": {"claimName": claim}},
                    {"name": "kube-api-access-9dx4q", "projected": {"defaultMode": 420, "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}]}
    if node:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": phase, "qosClass": "Burstable", "conditions": list(conditions)}
    if container_statuses is not None:
        status["containerStatuses"] = container_statuses
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "uid": uid or f"uid-{name}", "creationTimestamp": T0,
                         "labels": {"job-name": job, "batch.kubernetes.io/job-name": job},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                                              "uid": f"uid-{job}", "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": spec, "status": status}


def unschedulable(message: str) -> dict[str, Any]:
    return {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastTransitionTime": T0}


SCHEDULED = {"type": "PodScheduled", "status": "True", "lastTransitionTime": T0}
CREATING = [{"name": "tensorflow", "image": "mnist-course:latest", "imageID": "", "ready": False,
             "restartCount": 0, "started": False, "state": {"waiting": {"reason": "ContainerCreating"}}}]
UNBOUND_IMMEDIATE = ("0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: "
                     "0/1 nodes are available: 1 Preemption is not helpful for scheduling.")
INSUFFICIENT_CPU = ("0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
                    "1 No preemption victims found for incoming pod.")


def claim(name="mnist-outputs", phase="Pending", storage_class: str | None = "local-path",
          modes=("ReadWriteOnce",), volume=None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": list(modes), "resources": {"requests": {"storage": "5Gi"}},
                            "volumeMode": "Filesystem"}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    if volume:
        spec["volumeName"] = volume
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "creationTimestamp": T0,
                         "finalizers": ["kubernetes.io/pvc-protection"]},
            "spec": spec, "status": {"phase": phase}}


def event(about: dict[str, Any], reason: str, message: str, type_="Warning", at="2026-12-01T10:00:01Z",
          count=1, source="persistentvolume-controller", version="1000") -> dict[str, Any]:
    meta = about["metadata"]
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.18{version}", "namespace": NS, "resourceVersion": version,
                         "creationTimestamp": at},
            "involvedObject": {"kind": about["kind"], "namespace": NS, "name": meta["name"], "uid": meta["uid"],
                               "apiVersion": about.get("apiVersion", "v1")},
            "reason": reason, "message": message, "type": type_, "count": count,
            "firstTimestamp": at, "lastTimestamp": at, "source": {"component": source},
            "reportingComponent": source, "reportingInstance": ""}


def storage_class(name="local-path", default=True, provisioner="rancher.io/local-path",
                  mode="WaitForFirstConsumer") -> dict[str, Any]:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name, "uid": f"uid-{name}", "annotations": annotations},
            "provisioner": provisioner, "reclaimPolicy": "Delete", "volumeBindingMode": mode}


def node(name="vm", cpu="2", memory="8026712Ki", taints=None) -> dict[str, Any]:
    spec = {"podCIDR": "10.244.0.0/24"}
    if taints:
        spec["taints"] = taints
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": f"uid-{name}"}, "spec": spec,
            "status": {"capacity": {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "30Gi"},
                       "allocatable": {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "30Gi"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def job(name="it-job", kind="Job") -> dict[str, Any]:
    if kind == "TFJob":
        return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob",
                "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
                "spec": {"tfReplicaSpecs": {"Worker": {"replicas": 2, "restartPolicy": "OnFailure"}}}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"parallelism": 1, "completions": 1, "backoffLimit": 2}, "status": {}}


def quota(name="it-quota", hard=None, used=None) -> dict[str, Any]:
    hard = hard or {"requests.cpu": "200m", "requests.memory": "1Gi", "pods": "10"}
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": NS},
            "spec": {"hard": hard}, "status": {"hard": hard, "used": used or {k: "0" for k in hard}}}


QUOTA_REFUSAL = ('Error creating: pods "it-job-x7k2p" is forbidden: exceeded quota: it-quota, requested: '
                 'requests.cpu=500m, used: requests.cpu=0, limited: requests.cpu=200m')


# -- images and containers -------------------------------------------------------------------------

def test_image_pull_message_is_unchanged():
    waiting = [{"name": "tensorflow", "image": "mnist:typo", "imageID": "", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImageNeverPull",
                                      "message": 'Container image "mnist:typo" is not present with pull '
                                                 'policy of Never'}}}]
    err = image_pull_problem(pod(container_statuses=waiting), job="it-job")
    assert isinstance(err, cluster.ImagePullError) and isinstance(err, cluster.PodStuckError)
    assert str(err) == (
        "pod it-job-x7k2p cannot pull image 'mnist:typo' (ErrImageNeverPull: Container image \"mnist:typo\" is "
        "not present with pull policy of Never). Check the image name and tag, that it was pushed to a registry "
        "the cluster can reach (with kind: `kind load docker-image IMAGE`), and imagePullSecrets for a private "
        "registry. The job keeps trying: delete it with delete_job('it-job').")


def test_create_container_config_error_after_a_moment():
    waiting = [{"name": "tensorflow", "image": "mnist-course:latest", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError",
                                      "message": 'secret "registry-token" not found'}}}]
    stuck = pod(conditions=[SCHEDULED], container_statuses=waiting, node="vm")
    assert diagnose.container_problem(stuck, waited=1) is None
    err = diagnose.container_problem(stuck, waited=5, job="it-job")
    assert isinstance(err, cluster.PodStuckError) and 'secret "registry-token" not found' in str(err)


# -- claims -------------------------------------------------------------------------------------

def test_claim_naming_a_missing_storage_class():
    pvc = claim("it-claim", storage_class="no-such-class")
    stuck = pod(claim="it-claim", conditions=[unschedulable(UNBOUND_IMMEDIATE)])
    events = [event(pvc, "ProvisioningFailed", 'storageclass.storage.k8s.io "no-such-class" not found', count=3)]
    classes = [storage_class(), storage_class("nfs", default=False, provisioner="nfs.csi.k8s.io", mode="Immediate")]
    err = claim_problem(stuck, {"it-claim": pvc}, {"it-claim": events}, classes, waited=4, job="it-job")
    assert isinstance(err, cluster.VolumeError)
    message = str(err)
    assert 'its volume claim it-claim (namespace mnist-it) is Pending and will stay so: it names StorageClass ' \
           '"no-such-class", which does not exist' in message
    assert ("StorageClasses on this cluster: local-path (the default; provisioner rancher.io/local-path, "
            "WaitForFirstConsumer), nfs (provisioner nfs.csi.k8s.io, Immediate)") in message
    assert "set MNIST_STORAGE_CLASS to one of them" in message
    assert "kubectl -n mnist-it delete pvc it-claim" in message and "manifests.volume_claim(storage_class=" in message
    assert message.endswith("delete it with delete_job('it-job').")
    # The StorageClasses may not be listable (RBAC): the volume controller's words still tell.
    err = claim_problem(stuck, {"it-claim": pvc}, {"it-claim": events}, None, waited=4)
    assert '"no-such-class", which does not exist' in str(err) and "unknown (you may not list them" in str(err)


def test_claim_without_class_on_a_cluster_without_default():
    pvc = claim(storage_class=None)
    stuck = pod(conditions=[unschedulable(UNBOUND_IMMEDIATE)])
    events = [event(pvc, "FailedBinding", "no persistent volumes available for this claim and no storage class is set",
                    type_="Normal", count=5)]
    err = claim_problem(stuck, {"mnist-outputs": pvc}, {"mnist-outputs": events}, [], waited=4)
    assert isinstance(err, cluster.VolumeError)
    assert "it names no StorageClass, the cluster has no default one" in str(err)
    assert "StorageClasses on this cluster: none" in str(err) and "ask your cluster admin" in str(err)


def test_wait_for_first_consumer_is_not_a_problem():
    pvc = claim()
    waiting = [event(pvc, "WaitForFirstConsumer", "waiting for first consumer to be created before binding",
                     type_="Normal")]
    assert claim_problem(pod(), {"mnist-outputs": pvc}, {"mnist-outputs": waiting}, [storage_class()], 10) is None
    provisioning = waiting + [event(pvc, "ExternalProvisioning",
                                    "Waiting for a volume to be created either by the external provisioner "
                                    "'rancher.io/local-path' or manually by the system administrator. If volume "
                                    "creation is delayed, please verify that the provisioner is running and "
                                    "correctly registered.", type_="Normal", at="2026-12-01T10:00:02Z",
                                    version="1001")]
    scheduled = pod(conditions=[SCHEDULED])
    assert claim_problem(scheduled, {"mnist-outputs": pvc}, {"mnist-outputs": provisioning}, [storage_class()],
                         10) is None
    err = claim_problem(scheduled, {"mnist-outputs": pvc}, {"mnist-outputs": provisioning}, [storage_class()], 90)
    assert isinstance(err, cluster.VolumeError) and "has made no volume in 90 s" in str(err)
    assert "rancher.io/local-path" in str(err)


def test_provisioner_error_is_reported():
    pvc = claim()
    events = [event(pvc, "ExternalProvisioning", "Waiting for a volume to be created", type_="Normal"),
              event(pvc, "ProvisioningFailed", 'failed to provision volume with StorageClass "local-path": '
                    'failed to create volume pvc-1: mkdir /var/lib/local-path: permission denied',
                    at="2026-12-01T10:00:03Z", version="1002", source="rancher.io/local-path")]
    err = claim_problem(pod(conditions=[SCHEDULED]), {"mnist-outputs": pvc}, {"mnist-outputs": events},
                        [storage_class()], 5)
    assert isinstance(err, cluster.VolumeError)
    assert 'the provisioner rancher.io/local-path of StorageClass "local-path" failed to make its volume' in str(err)
    assert "permission denied" in str(err)


def test_missing_and_bound_claims():
    err = claim_problem(pod(), {"mnist-outputs": None}, {}, [storage_class()], 5)
    assert isinstance(err, cluster.VolumeError) and "which does not exist in namespace mnist-it" in str(err)
    assert "prepare_namespace" in str(err)
    bound = claim(phase="Bound", volume="pvc-1")
    assert claim_problem(pod(), {"mnist-outputs": bound}, {}, [storage_class()], 5) is None
    assert claim_problem(pod(), {"mnist-outputs": {}}, {}, [storage_class()], 5) is None  # unknown: say nothing


# -- scheduling ----------------------------------------------------------------------------------

def test_more_cpu_than_any_node_has():
    big = pod(requests={"cpu": "64", "memory": "1Gi"}, limits={"cpu": "64", "memory": "3Gi"},
              conditions=[unschedulable(INSUFFICIENT_CPU)])
    requested = {"vm": {"cpu": Decimal("1.1"), "memory": Decimal(2 ** 30)}}
    assert schedule_problem(big, [node()], requested.get, waited=1) is None  # not yet
    err = schedule_problem(big, [node()], requested.get, waited=4, job="it-cpu")
    assert isinstance(err, cluster.UnschedulableError)
    message = str(err)
    assert ("cpu: it requests 64 CPUs, the largest node (vm) has 2 CPUs allocatable, of which pods there already "
            "request 1.1 CPUs (0.9 CPU free): it fits on no node, even an empty one") in message
    assert "Insufficient cpu" in message and "lower the pod's resources" in message and "bigger node" in message
    assert message.endswith("delete_job('it-cpu').")


def test_room_held_by_other_pods_is_said_only_after_a_while():
    wants = pod(requests={"cpu": "1500m", "memory": "1Gi"}, conditions=[unschedulable(INSUFFICIENT_CPU)])
    requested = {"vm": {"cpu": Decimal("1.1")}}
    assert schedule_problem(wants, [node()], requested.get, waited=10) is None
    err = schedule_problem(wants, [node()], requested.get, waited=61)
    assert isinstance(err, cluster.UnschedulableError)
    assert "pods there already request 1.1 CPUs (0.9 CPU free)" in str(err)
    assert "it starts when they finish" in str(err)


def test_nodes_not_listable_and_autoscaler():
    big = pod(requests={"cpu": "64"}, limits={"cpu": "64"}, conditions=[unschedulable(INSUFFICIENT_CPU)])
    assert schedule_problem(big, None, waited=10) is None  # cannot tell "never" from "not now"
    err = schedule_problem(big, None, waited=61)
    assert "the nodes cannot be listed here" in str(err) and "it requests 64 CPUs" in str(err)
    scale_up = [event(big, "TriggeredScaleUp", "pod triggered scale-up: [{pool-2 1->2 (max: 5)}]",
                      type_="Normal", source="cluster-autoscaler")]
    assert schedule_problem(big, [node()], events=scale_up, waited=10) is None


def test_tainted_nodes():
    says = "0/1 nodes are available: 1 node(s) had untolerated taint {gpu: true}. preemption: ..."
    err = schedule_problem(pod(conditions=[unschedulable(says)]), [node(taints=[{"key": "gpu", "value": "true",
                                                                                   "effect": "NoSchedule"}])], waited=4)
    assert isinstance(err, cluster.UnschedulableError) and "add a toleration" in str(err)
    starting = "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
    assert schedule_problem(pod(conditions=[unschedulable(starting)]), [node()], waited=10) is None


def test_claim_messages_are_left_to_claim_problem():
    assert schedule_problem(pod(conditions=[unschedulable(UNBOUND_IMMEDIATE)]), [node()], waited=10) is None


# -- mounting ------------------------------------------------------------------------------------

def test_multi_attach_says_read_write_many():
    pvc = claim(phase="Bound", volume="pvc-4f1c")
    stuck = pod("it-tfjob-worker-1", conditions=[SCHEDULED], container_statuses=CREATING, node="node-2")
    events = [event(stuck, "Scheduled", "Successfully assigned mnist-it/it-tfjob-worker-1 to node-2",
                    type_="Normal", source="default-scheduler"),
              event(stuck, "FailedAttachVolume", 'Multi-Attach error for volume "pvc-4f1c" Volume is already used '
                    "by pod(s) it-tfjob-worker-0", at="2026-12-01T10:00:02Z", version="1001",
                    source="attachdetach-controller")]
    err = mount_problem(stuck, events, {"mnist-outputs": pvc}, waited=4, job="it-tfjob")
    assert isinstance(err, cluster.VolumeError)
    message = str(err)
    assert "on node node-2: its volume claim mnist-outputs is ReadWriteOnce" in message
    assert "already used by pod(s) it-tfjob-worker-0" in message
    assert "MNIST_ACCESS_MODE=ReadWriteMany" in message and "one-node cluster" in message


def test_image_being_pulled_is_not_a_mount_problem():
    stuck = pod(conditions=[SCHEDULED], container_statuses=CREATING, node="vm")
    events = [event(stuck, "FailedMount", 'MountVolume.SetUp failed for volume "kube-api-access-9dx4q" : object '
                    '"mnist-it"/"kube-root-ca.crt" not registered', source="kubelet"),
              event(stuck, "Pulling", 'Pulling image "mnist-course:latest"', type_="Normal",
                    at="2026-12-01T10:00:02Z", version="1001", source="kubelet")]
    assert mount_problem(stuck, events, {}, waited=200) is None
    # the "not registered" warning of a new namespace passes by itself
    assert mount_problem(stuck, events[:1], {}, waited=10) is None
    err = mount_problem(stuck, events[:1], {}, waited=70)
    assert isinstance(err, cluster.VolumeError) and "cannot be mounted" in str(err)


def test_failed_mount_of_the_claim():
    pvc = claim(phase="Bound", volume="pvc-9")
    stuck = pod(conditions=[SCHEDULED], container_statuses=CREATING, node="vm")
    events = [event(stuck, "FailedMount", 'MountVolume.SetUp failed for volume "pvc-9" : mount failed: exit '
                    'status 32 ... mount.nfs: Connection timed out', source="kubelet")]
    err = mount_problem(stuck, events, {"mnist-outputs": pvc}, waited=4)
    assert isinstance(err, cluster.VolumeError) and "kubectl -n mnist-it describe pvc mnist-outputs" in str(err)


# -- pods refused: quotas ------------------------------------------------------------------------

def test_quota_smaller_than_one_pod():
    events = [event(job(), "FailedCreate", QUOTA_REFUSAL, source="job-controller", count=4)]
    err = creation_problem("Job", "it-job", events, [quota()], waited=4, namespace=NS)
    assert isinstance(err, cluster.QuotaError)
    message = str(err)
    assert "Job it-job cannot create its pods: the ResourceQuota it-quota of namespace mnist-it" in message
    assert "one pod alone asks for more than the quota allows" in message
    assert "requests.cpu: a pod asks for 500m, the quota allows 200m and 0 is in use" in message
    assert "The quota it-quota allows: pods 10 (used 0), requests.cpu 200m (used 0), requests.memory 1Gi" in message
    assert "fewer replicas" in message and "delete jobs" in message and "instructor" in message
    assert creation_problem("Job", "it-job", events, None, waited=4) is not None  # quota unreadable: still said


def test_quota_held_by_running_pods_and_recovered_refusals():
    refusal = ('Error creating: pods "it-job-b" is forbidden: exceeded quota: it-quota, requested: '
               'requests.cpu=500m, used: requests.cpu=1, limited: requests.cpu=1200m')
    events = [event(job(), "FailedCreate", refusal, source="job-controller")]
    assert creation_problem("Job", "it-job", events, [quota()], waited=10) is None
    assert "pods already running use the rest" in str(creation_problem("Job", "it-job", events, [quota()], waited=61))
    created = events + [event(job(), "SuccessfulCreate", "Created pod: it-job-c", type_="Normal",
                              at="2026-12-01T10:00:09Z", version="1009", source="job-controller")]
    assert creation_problem("Job", "it-job", created, [quota()], waited=61) is None


def test_tfjob_refused_by_the_operator():
    tf = job("it-tfjob", kind="TFJob")
    events = [event(tf, "FailedCreatePod", QUOTA_REFUSAL.replace("it-job-x7k2p", "it-tfjob-worker-0"),
                    source="tfjob-controller")]
    err = creation_problem("TFJob", "it-tfjob", events, [quota()], waited=4, namespace=NS)
    assert isinstance(err, cluster.QuotaError) and "TFJob it-tfjob cannot create its pods" in str(err)


def test_quota_that_needs_limits_and_limit_ranges():
    must = ('Error creating: pods "it-job-x" is forbidden: failed quota: it-quota: must specify '
            'limits.cpu for: tensorflow; limits.memory for: tensorflow')
    err = creation_problem("Job", "it-job", [event(job(), "FailedCreate", must)], [quota()], waited=4)
    assert isinstance(err, cluster.QuotaError) and "must specify limits.cpu" in str(err)
    limit_range = ('Error creating: pods "it-job-x" is forbidden: maximum cpu usage per Container is 1, '
                   'but limit is 2')
    err = creation_problem("Job", "it-job", [event(job(), "FailedCreate", limit_range)], None, waited=4)
    assert isinstance(err, cluster.QuotaError) and "LimitRange" in str(err)
    no_account = ('Error creating: pods "it-job-x" is forbidden: error looking up service account mnist-it/default: '
                  'serviceaccount "default" not found')
    assert creation_problem("Job", "it-job", [event(job(), "FailedCreate", no_account)], None, waited=10) is None


# -- the parts together ------------------------------------------------------------------------

def test_diagnose_pod_looks_up_only_what_it_needs():
    class Counting(ListFacts):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.asked: list[str] = []

        def __getattribute__(self, name):
            if name in ("claim", "events", "storage_classes", "nodes", "requested_on", "quotas"):
                object.__getattribute__(self, "asked").append(name)
            return object.__getattribute__(self, name)

    big = pod(requests={"cpu": "64"}, limits={"cpu": "64"}, conditions=[unschedulable(INSUFFICIENT_CPU)])
    facts = Counting(claims=[claim(phase="Bound", volume="pvc-1")], nodes=[node()], pods=[])
    err = diagnose_pod(big, facts, waited=4, job="it-cpu")
    assert isinstance(err, cluster.UnschedulableError)
    assert "storage_classes" not in facts.asked and "quotas" not in facts.asked  # the claim is bound


def test_requests_and_expected_pods():
    with_init = pod(requests={"cpu": "500m", "memory": "1Gi"})
    with_init["spec"]["initContainers"] = [{"name": "init", "resources": {"requests": {"cpu": "2"}}}]
    assert pod_requests(with_init) == {"cpu": Decimal(2), "memory": Decimal(2 ** 30)}
    assert diagnose.show("cpu", Decimal("0.5")) == "0.5 CPU" and diagnose.show("memory", Decimal(3 * 2 ** 30)) == "3Gi"
    assert expected_pods("Job", job(), []) == 1
    assert expected_pods("Job", job(), [pod(phase="Succeeded")]) == 0
    assert expected_pods("TFJob", job("t", "TFJob"), [pod(phase="Succeeded")]) == 1
    assert expected_pods("Job", {"spec": {"suspend": True}}, []) == 0


class FakeBackend:
    """What StallWatch uses of a KubernetesBackend, with counters."""

    namespace = NS

    def __init__(self, pods, obj):
        self.pods, self.obj, self.reads, self.lists = pods, obj, 0, 0

    def _read(self, name, kind):
        self.reads += 1
        return kind, self.obj

    def _selector(self, kind, name, obj=None):
        return f"job-name={name}"

    def _pods(self, selector):
        self.lists += 1
        return self.pods


def test_stall_watch_timing_and_calls():
    now = [0.0]
    looks = []
    pvc = claim("it-claim", storage_class="no-such-class")
    facts = ListFacts(claims=[pvc], events=[event(pvc, "ProvisioningFailed",
                                                  'storageclass.storage.k8s.io "no-such-class" not found')],
                      storage_classes=[storage_class()])
    backend = FakeBackend([pod(claim="it-claim", conditions=[unschedulable(UNBOUND_IMMEDIATE)])], job())
    watch = StallWatch(backend, clock=lambda: now[0], facts=lambda b: looks.append(now[0]) or facts)
    for t in (0.0, 1.0, 2.0):
        now[0] = t
        assert watch.check_job("Job", "it-job", cluster.JobPhase.RUNNING) is None
    assert looks == [] and backend.lists == 3 and backend.reads == 1  # no closer look yet, the job read once
    now[0] = 3.5
    err = watch.check_job("Job", "it-job", cluster.JobPhase.RUNNING)
    assert isinstance(err, cluster.VolumeError) and looks == [3.5]
    now[0] = 4.5
    assert watch.check_job("Job", "it-job", cluster.JobPhase.RUNNING) is None  # looked 1 s ago: not yet again
    assert looks == [3.5]


def test_stall_watch_job_without_pods():
    now = [0.0]
    facts = ListFacts(events=[event(job(), "FailedCreate", QUOTA_REFUSAL, source="job-controller")],
                      quotas=[quota()])
    watch = StallWatch(FakeBackend([], job()), clock=lambda: now[0], facts=lambda b: facts)
    assert watch.check_job("Job", "it-job", cluster.JobPhase.CREATED) is None
    now[0] = 3.1
    err = watch.check_job("Job", "it-job", cluster.JobPhase.CREATED)
    assert isinstance(err, cluster.QuotaError) and "it-quota" in str(err)
    # finished jobs are not judged
    assert StallWatch(FakeBackend([], job()), clock=lambda: 99.0,
                      facts=lambda b: facts).check_job("Job", "it-job", cluster.JobPhase.SUCCEEDED) is None


@pytest.mark.parametrize("phase", ["Running", "Succeeded"])
def test_running_pods_need_no_look(phase):
    running = pod(phase=phase, conditions=[SCHEDULED], node="vm")
    calls = []
    watch = StallWatch(FakeBackend([running], job()), clock=lambda: 100.0, facts=lambda b: calls.append(1))
    assert watch.check_job("Job", "it-job", cluster.JobPhase.RUNNING) is None and calls == []


def test_a_class_made_since_the_refusal_is_not_reported():
    pvc = claim("it-claim", storage_class="fast")
    events = [event(pvc, "ProvisioningFailed", 'storageclass.storage.k8s.io "fast" not found')]
    stuck = pod(claim="it-claim", conditions=[unschedulable(UNBOUND_IMMEDIATE)])
    classes = [storage_class(), storage_class("fast", default=False, mode="Immediate")]
    assert claim_problem(stuck, {"it-claim": pvc}, {"it-claim": events}, classes, waited=10) is None


# -- on answers recorded from the course's test cluster (tests/data/diagnose/capture.py) ------------

CAPTURED = __import__("pathlib").Path(__file__).parent / "data" / "diagnose"


def captured(kind: str) -> list[dict[str, Any]]:
    import json

    return json.loads((CAPTURED / f"{kind}.json").read_text())


def captured_facts() -> ListFacts:
    return ListFacts(claims=captured("claims"), events=captured("events"), storage_classes=captured("storage_classes"),
                     nodes=captured("nodes"), pods=captured("pods"), quotas=captured("quotas"))


def test_captured_missing_storage_class():
    (stuck,) = [p for p in captured("pods") if p["metadata"]["name"].startswith("cap-no-class-")]
    err = diagnose_pod(stuck, captured_facts(), waited=4, job="cap-no-class")
    assert isinstance(err, cluster.VolumeError)
    assert 'it names StorageClass "no-such-class", which does not exist' in str(err)
    assert "standard (the default; provisioner rancher.io/local-path, WaitForFirstConsumer)" in str(err)


def test_captured_64_cpus_with_a_wait_for_first_consumer_claim():
    (big,) = [p for p in captured("pods") if p["metadata"]["name"].startswith("cap-64-cpus-")]
    facts = captured_facts()
    # Its claim mnist-outputs is Pending too (WaitForFirstConsumer, WaitForPodScheduled): not the problem.
    assert facts.claim("mnist-outputs")["status"]["phase"] == "Pending"
    err = diagnose_pod(big, facts, waited=4, job="cap-64-cpus")
    assert isinstance(err, cluster.UnschedulableError)
    assert "it requests 64 CPUs, the largest node (vm) has 2 CPUs allocatable" in str(err)


@pytest.mark.parametrize("kind, name", [("Job", "cap-quota"), ("TFJob", "cap-quota-tf")])
def test_captured_quota_refusals(kind, name):
    (obj,) = [o for o in captured("jobs" if kind == "Job" else "tfjobs") if o["metadata"]["name"] == name]
    facts = captured_facts()
    err = creation_problem(kind, name, facts.events(obj), facts.quotas(), waited=4, namespace="mnist-diag-quota")
    assert isinstance(err, cluster.QuotaError)
    assert "ResourceQuota cap-budget" in str(err) and "a pod asks for 500m, the quota allows 100m" in str(err)
    assert expected_pods(kind, obj, []) == 1
