"""Prepares the test cluster for the JobSet controller running as a HOST process (not a pod).

Used by cluster.sh install-jobset (run with the course's Python, which has `kubernetes` and `yaml`):

  jobset.py setup KUBECONFIG MANIFESTS_DIR NODE_IP CERT_DIR
      The JobSet CRD from MANIFESTS_DIR/crd; namespace jobset-system; a selector-less Service
      jobset-system/jobset-webhook-service:443 whose Endpoints point at NODE_IP:WEBHOOK_PORT, where
      the host process's webhook server listens; the mutating and validating webhook
      configurations from MANIFESTS_DIR/webhook with upstream's kustomize patches applied by hand
      (the pod webhooks only see pods labelled jobset.sigs.k8s.io/jobset-name). Their caBundle is
      CERT_DIR/ca.crt, which `openssl` made in cluster.sh: with its own certificates the controller
      runs with internalCertManagement off, as upstream's cert-manager install does, because the
      internal rotator's folder (/tmp/k8s-webhook-server/serving-certs, pkg/util/cert/cert.go) is
      hard-coded and the training operator's rotator uses the same one.
  jobset.py wait-webhook KUBECONFIG CONTROLLER_LOG [TIMEOUT]
      Returns once a server-side dry-run create of a minimal JobSet passes the webhooks (the
      controller registers them after its manager starts).
"""
import os
import sys
import time

import yaml

FIELD_MANAGER = "mnist-course-k8s"
NAMESPACE = "jobset-system"
SERVICE = "jobset-webhook-service"
WEBHOOK_PORT = 9444  # the training operator's webhook has 9443
# upstream's kustomize prefix (config/default: namePrefix jobset-)
WEBHOOK_CONFIGURATIONS = {"MutatingWebhookConfiguration": "jobset-mutating-webhook-configuration",
                          "ValidatingWebhookConfiguration": "jobset-validating-webhook-configuration"}
POD_SELECTOR = {"matchExpressions": [{"key": "jobset.sigs.k8s.io/jobset-name", "operator": "Exists"}]}


def controller_config(cert_dir: str) -> str:
    """The controller's --config file: webhook port and certificates, no internal rotator, no leader election."""
    return yaml.safe_dump({
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1", "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"port": WEBHOOK_PORT, "certDir": cert_dir},
        "health": {"healthProbeBindAddress": "127.0.0.1:18083"},
        "metrics": {"bindAddress": "0"},
    })


def setup(kubeconfig, manifests, node_ip, cert_dir):
    import base64

    from kubernetes import config, dynamic

    dyn = dynamic.DynamicClient(config.new_client_from_config(config_file=kubeconfig))

    def apply(obj, ns=None):
        r = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        r.server_side_apply(body=obj, namespace=ns, field_manager=FIELD_MANAGER, force_conflicts=True)
        print("applied", obj["kind"], obj["metadata"]["name"])

    crd = os.path.join(manifests, "crd", "jobset.x-k8s.io_jobsets.yaml")
    if not os.path.exists(crd):
        sys.exit(f"no {crd} (run infra/k8s/build.sh jobset)")
    with open(crd) as fh:
        apply(yaml.safe_load(fh))
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NAMESPACE},
           "spec": {"ports": [{"port": 443, "targetPort": WEBHOOK_PORT, "protocol": "TCP"}]}}, NAMESPACE)
    apply({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": SERVICE, "namespace": NAMESPACE},
           "subsets": [{"addresses": [{"ip": node_ip}],
                        "ports": [{"port": WEBHOOK_PORT, "protocol": "TCP"}]}]}, NAMESPACE)
    with open(os.path.join(cert_dir, "ca.crt"), "rb") as fh:
        ca_bundle = base64.b64encode(fh.read()).decode()
    with open(os.path.join(manifests, "webhook", "manifests.yaml")) as fh:
        configurations = [d for d in yaml.safe_load_all(fh) if d]
    for conf in configurations:
        conf["metadata"]["name"] = WEBHOOK_CONFIGURATIONS[conf["kind"]]
        for hook in conf["webhooks"]:
            hook["clientConfig"]["service"].update(name=SERVICE, namespace=NAMESPACE)
            hook["clientConfig"]["caBundle"] = ca_bundle
            if hook["rules"][0]["resources"] == ["pods"]:  # patches/*-patch.yaml: only the JobSets' pods
                hook["objectSelector"] = POD_SELECTOR
        apply(conf)


def _probe_jobset():
    pod = {"restartPolicy": "Never", "containers": [{"name": "probe", "image": "webhook-probe:1"}]}
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "webhook-probe", "namespace": NAMESPACE},
            "spec": {"replicatedJobs": [{"name": "w", "replicas": 1,
                                         "template": {"spec": {"template": {"spec": pod}}}}]}}


def wait_webhook(kubeconfig, controller_log, timeout=90.0):
    from kubernetes import client, config

    custom = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))
    started, last_error = time.monotonic(), None
    while time.monotonic() - started < timeout:
        try:
            custom.create_namespaced_custom_object("jobset.x-k8s.io", "v1alpha2", NAMESPACE, "jobsets",
                                                   _probe_jobset(), dry_run="All", _request_timeout=15)
            print(f"the JobSet webhooks answer: dry run accepted after {time.monotonic() - started:.1f} s")
            return
        except Exception as err:  # 500 while the webhook server is not up yet
            last_error = " ".join(str(getattr(err, "body", None) or err).split())[:400]
        time.sleep(0.5)
    sys.exit(f"the JobSet webhooks did not accept a dry-run JobSet within {timeout:.0f} s; see {controller_log}. "
             f"Last answer: {last_error}")


if __name__ == "__main__":
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "setup" and len(args) == 4:
        setup(*args)
    elif cmd == "config" and len(args) == 1:
        print(controller_config(args[0]), end="")
    elif cmd == "wait-webhook" and 2 <= len(args) <= 3:
        wait_webhook(args[0], args[1], float(args[2]) if len(args) > 2 else 90.0)
    else:
        sys.exit(__doc__)
