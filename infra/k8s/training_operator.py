"""Prepares the test cluster for the Kubeflow training operator running as a HOST process (not a pod).

Used by cluster.sh (run with the course's Python, which has `kubernetes` and `yaml`):

  training_operator.py setup KUBECONFIG MANIFESTS_DIR NODE_IP
      All CRDs from MANIFESTS_DIR/crds; namespace kubeflow; an empty Secret
      kubeflow/training-operator-webhook-cert (without it the operator dies with
      'acquiring secret to update certificates: Secret ... not found'; its cert rotator fills it);
      a selector-less Service kubeflow/training-operator:443 whose Endpoints point at NODE_IP:9443,
      where the host process's webhook server listens; the validating webhook configuration from
      MANIFESTS_DIR/webhook with the kustomize patches applied by hand.
  training_operator.py certs KUBECONFIG CERT_DIR
      Waits for the rotator to fill the Secret and writes its keys to CERT_DIR. In a pod a Secret
      volume does that; the rotator polls with a growing backoff, so writing them at once makes the
      operator ready in about 3 s instead of about 100 s.
"""
import base64
import glob
import os
import sys
import time

FIELD_MANAGER = "mnist-course-k8s"


def setup(kubeconfig, manifests, node_ip):
    import yaml
    from kubernetes import config, dynamic

    dyn = dynamic.DynamicClient(config.new_client_from_config(config_file=kubeconfig))

    def apply(obj, ns=None):
        r = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        r.server_side_apply(body=obj, namespace=ns, field_manager=FIELD_MANAGER, force_conflicts=True)
        print("applied", obj["kind"], obj["metadata"]["name"])

    crds = sorted(glob.glob(os.path.join(manifests, "crds", "kubeflow.org_*.yaml")))
    if not crds:
        sys.exit(f"no CRDs in {manifests}/crds (run infra/k8s/build.sh training-operator)")
    for f in crds:
        with open(f) as fh:
            apply(yaml.safe_load(fh))
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}})
    apply({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "training-operator-webhook-cert", "namespace": "kubeflow"}}, "kubeflow")
    apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "training-operator", "namespace": "kubeflow"},
           "spec": {"ports": [{"name": "webhook-server", "port": 443, "targetPort": 9443, "protocol": "TCP"}]}},
          "kubeflow")
    apply({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "training-operator", "namespace": "kubeflow"},
           "subsets": [{"addresses": [{"ip": node_ip}],
                        "ports": [{"name": "webhook-server", "port": 9443, "protocol": "TCP"}]}]}, "kubeflow")
    with open(os.path.join(manifests, "webhook", "manifests.yaml")) as fh:
        vwc = [d for d in yaml.safe_load_all(fh) if d][0]
    vwc["metadata"]["name"] = "validator.training-operator.kubeflow.org"
    for w in vwc["webhooks"]:
        w["clientConfig"]["service"].update(name="training-operator", namespace="kubeflow")
    apply(vwc)


def certs(kubeconfig, cert_dir, timeout=30.0):
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    deadline = time.monotonic() + timeout
    while True:
        data = core.read_namespaced_secret("training-operator-webhook-cert", "kubeflow").data or {}
        if "tls.crt" in data and "tls.key" in data:
            break
        if time.monotonic() > deadline:
            sys.exit(f"the operator did not fill Secret kubeflow/training-operator-webhook-cert within {timeout:.0f} s")
        time.sleep(0.2)
    os.makedirs(cert_dir, exist_ok=True)
    for k, v in data.items():
        with open(os.path.join(cert_dir, k), "wb") as f:
            f.write(base64.b64decode(v))
    print("wrote", sorted(data), "to", cert_dir)


if __name__ == "__main__":
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "setup" and len(args) == 3:
        setup(*args)
    elif cmd == "certs" and len(args) == 2:
        certs(*args)
    else:
        sys.exit(__doc__)
