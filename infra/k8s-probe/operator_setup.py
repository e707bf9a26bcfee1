"""PROBE — not wired into CI yet (issue 6).
Prepares the probe cluster for the training operator running as a HOST process (not a pod):
namespace kubeflow, the operator's validating webhook configuration from the module's
manifests/base/webhook (kustomize patches applied by hand: name
validator.training-operator.kubeflow.org, service kubeflow/training-operator), and a
selector-less Service training-operator:443 whose Endpoints point at the host's node
address :9443, where the operator's webhook server listens. All CRDs from manifests/base/crds.
Usage: operator_setup.py KUBECONFIG MODULE_DIR NODE_IP"""
import glob, os, sys
os.environ["KUBECONFIG"] = os.path.abspath(sys.argv[1])
import yaml
from kubernetes import config, dynamic
mod, node_ip = sys.argv[2], sys.argv[3]
dyn = dynamic.DynamicClient(config.new_client_from_config())
def apply(obj, ns=None):
    r = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    r.server_side_apply(body=obj, namespace=ns, field_manager="k8s-probe", force_conflicts=True)
    print("applied", obj["kind"], obj["metadata"]["name"])
for f in sorted(glob.glob(f"{mod}/manifests/base/crds/kubeflow.org_*.yaml")):
    apply(yaml.safe_load(open(f)))
apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}})
apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "training-operator-webhook-cert", "namespace": "kubeflow"}}, "kubeflow")  # the cert rotator fills it
apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "training-operator", "namespace": "kubeflow"},
       "spec": {"ports": [{"name": "webhook-server", "port": 443, "targetPort": 9443, "protocol": "TCP"}]}}, "kubeflow")
apply({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "training-operator", "namespace": "kubeflow"},
       "subsets": [{"addresses": [{"ip": node_ip}], "ports": [{"name": "webhook-server", "port": 9443, "protocol": "TCP"}]}]}, "kubeflow")
vwc = [d for d in yaml.safe_load_all(open(f"{mod}/manifests/base/webhook/manifests.yaml")) if d][0]
vwc["metadata"]["name"] = "validator.training-operator.kubeflow.org"
for w in vwc["webhooks"]:
    w["clientConfig"]["service"].update(name="training-operator", namespace="kubeflow")
apply(vwc)
