"""PROBE — not wired into CI yet (issue 6).
The operator's cert rotator stores the webhook certificate in Secret kubeflow/training-operator-webhook-cert
and waits for it to appear in /tmp/k8s-webhook-server/serving-certs (in a pod, a Secret volume does that).
Running the operator on the host, we copy the Secret to that folder ourselves. Usage: operator_certs.py KUBECONFIG"""
import base64, os, sys, time
os.environ["KUBECONFIG"] = os.path.abspath(sys.argv[1])
from kubernetes import client, config
config.load_kube_config()
d = "/tmp/k8s-webhook-server/serving-certs"
for _ in range(100):
    data = client.CoreV1Api().read_namespaced_secret("training-operator-webhook-cert", "kubeflow").data or {}
    if "tls.crt" in data:
        break
    time.sleep(0.2)
os.makedirs(d, exist_ok=True)
for k, v in data.items():
    with open(os.path.join(d, k), "wb") as f:
        f.write(base64.b64decode(v))
print("wrote", sorted(data), "to", d)
