"""Smoke test of the test cluster (infra/k8s/cluster.sh) with the course's Python client.

Checks: the node is Ready; a pod runs (exec and logs through the API); CoreDNS answers through
Service kube-dns (from the host, and from a pod when the course image is imported); the default
StorageClass provisions a claim without a class in a fresh namespace, a pod running as uid 1000
writes to it, and deleting the claim removes its folder; the TFJob CRD is served (unless
--no-operator). --tfjob also runs the course's TFJob manifest (2 workers, shrunk args) through the
course's KubernetesBackend in its own namespace, with its claim from the default StorageClass.
--kwok checks the kwok fallback instead of the real node (a simulated node and a scheduled pod).

Usage: smoke.py [--tfjob] [--kwok] [--no-operator]   (KUBECONFIG from $K8S_STATE/env)
Run with the course's Python: .venv/bin/python infra/k8s/smoke.py
"""
import argparse
import os
import random
import socket
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STATE = Path(os.environ.get("K8S_STATE", "/tmp/mnist-course-k8s"))
ENV = dict(line.split("=", 1) for line in (STATE / "env").read_text().split() if "=" in line) \
    if (STATE / "env").exists() else {}
os.environ.setdefault("KUBECONFIG", ENV.get("KUBECONFIG", str(STATE / "admin.kubeconfig")))  # read at import
sys.path.insert(0, str(REPO))

from kubernetes import client, config  # noqa: E402
from kubernetes.stream import stream  # noqa: E402

DNS_SERVICE_IP = "10.96.0.10"
COURSE_IMAGE = "docker.io/library/mnist-course:latest"
STORAGE_CLASS = "standard"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
T0 = time.monotonic()


def ok(msg):
    print(f"ok   {time.monotonic() - T0:6.1f} s  {msg}")


def fail(msg):
    print(f"FAIL {time.monotonic() - T0:6.1f} s  {msg}")
    sys.exit(1)


def wait(what, cond, timeout=120.0, interval=0.3):
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if result:
            return result
        if time.monotonic() > deadline:
            fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def dns_query(server, name):
    """One A query over UDP, without dependencies; returns the first address or None."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(q, (server, 53))
        r = s.recv(4096)
    rid, flags, _, ancount = struct.unpack(">HHHH", r[:8])
    if rid != qid or flags & 0xF or not ancount:
        return None
    return socket.inet_ntoa(r[-4:])  # a single A answer ends with its 4-byte address


def check_node(v):
    nodes = v.list_node().items
    real = [n for n in nodes if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") != "fake"]
    if not real:
        fail("no node registered")
    n = real[0]
    ready = any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    if not ready:
        fail(f"node {n.metadata.name} is not Ready")
    ok(f"node {n.metadata.name} Ready ({n.status.node_info.container_runtime_version}, "
       f"kubelet {n.status.node_info.kubelet_version})")
    return {name for img in n.status.images or [] for name in img.names or []}


def check_pod(v, images, ns="default"):
    image = COURSE_IMAGE if COURSE_IMAGE in images else None
    name = f"smoke-{random.randrange(16**6):06x}"
    if image:  # resolve a service name from inside the pod, then idle
        cmd = ["sh", "-c", "getent hosts kubernetes.default.svc.cluster.local; sleep 3600"]
    else:      # only the pause image is there: it just sleeps
        image, cmd = next(i for i in images if "/pause:" in i), None
    spec = {"containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                            **({"command": cmd} if cmd else {})}],
            "terminationGracePeriodSeconds": 0}
    v.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    try:
        t = time.monotonic()
        p = wait(f"pod {name} Running", lambda: (lambda p: p if p.status.phase == "Running" else None)(
            v.read_namespaced_pod(name, ns)), 90)
        ok(f"pod {name} ({image}) Running after {time.monotonic() - t:.1f} s, podIP {p.status.pod_ip}")
        if cmd:
            out = wait("pod log", lambda: v.read_namespaced_pod_log(name, ns).strip(), 30)
            if "10.96.0.1" not in out:
                fail(f"in-pod DNS: kubernetes.default.svc.cluster.local -> {out!r}")
            ok(f"in-pod DNS: {out.split()[0]} (CoreDNS through kube-dns)")
            out = stream(v.connect_get_namespaced_pod_exec, name, ns, command=["id", "-u"],
                         stderr=True, stdin=False, stdout=True, tty=False)
            ok(f"exec through the API: uid {out.strip()}")
    finally:
        v.delete_namespaced_pod(name, ns, grace_period_seconds=0)


def check_dns_from_host():
    addr = dns_query(DNS_SERVICE_IP, "kubernetes.default.svc.cluster.local")
    if addr != "10.96.0.1":
        fail(f"DNS from the host via {DNS_SERVICE_IP}: got {addr}")
    ok(f"host DNS via {DNS_SERVICE_IP}: kubernetes.default.svc.cluster.local -> {addr}")


def claim_folder(v, ns, claim):
    """The node's folder behind a bound claim (its PV's hostPath), or None."""
    pvc = v.read_namespaced_persistent_volume_claim(claim, ns)
    if pvc.status.phase != "Bound":
        return None
    spec = v.read_persistent_volume(pvc.spec.volume_name).spec
    return Path((spec.host_path or spec.local).path)


def delete_namespace(v, ns):
    v.delete_namespace(ns)
    wait(f"namespace {ns} deleted", lambda: ns not in {n.metadata.name for n in v.list_namespace().items}, 120, 1)


def check_storage(api, v, images):
    """Default StorageClass: a claim without a class binds when a pod uses it; Delete removes the folder."""
    sc = client.StorageV1Api(api).read_storage_class(STORAGE_CLASS)
    if (sc.metadata.annotations or {}).get(DEFAULT_CLASS) != "true":
        fail(f"StorageClass {STORAGE_CLASS} is not the default class")
    ok(f"StorageClass {STORAGE_CLASS} (default): {sc.provisioner}, {sc.volume_binding_mode}, {sc.reclaim_policy}")
    # the course image, else local-path's helper image (busybox): both have a shell
    image = COURSE_IMAGE if COURSE_IMAGE in images else next(i for i in images if "/local-path-helper:" in i)
    ns, claim = f"smoke-storage-{random.randrange(16**4):04x}", "data"
    v.create_namespace({"metadata": {"name": ns}})
    try:
        v.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": claim}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        time.sleep(1)
        phase = v.read_namespaced_persistent_volume_claim(claim, ns).status.phase
        if phase != "Pending":
            fail(f"claim {ns}/{claim} is {phase} before any pod uses it (WaitForFirstConsumer)")
        t = time.monotonic()
        v.create_namespaced_pod(ns, {"metadata": {"name": "writer"}, "spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000, "runAsNonRoot": True},
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "mkdir -p /data/sub && id -u > /data/sub/hello"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
        pod = wait("writer pod finished", lambda: (lambda p: p if p.status.phase in ("Succeeded", "Failed") else None)(
            v.read_namespaced_pod("writer", ns)), 120)
        if pod.status.phase != "Succeeded":
            fail(f"the writer pod (uid 1000) failed: {v.read_namespaced_pod_log('writer', ns)!r}")
        folder = claim_folder(v, ns, claim)
        if folder is None:
            fail(f"claim {ns}/{claim} not Bound after its pod ran")
        written = folder / "sub" / "hello"
        if written.read_text().strip() != "1000" or written.stat().st_uid != 1000:
            fail(f"{written}: {written.read_text()!r}, owner uid {written.stat().st_uid}")
        ok(f"claim {ns}/{claim} (no class) bound, written by uid 1000 in {time.monotonic() - t:.1f} s: {written}")
        pv = v.read_namespaced_persistent_volume_claim(claim, ns).spec.volume_name
        t = time.monotonic()
        v.delete_namespaced_pod("writer", ns, grace_period_seconds=0)
        v.delete_namespaced_persistent_volume_claim(claim, ns)
        wait(f"PV {pv} deleted", lambda: pv not in {p.metadata.name for p in v.list_persistent_volume().items}, 120)
        wait(f"{folder} removed", lambda: not folder.exists(), 30)
        ok(f"claim deleted: PV {pv} and its folder removed after {time.monotonic() - t:.1f} s (reclaimPolicy Delete)")
    finally:
        delete_namespace(v, ns)


def check_tfjob_crd(api):
    try:
        res = client.ApiextensionsV1Api(api).read_custom_resource_definition("tfjobs.kubeflow.org")
    except client.ApiException as e:
        fail(f"TFJob CRD: {e.status} {e.reason} (cluster.sh install-operator installs it)")
    if not any(c.type == "Established" and c.status == "True" for c in res.status.conditions or []):
        fail("TFJob CRD not established")
    client.CustomObjectsApi(api).list_cluster_custom_object("kubeflow.org", "v1", "tfjobs")
    ok("TFJob CRD served (kubeflow.org/v1 tfjobs)")


def check_kwok(v):
    name = "kwok-node-smoke"
    v.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": name, "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
        "labels": {"type": "kwok", "kubernetes.io/hostname": name}},
        "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]}})
    try:
        wait("kwok node Ready", lambda: any(c.type == "Ready" and c.status == "True"
                                            for c in v.read_node(name).status.conditions or []), 60)
        ok(f"kwok node {name} Ready")
        v.create_namespaced_pod("default", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kwok-pod"},
            "spec": {"tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
                     "nodeSelector": {"type": "kwok"},
                     "containers": [{"name": "c", "image": "mnist-course:latest"}]}})
        p = wait("kwok pod Running", lambda: (lambda p: p if p.status.phase == "Running" else None)(
            v.read_namespaced_pod("kwok-pod", "default")), 60)
        ok(f"pod scheduled on {p.spec.node_name} and 'Running' (simulated; no container runs)")
        v.delete_namespaced_pod("kwok-pod", "default", grace_period_seconds=0)
    finally:
        v.delete_node(name)


def check_tfjob(v, ns="mnist-smoke"):
    import yaml
    from mnist_lib.cluster.kubernetes import KubernetesBackend

    objs = [o for f in ("namespace.yaml", "tfjob-multi-worker.yaml")
            for o in yaml.safe_load_all((REPO / "manifests" / f).read_text()) if o]
    for o in objs:
        if o["kind"] == "Namespace":
            o["metadata"]["name"] = ns
        else:
            o["metadata"]["namespace"] = ns
    tf = objs[-1]
    c = tf["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    a = c["args"]
    a[a.index("--epochs") + 1] = "1"
    a[a.index("--train-limit") + 1] = "2048"
    a[a.index("--architecture") + 1] = "mlp"
    c["resources"]["requests"] = {"cpu": "100m", "memory": "512Mi"}
    b = KubernetesBackend(namespace=ns)
    name = tf["metadata"]["name"]
    try:
        t = time.monotonic()
        b.apply(objs)
        st = wait("TFJob finished", lambda: (lambda s: s if s.finished else None)(b.get_job(name, kind="TFJob")),
                  600, 2)
        if st.phase != "Succeeded":
            fail(f"TFJob {st.phase}: {st.message}; log: {b.get_job_logs(name, 'worker', 0, tail=20)}")
        ok(f"TFJob {ns}/{name} Succeeded after {time.monotonic() - t:.1f} s (real operator, 2 workers)")
        volume = claim_folder(v, ns, "mnist-outputs")  # provisioned by the default StorageClass
        exported = sorted(p.name for p in (volume / name / "export").glob("*")) if volume else []
        if not exported:
            fail(f"nothing exported to {volume}/{name}/export")
        ok(f"model exported to the claim's volume: {volume}/{name}/export/{exported}")
    finally:
        delete_namespace(v, ns)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tfjob", action="store_true", help="also run the course's TFJob (about 30 s)")
    ap.add_argument("--kwok", action="store_true", help="the cluster runs in KWOK=1 mode")
    ap.add_argument("--no-operator", action="store_true", help="skip the TFJob CRD check (OPERATOR=0)")
    args = ap.parse_args()
    api = config.new_client_from_config()
    v = client.CoreV1Api(api)
    ok(f"apiserver {client.VersionApi(api).get_code().git_version} ({os.environ['KUBECONFIG']})")
    if args.kwok:
        check_kwok(v)
    else:
        images = check_node(v)
        check_pod(v, images)
    check_dns_from_host()
    if not args.kwok:
        check_storage(api, v, images)
    if not args.no_operator:
        check_tfjob_crd(api)
        if args.tfjob and not args.kwok:
            check_tfjob(v)
    ok("smoke test passed")


if __name__ == "__main__":
    main()
