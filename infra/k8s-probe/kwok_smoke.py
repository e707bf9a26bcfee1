"""PROBE — not wired into CI yet (issue 6).
Fallback path: a kwok-simulated node (annotation kwok.x-k8s.io/node=fake, taint) on the real control
plane; a Job's pod is scheduled by the real scheduler and kwok marks it Running (containers never run).
Usage: kwok_smoke.py KUBECONFIG"""
import os, sys, time
os.environ["KUBECONFIG"] = os.path.abspath(sys.argv[1])
from kubernetes import client, config
config.load_kube_config()
v, b = client.CoreV1Api(), client.BatchV1Api()
t0 = time.time()
v.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "kwok-node-0",
    "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
    "labels": {"type": "kwok", "kubernetes.io/hostname": "kwok-node-0"}},
    "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]}})
while not any(c.type == "Ready" and c.status == "True" for c in (v.read_node("kwok-node-0").status.conditions or [])):
    if time.time() - t0 > 60: print("node not Ready"); sys.exit(1)
    time.sleep(0.2)
print(f"kwok node Ready after {time.time() - t0:.1f} s")
t1 = time.time()
v.create_namespaced_pod("default", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kwok-pod"},
    "spec": {"tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
             "containers": [{"name": "c", "image": "mnist-course:latest"}]}})
while (p := v.read_namespaced_pod("kwok-pod", "default")).status.phase != "Running":
    if time.time() - t1 > 60: print("pod not Running:", p.status); sys.exit(1)
    time.sleep(0.2)
print(f"pod Running on {p.spec.node_name} (simulated, podIP {p.status.pod_ip}) after {time.time() - t1:.1f} s")
try:
    print("logs:", v.read_namespaced_pod_log("kwok-pod", "default"))
except client.ApiException as e:
    print("logs from a kwok pod:", e.status, e.reason, "(expected: kwok does not run containers)")
