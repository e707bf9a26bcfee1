"""PROBE — not wired into CI yet (issue 6).
Node smoke test: a Pod from a locally imported image (imagePullPolicy Never) runs on the real
kubelet/containerd node; logs and exec work through the API server; a Job completes.
Usage: node_smoke.py KUBECONFIG IMAGE"""
import os, sys, time
os.environ["KUBECONFIG"] = os.path.abspath(sys.argv[1])
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config()
v, b = client.CoreV1Api(), client.BatchV1Api()
img = sys.argv[2]
ns = "default"
t0 = time.time()
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe-pod"},
       "spec": {"containers": [{"name": "c", "image": img, "imagePullPolicy": "Never",
                                "command": ["sh", "-c", "echo hello from $(hostname); cat /proc/1/cgroup | head -3; sleep 3600"],
                                "resources": {"limits": {"memory": "64Mi", "cpu": "200m"}}}],
                "terminationGracePeriodSeconds": 1}}
v.create_namespaced_pod(ns, pod)
while (p := v.read_namespaced_pod("probe-pod", ns)).status.phase != "Running":
    if time.time() - t0 > 60:
        print("NOT RUNNING:", p.status); sys.exit(1)
    time.sleep(0.2)
print(f"pod Running after {time.time() - t0:.1f} s, podIP {p.status.pod_ip}, node {p.spec.node_name}")
time.sleep(1)
print("logs:", v.read_namespaced_pod_log("probe-pod", ns).strip().replace("\n", " | "))
out = stream(v.connect_get_namespaced_pod_exec, "probe-pod", ns, command=["sh", "-c", "echo exec-ok; id -u"],
             stderr=True, stdin=False, stdout=True, tty=False)
print("exec:", out.strip().replace("\n", " | "))
t1 = time.time()
job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "probe-job"},
       "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
           {"name": "c", "image": img, "imagePullPolicy": "Never", "command": ["sh", "-c", "echo job-done"]}]}}}}
b.create_namespaced_job(ns, job)
while not (j := b.read_namespaced_job("probe-job", ns)).status.succeeded:
    if j.status.failed or time.time() - t1 > 60:
        print("JOB FAILED:", j.status); sys.exit(1)
    time.sleep(0.2)
print(f"job Complete after {time.time() - t1:.1f} s")
v.delete_namespaced_pod("probe-pod", ns, grace_period_seconds=0)
b.delete_namespaced_job("probe-job", ns, propagation_policy="Foreground")
