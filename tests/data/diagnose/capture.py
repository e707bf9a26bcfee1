"""Record what a real API server answers about pods that cannot start (for tests/test_cluster_diagnose.py).

Run against a running cluster (the course's test cluster: ``infra/k8s/cluster.sh status``)::

    KUBECONFIG=/tmp/mnist-course-k8s/admin.kubeconfig .venv/bin/python tests/data/diagnose/capture.py

In two scratch namespaces it makes: a claim naming a StorageClass that does not exist
and a Job mounting it; a Job asking for 64 CPUs (mounting a claim of the default
class, which stays Pending with WaitForFirstConsumer: the normal case); and, under a
ResourceQuota smaller than one pod, a Job and a TFJob. After a few seconds it saves
the pods, events, claims, StorageClasses, nodes, quotas and jobs as JSON files next to
this script (managedFields dropped), then deletes both namespaces.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kubernetes import client, config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from mnist_lib import manifests  # noqa: E402
from mnist_lib.cluster.kubernetes import KubernetesBackend  # noqa: E402

PENDING_NS, QUOTA_NS = "mnist-diag-pending", "mnist-diag-quota"
TINY = {"architecture": "mlp", "epochs": 1, "train_limit": 3000, "batch_size": 100}


def clean(obj):
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items() if k != "managedFields"}
    if isinstance(obj, list):
        return [clean(v) for v in obj]
    return obj


def wait(what, check, timeout=90):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(1)


def main() -> None:
    api = config.new_client_from_config()
    core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
    backends = {ns: KubernetesBackend(namespace=ns, api_client=api) for ns in (PENDING_NS, QUOTA_NS)}

    def gone(ns):
        return not [n for n in core.list_namespace().items if n.metadata.name == ns]

    for ns, backend in backends.items():
        wait(f"namespace {ns} from an earlier run to go", lambda: gone(ns), 180)
        backend.apply(manifests.namespace(ns))
        wait("the default ServiceAccount", lambda: [s for s in core.list_namespaced_service_account(ns).items
                                                   if s.metadata.name == "default"])
    try:
        pending = backends[PENDING_NS]
        no_class = manifests.volume_claim(storage_class="no-such-class")
        no_class["metadata"]["name"] = "cap-no-class"
        pending.apply([no_class, manifests.volume_claim()])
        job = manifests.training_job("cap-no-class", manifests.run_config("cap-no-class", **TINY))
        job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "cap-no-class"
        pending.create_job(job)
        big = {"requests": {"cpu": "64", "memory": "1Gi"}, "limits": {"cpu": "64", "memory": "3Gi"}}
        pending.create_job(manifests.training_job("cap-64-cpus", manifests.run_config("cap-64-cpus", **TINY),
                                                  resources=big))

        quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "cap-budget"},
                 "spec": {"hard": {"requests.cpu": "100m", "requests.memory": "4Gi", "pods": "4"}}}
        core.create_namespaced_resource_quota(QUOTA_NS, quota)
        wait("the quota to be counted", lambda: (core.read_namespaced_resource_quota(
            "cap-budget", QUOTA_NS).status.hard or {}).get("requests.cpu"))
        limited = backends[QUOTA_NS]
        limited.create_job(manifests.training_job("cap-quota", manifests.run_config("cap-quota", **TINY)))
        if limited.supports_tfjob():
            limited.create_job(manifests.tfjob("cap-quota-tf", manifests.run_config("cap-quota-tf", **TINY),
                                               workers=1))
        time.sleep(8)  # the controllers' events, the scheduler's verdicts

        answers = {
            "pods": [*core.list_namespaced_pod(PENDING_NS).items, *core.list_namespaced_pod(QUOTA_NS).items],
            "events": [*core.list_namespaced_event(PENDING_NS).items, *core.list_namespaced_event(QUOTA_NS).items],
            "claims": core.list_namespaced_persistent_volume_claim(PENDING_NS).items,
            "storage_classes": storage.list_storage_class().items,
            "nodes": core.list_node().items,
            "quotas": core.list_namespaced_resource_quota(QUOTA_NS).items,
            "jobs": [*client.BatchV1Api(api).list_namespaced_job(PENDING_NS).items,
                     *client.BatchV1Api(api).list_namespaced_job(QUOTA_NS).items],
        }
        for key, items in answers.items():
            data = clean(api.sanitize_for_serialization(items))
            if key == "nodes":  # the node's image list is long and says nothing here
                for n in data:
                    n.get("status", {}).pop("images", None)
            (HERE / f"{key}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            print(f"{key}.json: {len(data)} objects")
        try:
            tfjobs = client.CustomObjectsApi(api).list_namespaced_custom_object(
                "kubeflow.org", "v1", QUOTA_NS, "tfjobs")["items"]
            (HERE / "tfjobs.json").write_text(json.dumps(clean(tfjobs), indent=1, sort_keys=True) + "\n")
        except client.exceptions.ApiException:
            pass
    finally:
        for ns, backend in backends.items():
            backend.delete([manifests.namespace(ns)])
        for ns in backends:
            wait(f"namespace {ns} to be deleted", lambda: gone(ns), 180)


if __name__ == "__main__":
    main()
