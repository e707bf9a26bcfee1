"""PROBE — not wired into CI yet (issue 6).
Runs the course's TFJob manifest (manifests/tfjob-multi-worker.yaml, args shrunk) through the course's
KubernetesBackend against the probe cluster with the real training operator: hostPath PV for the
PVC, apply, wait, print the TF_CONFIG the operator injected, status and logs. Usage: tfjob_smoke.py KUBECONFIG"""
import json, os, sys, time
os.environ["KUBECONFIG"] = os.path.abspath(sys.argv[1])
sys.path.insert(0, "/work/main")
import yaml
from kubernetes import client, config
from mnist_lib.cluster.kubernetes import KubernetesBackend
config.load_kube_config()
v = client.CoreV1Api()
pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "mnist-outputs-probe"},
      "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
               "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": "/var/lib/k8s-probe/pv/mnist-outputs", "type": "Directory"}}}
try:
    v.create_persistent_volume(pv)
except client.ApiException as e:
    if e.status != 409: raise
b = KubernetesBackend(namespace="mnist")
objs = [o for f in ("namespace.yaml", "tfjob-multi-worker.yaml") for o in yaml.safe_load_all(open(f"/work/main/manifests/{f}")) if o]
tf = objs[-1]
c = tf["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
a = c["args"]; a[a.index("--epochs") + 1] = "1"; a[a.index("--train-limit") + 1] = os.environ.get("TRAIN_LIMIT", "2048")
a[a.index("--architecture") + 1] = "mlp"
c["resources"]["requests"] = {"cpu": "100m", "memory": "512Mi"}
t0 = time.time()
print("apply:", b.apply(objs))
name = tf["metadata"]["name"]
seen = set()
while True:
    st = b.get_job(name, kind="TFJob")
    key = (st.phase if hasattr(st, "phase") else str(st))[:200]
    if key not in seen:
        seen.add(key); print(f"{time.time() - t0:6.1f} s  {key}")
    pods = v.list_namespaced_pod("mnist", label_selector=f"training.kubeflow.org/job-name={name}").items
    if pods and not hasattr(sys, "_env_printed") and all(p.status.phase in ("Running", "Succeeded") for p in pods):
        sys._env_printed = True
        for p in pods:
            env = {e.name: e.value for e in p.spec.containers[0].env or []}
            print(p.metadata.name, p.status.phase, p.status.pod_ip, "TF_CONFIG=", env.get("TF_CONFIG"))
        print("backend.replica_env worker 1:", b.replica_env(name, "worker", 1).get("TF_CONFIG"))
    if getattr(st, "phase", "") in ("Succeeded", "Failed") or time.time() - t0 > float(os.environ.get("TIMEOUT", "600")):
        break
    time.sleep(2)
print("final:", st)
for i in (0, 1):
    try:
        print(f"--- worker {i} log tail:\n", b.get_job_logs(name, "worker", i, tail=8))
    except Exception as e:
        print(f"--- worker {i} logs: {e}")
