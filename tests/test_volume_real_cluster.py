"""The shared volume from a notebook that cannot see it: real cluster, real helper pod, real exec.

A learner's laptop with a kubeconfig to a shared cluster has no access to the pods'
volume. The kubernetes backend reads and writes it through the API server
(:mod:`mnist_lib.cluster.volume`): one helper pod per namespace, one exec per transfer,
changed files only. Here the notebook's output folder is a fresh temporary folder,
never the volume's folder on the node, and the namespace is not ``mnist``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from mnist_lib import cluster, manifests, paths, runs
from mnist_lib.cluster.kubernetes import KubernetesBackend

pytestmark = pytest.mark.real_cluster

NS = "attendee-volume"
TINY = {"architecture": "mlp", "epochs": 2, "train_limit": 2000, "batch_size": 100}


@pytest.fixture(scope="module")
def backend(_real_cluster_base, tmp_path_factory) -> Iterator[KubernetesBackend]:
    """The course's backend in namespace ``attendee-volume``, made as get_backend() makes it."""
    mirror = tmp_path_factory.mktemp("notebook-outputs")  # this "laptop"'s MNIST_OUTPUT_DIR
    patch = pytest.MonkeyPatch()
    patch.setenv("MNIST_OUTPUT_DIR", str(mirror))
    backend = _real_cluster_base.backend(NS)
    try:
        backend.prepare_namespace()  # namespace + claim (default StorageClass)
        yield backend
    finally:
        backend.delete([manifests.namespace(NS)])
        patch.undo()


def helper_pods(backend: KubernetesBackend) -> list[str]:
    pods = backend.core.list_namespaced_pod(
        NS, label_selector=f"{manifests.COMPONENT_LABEL}=volume-helper").items
    return [p.metadata.name for p in pods]


def test_put_and_pull_go_through_one_helper_pod(backend: KubernetesBackend, tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "assets").mkdir()  # empty, as in every Keras SavedModel: the copy must have it too
    (model / "saved_model.pb").write_bytes(b"\0saved model bytes\xff" * 1000)
    (model / "variables" / "variables.index").write_bytes(b"index")
    base = runs.serving_base()
    backend.remove_outputs([base])
    assert runs.put_version(model, base, version=1, backend=backend) == f"{base}/1"
    assert runs.put_version(f"{base}/1", base, backend=backend) == f"{base}/2"  # a copy on the volume
    assert runs.versions(base, backend) == [1, 2]
    local = runs.local_copy(f"{base}/2", backend)
    assert local == paths.output_dir() / "serving" / "mnist" / "2"  # the mirror, not the volume
    assert (local / "saved_model.pb").read_bytes() == (model / "saved_model.pb").read_bytes()
    assert sorted(p.name for p in local.iterdir()) == ["assets", "saved_model.pb", "variables"]

    before = backend.volume.execs
    reply, data = backend.volume.call({"op": "pull", "paths": [base], "known": backend.volume._known})
    assert reply["sent"] == [] and data == b""  # nothing changed: nothing travels
    assert backend.volume.execs == before + 1

    backend.remove_outputs([f"{base}/1"])
    runs.local_copy(base, backend)
    assert not (paths.output_dir() / "serving" / "mnist" / "1").exists()  # gone there, gone here
    assert helper_pods(backend) == [manifests.VOLUME_HELPER]  # every transfer used the same pod


def test_a_deleted_helper_pod_is_made_again(backend: KubernetesBackend) -> None:
    """Someone deleted mnist-volume (or its 10 h deadline passed): the next transfer remakes it."""
    base = runs.serving_base()
    runs.versions(base, backend)  # the helper pod runs
    backend.core.delete_namespaced_pod(manifests.VOLUME_HELPER, NS, grace_period_seconds=0)
    assert runs.versions(base, backend) == runs.version_numbers(paths.on_this_machine(base))
    assert helper_pods(backend) == [manifests.VOLUME_HELPER]


def test_a_jobs_history_and_scalars_come_back_while_it_runs(backend: KubernetesBackend) -> None:
    name = "vol-job"
    config = manifests.run_config(name, **TINY)
    backend.clear_outputs(config)
    backend.create_job(manifests.training_job(name, config))
    try:
        seen_epochs = set()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            seen_epochs |= {e["epoch"] for e in runs.read_history(config.model_dir, backend)}
            if backend.get_job(name, kind="Job").finished:
                break
            time.sleep(1)
        status = backend.wait_for_job_conditions(name, timeout=60, progress=False)
        assert status.succeeded
        assert seen_epochs  # read through the helper pod while the job ran (at least epoch 1)
        result = runs.result(name, backend)
        assert result is not None and result["test_accuracy"] > 0.6
        curves = runs.scalars(name, backend)
        assert [step for step, _ in curves["validation/epoch_accuracy"]] == [1, 2]
        export = runs.latest_export(name, backend=backend)
        assert export == f"/outputs/{name}/export/mnist/1"
        assert json.loads((paths.output_dir() / name / "checkpoints" / "result.json").read_text()) == result
    finally:
        backend.delete_job(name)
    assert helper_pods(backend) == [manifests.VOLUME_HELPER]


def test_a_claim_that_cannot_bind_is_explained_in_seconds(_real_cluster_base, monkeypatch) -> None:
    """A wrong MNIST_STORAGE_CLASS: the first read of the volume says so, instead of waiting 3 minutes."""
    namespace = "attendee-no-class"
    monkeypatch.setenv("MNIST_STORAGE_CLASS", "no-such-class")
    backend = _real_cluster_base.backend(namespace)
    try:
        backend.prepare_namespace()  # the claim names the missing class
        started = time.monotonic()
        with pytest.raises(cluster.VolumeError) as err:
            runs.result("anything", backend)
        assert time.monotonic() - started < 30
        assert "no-such-class" in str(err.value) and "MNIST_STORAGE_CLASS" in str(err.value)
        assert "standard (the default" in str(err.value)  # the classes that do exist
    finally:
        backend.delete([manifests.namespace(namespace)])
