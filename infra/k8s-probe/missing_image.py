"""PROBE — not wired into CI yet (issue 6).
Error path "image not present": a Job whose image is not in the node's containerd, with
imagePullPolicy Never (so nothing is pulled from outside), through the course backend.
Leaves the pod stuck in the sandbox (ContainerCreating / ErrImageNeverPull) on purpose. Usage: missing_image.py KUBECONFIG"""
import os, sys, time
os.environ["KUBECONFIG"] = os.path.abspath(sys.argv[1])
sys.path.insert(0, "/work/main")
from mnist_lib.cluster.kubernetes import KubernetesBackend
b = KubernetesBackend(namespace="mnist")
b.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mnist"}},
         {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "missing-image"}, "spec": {"backoffLimit": 0,
          "template": {"spec": {"restartPolicy": "Never", "containers": [
              {"name": "c", "image": "mnist-course:no-such-tag", "imagePullPolicy": "Never", "command": ["true"]}]}}}}])
t0 = time.time()
while time.time() - t0 < 60:
    st = b.get_job("missing-image", kind="Job")
    pods = b.core.list_namespaced_pod("mnist", label_selector="job-name=missing-image").items
    w = [c.state.waiting.reason for p in pods for c in (p.status.container_statuses or []) if c.state.waiting]
    if any(r != "ContainerCreating" for r in w):
        break
    time.sleep(0.5)
print(f"after {time.time() - t0:.1f} s: job {st.phase}; container waiting reasons: {w}")
try:
    b.check_pods(st)
    print("check_pods raised nothing")
except Exception as e:
    print("check_pods raised:", type(e).__name__, str(e)[:300])
