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
  training_operator.py wait-webhook KUBECONFIG OPERATOR_LOG [OPERATOR_PID [TIMEOUT]]
      Returns once the validating webhook validates TFJobs: a server-side dry-run create of a
      minimal valid TFJob succeeds, and one without a "tensorflow" container is denied by the
      webhook. The operator's readyz is not enough: it turns ready when the certificates are in
      place and the webhook server listens, but the TFJob handler is registered afterwards, by a
      goroutine (setupControllers in cmd/training-operator.v1/main.go), and until then the
      apiserver gets 404 from the webhook ('failed calling webhook
      "validator.tfjob.training-operator.kubeflow.org": ... the server could not find the
      requested resource'), so a TFJob created then fails with HTTP 500. Exits 1 after TIMEOUT
      seconds (default 90), or at once when OPERATOR_PID has exited, naming OPERATOR_LOG.
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


def _probe_tfjob(container_name):
    """A TFJob for the dry runs: valid with container "tensorflow", invalid with any other name."""
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob",
            "metadata": {"name": "webhook-probe", "namespace": "kubeflow"},
            "spec": {"tfReplicaSpecs": {"Worker": {"replicas": 1, "restartPolicy": "Never", "template": {
                "spec": {"containers": [{"name": container_name, "image": "webhook-probe:1"}]}}}}}}


def _first_line(err):
    """The apiserver's message of an ApiException (or any error), on one line."""
    import json

    body = getattr(err, "body", None)
    try:
        message = json.loads(body)["message"]
    except (TypeError, ValueError, KeyError):
        message = str(err)
    return " ".join(message.split())[:400]


def wait_webhook(kubeconfig, operator_log, operator_pid=None, timeout=90.0):
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    started = time.monotonic()
    custom = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))

    def dry_run_create(container_name):
        return custom.create_namespaced_custom_object(
            "kubeflow.org", "v1", "kubeflow", "tfjobs", _probe_tfjob(container_name), dry_run="All",
            _request_timeout=15)

    attempts, first_error, last_error = 0, None, None
    while True:
        attempts += 1
        try:
            dry_run_create("tensorflow")
            break
        except Exception as err:  # ApiException (500: webhook 404 / TLS / refused) or a connection error
            last_error = _first_line(err)
            first_error = first_error or last_error
        if operator_pid:
            try:
                os.kill(int(operator_pid), 0)
            except OSError:
                sys.exit(f"the training operator (pid {operator_pid}) exited before its webhook validated a "
                         f"TFJob; see its log {operator_log}. Last answer to a dry-run TFJob: {last_error}")
        if time.monotonic() - started > timeout:
            sys.exit(f"the training operator's validating webhook did not accept a valid TFJob (server-side "
                     f"dry run) within {timeout:.0f} s ({attempts} attempts); see the operator's log "
                     f"{operator_log}. Last answer: {last_error}")
        time.sleep(0.5)
    waited = time.monotonic() - started
    # A success alone could also mean the webhook is not called at all for TFJobs: it must deny this one.
    try:
        dry_run_create("not-tensorflow")
    except ApiException as err:
        if "denied the request" not in _first_line(err):
            sys.exit(f"a TFJob without a tensorflow container was refused, but not by the webhook: "
                     f"{_first_line(err)} (see {operator_log})")
    else:
        sys.exit("a TFJob without a tensorflow container passed the dry run: the validating webhook is not "
                 "called for TFJobs (check ValidatingWebhookConfiguration validator.training-operator.kubeflow.org)")
    print(f"webhook validates TFJobs: dry run accepted after {waited:.1f} s ({attempts} attempt(s)"
          + (f"; first refusal: {first_error}" if first_error else "") + "); an invalid TFJob is denied")


if __name__ == "__main__":
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "setup" and len(args) == 3:
        setup(*args)
    elif cmd == "certs" and len(args) == 2:
        certs(*args)
    elif cmd == "wait-webhook" and 2 <= len(args) <= 4:
        wait_webhook(args[0], args[1], args[2] if len(args) > 2 else None,
                     float(args[3]) if len(args) > 3 else 90.0)
    else:
        sys.exit(__doc__)
