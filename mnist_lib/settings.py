"""Where the course runs: the settings a learner (or an instructor) changes with environment variables.

One module reads them, so every object of the course takes the same values:

- ``MNIST_NAMESPACE``: the Kubernetes namespace of your jobs, servers and volume. Unset:
  the namespace of your kubeconfig's current context (as kubectl), else, inside a pod,
  the pod's own namespace, else ``mnist``. In a workshop each attendee has their own,
  and the kubeconfig the instructor hands out names it (``python -m mnist_lib.room``).
- ``MNIST_IMAGE``: the course image the pods run (default ``mnist-course:latest``,
  what chapter 02 builds and loads into kind). On a shared cluster, the image you
  pushed to a registry the cluster can pull from, e.g. ``registry.example.com/you/mnist-course:1``.
- ``MNIST_IMAGE_PULL_SECRETS``: comma-separated Secret names for a private registry
  (``kubectl create secret docker-registry ...``); none by default.
- ``MNIST_STORAGE_CLASS``: the StorageClass of the shared volume claim (default: the
  cluster's default class). ``kubectl get storageclass`` lists them.
- ``MNIST_ACCESS_MODE``: ``ReadWriteOnce`` (default: every pod on one node) or
  ``ReadWriteMany`` (pods on several nodes; needs a class that offers it: NFS, CephFS,
  Filestore, EFS...).
- ``MNIST_SERVING_IMAGE``: the model server's image (default: the official TF Serving).

Values are read when asked for, not at import, so a notebook that sets
``os.environ[...]`` before its first job sees its own values. A bad value fails
here, naming the variable, before anything is sent to a cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

from mnist_lib import checks
from mnist_lib.constants import DEFAULT_NAMESPACE

NAMESPACE_ENV = "MNIST_NAMESPACE"
IMAGE_ENV = "MNIST_IMAGE"
PULL_SECRETS_ENV = "MNIST_IMAGE_PULL_SECRETS"
STORAGE_CLASS_ENV = "MNIST_STORAGE_CLASS"
ACCESS_MODE_ENV = "MNIST_ACCESS_MODE"
SERVING_IMAGE_ENV = "MNIST_SERVING_IMAGE"

DEFAULT_IMAGE = "mnist-course:latest"  # the course image (Dockerfile), loaded into the cluster
SERVING_IMAGE = "tensorflow/serving:2.20.0"  # the official TF Serving image, newest release
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
DEFAULT_ACCESS_MODE = "ReadWriteOnce"


class SettingsError(ValueError):
    """An environment variable of the course has a value Kubernetes would refuse."""


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def check_dns_label(value: str, what: str) -> str:
    """``value`` if it is a DNS-1123 label (namespaces, Secret and StorageClass names)."""
    return checks.check_dns_label(what, value, SettingsError)


def check_image(image: str, what: str = "image") -> str:
    """``image`` if it looks like a container image reference (no spaces, not empty)."""
    return checks.check_image(what, image, DEFAULT_IMAGE, SettingsError)


IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def namespace() -> str:
    """The namespace of every object the course creates (``MNIST_NAMESPACE``, see above)."""
    return namespace_and_source()[0]


def namespace_and_source() -> tuple[str, str]:
    """The namespace and where it comes from: the variable, the kubeconfig, the pod, or the default."""
    if _env(NAMESPACE_ENV):
        return check_dns_label(_env(NAMESPACE_ENV), NAMESPACE_ENV), "set"
    from_kubeconfig = kubeconfig_namespace()
    if from_kubeconfig:
        return check_dns_label(from_kubeconfig, "the kubeconfig context's namespace"), "your kubeconfig's context"
    if os.environ.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_NAMESPACE_FILE.is_file():
        return check_dns_label(IN_CLUSTER_NAMESPACE_FILE.read_text().strip(), "this pod's namespace"), "this pod's"
    return DEFAULT_NAMESPACE, "default"


def kubeconfig_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl reads it ('' if none).

    ``KUBECONFIG`` may list several files: the first one that names a current context
    wins, as in kubectl. A workshop's kubeconfig (``mnist_lib.room``) names the attendee's.
    """
    files = [Path(p).expanduser() for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p] \
        or [Path.home() / ".kube" / "config"]
    # Read here, not with the kubernetes client's kube_config: a laptop on the local backend never
    # loads that client (get_backend), and the client reads $KUBECONFIG once, when it is imported.
    try:
        import yaml  # not at the top: a training pod reads no kubeconfig
    except ImportError:
        return ""
    docs = []
    for file in files:
        try:
            docs.append(yaml.safe_load(file.read_text()) or {})
        except (OSError, yaml.YAMLError):
            continue
    current = next((d.get("current-context") for d in docs if isinstance(d, dict) and d.get("current-context")), "")
    for doc in docs:
        for ctx in (doc.get("contexts") or []) if isinstance(doc, dict) else []:
            if isinstance(ctx, dict) and ctx.get("name") == current:
                return str((ctx.get("context") or {}).get("namespace") or "")
    return ""


def image() -> str:
    """The course image every training pod, TensorBoard and the volume helper run."""
    return check_image(_env(IMAGE_ENV) or DEFAULT_IMAGE, IMAGE_ENV)


def image_pull_secrets() -> list[str]:
    """Names of the Secrets a pod uses to pull from a private registry (none by default)."""
    names = [n.strip() for n in _env(PULL_SECRETS_ENV).split(",") if n.strip()]
    return [check_dns_label(n, f"{PULL_SECRETS_ENV} entry") for n in names]


def storage_class() -> str | None:
    """The shared claim's StorageClass, or None for the cluster's default class."""
    name = _env(STORAGE_CLASS_ENV)
    return check_dns_label(name, STORAGE_CLASS_ENV) if name else None


def access_mode() -> str:
    """How the shared volume may be mounted: ReadWriteOnce (one node) or ReadWriteMany (several)."""
    mode = _env(ACCESS_MODE_ENV) or DEFAULT_ACCESS_MODE
    if mode not in ACCESS_MODES:
        raise SettingsError(f"{ACCESS_MODE_ENV}={mode!r} is not an access mode: use one of "
                            f"{', '.join(ACCESS_MODES)} (ReadWriteMany for pods on several nodes).")
    return mode


def serving_image() -> str:
    """The model server's image: ``$MNIST_SERVING_IMAGE`` if set, else the official TF Serving image.

    Why an override: a cluster that cannot pull ``tensorflow/serving`` (no route to
    Docker Hub, an air-gapped CI machine, the course's own test cluster) can still
    serve, with ``MNIST_SERVING_IMAGE=mnist-course:latest``: the course image then
    runs the course's stand-in server, ``python -m mnist_lib.serve`` (same flags, same
    gRPC and REST APIs), not the real ``tensorflow_model_server``.
    """
    return check_image(_env(SERVING_IMAGE_ENV) or SERVING_IMAGE, SERVING_IMAGE_ENV)


def in_use() -> list[tuple[str, str, str]]:
    """``[(variable, value, where it comes from)]`` for chapter 00's table."""
    def row(env: str, value: str, default: str) -> tuple[str, str, str]:
        return env, value, "set" if _env(env) else default

    return [
        (NAMESPACE_ENV, *namespace_and_source()),
        row(IMAGE_ENV, image(), "default"),
        row(PULL_SECRETS_ENV, ", ".join(image_pull_secrets()) or "(none)", "default"),
        row(STORAGE_CLASS_ENV, storage_class() or "(the cluster's default class)", "default"),
        row(ACCESS_MODE_ENV, access_mode(), "default"),
        row(SERVING_IMAGE_ENV, serving_image(), "default: the official TF Serving image"),
    ]
