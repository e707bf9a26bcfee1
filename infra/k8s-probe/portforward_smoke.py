"""PROBE — not wired into CI yet (issue 6).
Applies the course's TensorBoard Deployment+Service (manifests/tensorboard.yaml) and reaches it through
KubernetesBackend.port_forward (API server -> kubelet -> pod). Usage: portforward_smoke.py KUBECONFIG"""
import os, sys, time, urllib.request
os.environ["KUBECONFIG"] = os.path.abspath(sys.argv[1])
sys.path.insert(0, "/work/main")
import yaml
from mnist_lib.cluster.kubernetes import KubernetesBackend
b = KubernetesBackend(namespace="mnist")
t0 = time.time()
print("apply:", b.apply([o for o in yaml.safe_load_all(open("/work/main/manifests/tensorboard.yaml")) if o]))
pf = b.port_forward("tensorboard", 6006, timeout=120)
print("port_forward:", pf)
url = getattr(pf, "url", None) or f"http://127.0.0.1:{getattr(pf, 'local_port', None) or pf.port}/"
for _ in range(120):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            print(f"HTTP {r.status} from TensorBoard through port_forward after {time.time() - t0:.1f} s ({url})"); break
    except Exception as e:
        err = e; time.sleep(1)
else:
    print("FAILED:", err)
b.delete([o for o in yaml.safe_load_all(open("/work/main/manifests/tensorboard.yaml")) if o])
