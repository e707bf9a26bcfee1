"""Where the course runs: namespace, image, pull secrets, storage class and access mode, from one module."""

from __future__ import annotations

import pytest

from mnist_lib import cluster, manifests, settings


def test_defaults_fit_a_laptop(monkeypatch):
    for env in (settings.NAMESPACE_ENV, settings.IMAGE_ENV, settings.PULL_SECRETS_ENV,
                settings.STORAGE_CLASS_ENV, settings.ACCESS_MODE_ENV, settings.SERVING_IMAGE_ENV):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert (settings.namespace(), settings.image(), settings.image_pull_secrets(),
            settings.storage_class(), settings.access_mode()) == \
        ("mnist", "mnist-course:latest", [], None, "ReadWriteOnce")
    claim = manifests.volume_claim()
    assert "storageClassName" not in claim["spec"] and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "namespace" not in claim["metadata"]  # the backend's namespace is used


def test_every_object_takes_the_settings(monkeypatch):
    monkeypatch.setenv(settings.IMAGE_ENV, "registry.example.com/you/mnist-course:1")
    monkeypatch.setenv(settings.PULL_SECRETS_ENV, "regcred, other")
    monkeypatch.setenv(settings.STORAGE_CLASS_ENV, "nfs")
    monkeypatch.setenv(settings.ACCESS_MODE_ENV, "ReadWriteMany")
    job = manifests.tfjob("s-job", manifests.run_config("s-job"), workers=2, parameter_servers=1)
    for spec in job["spec"]["tfReplicaSpecs"].values():
        pod = spec["template"]["spec"]
        assert pod["containers"][0]["image"] == "registry.example.com/you/mnist-course:1"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]
    tensorboard, _ = manifests.tensorboard()
    assert tensorboard["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.example.com")
    assert manifests.volume_helper()["spec"]["containers"][0]["image"].startswith("registry.example.com")
    claim = manifests.volume_claim()
    assert claim["spec"]["storageClassName"] == "nfs" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert [row[0] for row in settings.in_use()][:5] == [
        "MNIST_NAMESPACE", "MNIST_IMAGE", "MNIST_IMAGE_PULL_SECRETS", "MNIST_STORAGE_CLASS", "MNIST_ACCESS_MODE"]


def test_the_namespace_comes_from_the_kubeconfig_context_as_in_kubectl(monkeypatch, tmp_path):
    """A workshop kubeconfig (mnist_lib.room) names the attendee's namespace: nothing else to set."""
    monkeypatch.delenv(settings.NAMESPACE_ENV, raising=False)
    first, second = tmp_path / "empty", tmp_path / "room"
    first.write_text("apiVersion: v1\nkind: Config\n")
    second.write_text("current-context: ws\ncontexts:\n- name: other\n  context: {namespace: nope}\n"
                      "- name: ws\n  context: {cluster: c, user: u, namespace: mnist-room-ada}\n")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    assert settings.namespace_and_source() == ("mnist-room-ada", "your kubeconfig's context")
    monkeypatch.setenv(settings.NAMESPACE_ENV, "mine")  # the variable wins, as before
    assert settings.namespace_and_source() == ("mine", "set")


@pytest.mark.parametrize("env, value, says", [
    (settings.NAMESPACE_ENV, "Team_A", "MNIST_NAMESPACE 'Team_A' is not a valid Kubernetes name"),
    (settings.IMAGE_ENV, "my image", "is not a container image reference"),
    (settings.ACCESS_MODE_ENV, "ReadWriteAll", "ReadWriteMany for pods on several nodes"),
    (settings.STORAGE_CLASS_ENV, "Fast SSD", "MNIST_STORAGE_CLASS 'Fast SSD' is not a valid Kubernetes name"),
])
def test_a_bad_value_names_its_variable(monkeypatch, env, value, says):
    monkeypatch.setenv(env, value)
    with pytest.raises(settings.SettingsError, match=says.replace("(", r"\(")):
        {settings.NAMESPACE_ENV: settings.namespace, settings.IMAGE_ENV: settings.image,
         settings.ACCESS_MODE_ENV: settings.access_mode, settings.STORAGE_CLASS_ENV: settings.storage_class}[env]()


def test_the_backend_works_in_the_namespace_setting(monkeypatch, tmp_path):
    monkeypatch.setenv(settings.NAMESPACE_ENV, "attendee-7")
    monkeypatch.setenv("MNIST_OUTPUT_DIR", str(tmp_path))
    backend = cluster.get_backend("local")
    try:
        assert backend.namespace == "attendee-7"
    finally:
        backend.shutdown()
        cluster._backends.pop("local/attendee-7", None)  # this test's backend only
