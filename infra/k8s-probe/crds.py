"""PROBE — not wired into CI yet (issue 6).
Installs the training operator's TFJob CRD (from the Go module cache) into the probe cluster
by server-side apply, then server-side dry-runs every course manifest against the real API.
Usage: crds.py KUBECONFIG CRD_YAML MANIFEST..."""
import os, sys, time
os.environ["KUBECONFIG"] = os.path.abspath(sys.argv[1])
import yaml
from kubernetes import config, dynamic
from kubernetes.client.exceptions import ApiException

api = config.new_client_from_config()
dyn = dynamic.DynamicClient(api)
t0 = time.time()
crd = yaml.safe_load(open(sys.argv[2]))
res = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
res.server_side_apply(body=crd, field_manager="k8s-probe", force_conflicts=True)
while True:
    c = res.get(name=crd["metadata"]["name"])
    if any(x.type == "Established" and x.status == "True" for x in (c.status.conditions or [])):
        break
    time.sleep(0.2)
print(f"CRD {crd['metadata']['name']} established after {time.time() - t0:.1f} s")
dyn = dynamic.DynamicClient(api)  # fresh discovery
for path in sys.argv[3:]:
    for obj in yaml.safe_load_all(open(path)):
        if not obj:
            continue
        try:
            r = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            ns = obj["metadata"].get("namespace") or ("mnist" if r.namespaced else None)
            r.server_side_apply(body=obj, namespace=ns, field_manager="k8s-probe", dry_run="All")
            print(f"ok        {os.path.basename(path)} {obj['kind']}/{obj['metadata']['name']}")
        except ApiException as e:
            print(f"REJECTED  {os.path.basename(path)} {obj['kind']}: {e.status} {e.reason}: {str(e.body)[:300]}")
        except Exception as e:  # resource kind not served (e.g. Katib Experiment, kind Cluster)
            print(f"skipped   {os.path.basename(path)} {obj['kind']}: {type(e).__name__}: {e}")
