"""PROBE — not wired into CI yet (issue 6).
Smoke test of the probe cluster with the course's Python client (kubernetes==37):
list namespaces, server-side apply a Namespace, read it back. Usage: smoke.py KUBECONFIG"""
import os, sys, time
os.environ["KUBECONFIG"] = os.path.abspath(sys.argv[1])  # read by kubernetes.config at import time
from kubernetes import client, config, dynamic

t0 = time.time()
api = config.new_client_from_config(config_file=sys.argv[1])
print("server version:", client.VersionApi(api).get_code().git_version)
print("namespaces:", [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items])
dyn = dynamic.DynamicClient(api)
ns = dyn.resources.get(api_version="v1", kind="Namespace")
body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mnist", "labels": {"probe": "issue-6"}}}
r = ns.server_side_apply(body=body, field_manager="k8s-probe", force_conflicts=True)
print("applied:", r.metadata.name, dict(r.metadata.labels), "managedFields:", [m.manager for m in r.metadata.managedFields])
print(f"smoke test {time.time() - t0:.2f} s")

# The course's own backend against the same cluster (KUBECONFIG must point at it).
sys.path.insert(0, "/work/main")
from mnist_lib.cluster.kubernetes import KubernetesBackend
t1 = time.time()
b = KubernetesBackend(namespace="mnist")
print("backend.apply:", b.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mnist"}}]))
print("backend.supports_tfjob():", b.supports_tfjob())
print(f"course backend {time.time() - t1:.2f} s")
