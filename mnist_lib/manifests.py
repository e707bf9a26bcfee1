"""Kubernetes objects for the course, built as plain data and rendered to YAML.

Every object here is a plain ``dict``, exactly what the API server receives: the
chapters print them, the cluster backends submit them, and ``manifests/*.yaml`` is
rendered from them (``python -m mnist_lib.manifests --write``), with a kustomization.yaml
that makes manifests/ a kustomize base (its overlays: :mod:`mnist_lib.overlays`). No text templates:
the 2018 course filled a YAML template with ``sed`` and its sweep passed the
hyperparameters to the master replica only. Here every replica gets the same
``TrainConfig.to_args()``, and a test checks it.

What each function builds:

- :func:`namespace`, :func:`volume_claim`: where everything lives, and the shared
  volume every pod mounts at ``/outputs`` (checkpoints, TensorBoard logs, exports).
- :func:`training_job`: one training pod (a ``batch/v1`` Job).
- :func:`tfjob`: distributed training with the Kubeflow training operator (TFJob v1):
  workers only (multi-worker mirrored) or Chief + PS + workers (parameter servers).
- :func:`indexed_job`: the same multi-worker training without the operator, an
  Indexed Job + headless Service (the operator's TF support is frozen at v1.9).
- :func:`tensorboard`, :func:`model_server`: Deployments + Services over the volume.
- :func:`katib_experiment`: a hyperparameter sweep (a :class:`~mnist_lib.sweep_spec.SweepSpec`)
  whose trials are TFJobs.
- :func:`kind_cluster`: a local cluster to run all of it.

Names are checked when you build, not when the cluster rejects them: they become
pod hostnames (``<job>-worker-0``), which must be DNS labels of at most 63 characters.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from mnist_lib import paths, serving_config, settings
from mnist_lib.checks import MAX_NAME, check_dns_label, check_image, check_int, check_model_name, is_dns_1035_label
from mnist_lib.config import TrainConfig
from mnist_lib.constants import (DEFAULT_NAMESPACE, EXIT_BAD_INPUT, EXIT_FAILED, GRPC_PORT, MODEL_NAME, OBJECTIVE,
                                 OUTPUT_MOUNT, POD_USER_ID, REST_PORT, TENSORBOARD_PORT, TF_PORT)
from mnist_lib.settings import DEFAULT_IMAGE, SERVING_IMAGE, serving_image
from mnist_lib.sweep_spec import SweepSpec
from mnist_lib.tf_config import indexed_job_worker_hosts

# -- constants a learner (or a backend) may want ------------------------------
# The ports, the mount and the default namespace are the course's (mnist_lib.constants);
# DEFAULT_IMAGE and SERVING_IMAGE are the settings' defaults. All are imported above.
VOLUME_CLAIM = "mnist-outputs"
VOLUME_HELPER = "mnist-volume"       # the pod through which a notebook reads the volume (cluster.volume)
VOLUME_HELPER_CONTAINER = "helper"   # ... and its one container, which the backend execs into
COURSE_SERVER = ["python", "-m", "mnist_lib.serve"]  # the same protocol, in the course image

CONTAINER_NAME = "tensorflow"        # the training operator's default container name
TF_PORT_NAME = "tfjob-port"          # ... and its name for the port TF_PORT

# Labels: the standard app.kubernetes.io set. RUN_LABEL finds every pod of one run.
NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
RUN_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
APP_NAME, COURSE_NAME = "mnist", "scaling-ml-course"

BACKOFF_LIMIT = 3                    # retries of a failing job before it is marked Failed
RETRIES_PER_WORKER = 3               # an Indexed Job's retries of each worker (backoffLimitPerIndex)
JOB_TTL_SECONDS = 24 * 3600          # finished jobs (and their logs) stay a day, then go

TRAINING_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"},
                      "limits": {"cpu": "2", "memory": "3Gi"}}
TENSORBOARD_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"},
                         "limits": {"cpu": "1", "memory": "1Gi"}}
SERVING_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"},
                     "limits": {"cpu": "2", "memory": "2Gi"}}

# Katib mounts its own emptyDir at this fixed path in a trial's primary pod, and its
# sidecar reads the TensorFlow event files there. It is fixed because Katib does not
# substitute trial parameters in metricsCollectorSpec; it is under /outputs so that
# the other pods, which also check that their --log-dir is writable, can create it.
KATIB_METRICS_DIR = f"{OUTPUT_MOUNT}/katib-metrics"

MANIFESTS_DIR = paths.COURSE_ROOT / "manifests"

# Hyperparameters a run can set; the folders come from the run name.
HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                        if f.name not in ("model_dir", "log_dir", "export_dir", "data_dir"))


class ManifestError(ValueError):
    """A name or value cannot make a valid Kubernetes object. The message says what to do."""


# -- checks at the boundary -------------------------------------------------------

def check_name(name: str, what: str = "name", longest_suffix: str = "") -> str:
    """Return ``name`` if it is a DNS-1035 label, also with ``longest_suffix`` appended.

    Kubernetes turns job names into pod hostnames and Service names
    (``<job>-worker-0``), so ``name + longest_suffix`` must fit in 63 characters.
    """
    if not is_dns_1035_label(name):
        raise ManifestError(
            f"{what} {name!r} is not a valid Kubernetes name: use lowercase letters, digits "
            "and '-', start with a letter and end with a letter or digit (e.g. 'mnist-lr-001')."
        )
    full = name + longest_suffix
    if len(full) > MAX_NAME:
        raise ManifestError(
            f"{what} {name!r} is too long: it becomes the pod hostname {full!r} "
            f"({len(full)} characters, the limit is {MAX_NAME}). "
            f"Shorten it by {len(full) - MAX_NAME} characters."
        )
    return name


def _check_namespace(namespace: str | None) -> str | None:
    """None means "no namespace in the object": it goes where the backend (or ``kubectl -n``) puts it."""
    return None if namespace is None else check_dns_label("namespace", namespace, ManifestError)


def _check_under_outputs(what: str, path: str | Path) -> str:
    """A path a pod writes must be on the shared volume, or it is lost with the pod."""
    posix = PurePosixPath(str(path))
    if not posix.is_absolute() or not posix.is_relative_to(OUTPUT_MOUNT) or ".." in posix.parts:
        raise ManifestError(
            f"{what} {str(path)!r} is not under {OUTPUT_MOUNT}: every pod mounts the shared "
            f"volume there, and anything written elsewhere disappears with the pod. "
            f"Build the config with run_config(run_name, ...)."
        )
    return str(posix)


def _check_config(config: TrainConfig) -> TrainConfig:
    """Validate the hyperparameters here, in a fraction of a second, not in a failing pod.

    The folders are on the cluster's volume, not on this machine: only check that
    they are under the mount.
    """
    if not isinstance(config, TrainConfig):
        raise ManifestError(f"config must be a TrainConfig (see run_config()), got {type(config).__name__}")
    for flag, folder in (("--model-dir", config.model_dir), ("--log-dir", config.log_dir),
                         ("--export-dir", config.export_dir)):
        _check_under_outputs(flag, folder)
    return config.validate(check_paths=False)


def run_config(run_name: str, **hyperparameters: Any) -> TrainConfig:
    """A validated :class:`TrainConfig` whose folders are the run's own on the shared volume.

    ``/outputs/<run-name>/checkpoints``, ``/logs`` and ``/export``: one folder per run,
    so runs never overwrite each other's checkpoints or exported models (the 2018
    sweep exported all nine trials into one folder).
    """
    check_name(run_name, "run name")
    unknown = sorted(set(hyperparameters) - set(HYPERPARAMETERS))
    if unknown:
        raise ManifestError(f"unknown hyperparameter(s) {unknown}; known: {list(HYPERPARAMETERS)} "
                            f"(the folders come from the run name: {OUTPUT_MOUNT}/<run-name>/...)")
    return _check_config(TrainConfig.for_run(run_name, root=OUTPUT_MOUNT, **hyperparameters))


# -- building blocks ----------------------------------------------------------------

def labels(run: str, component: str) -> dict[str, str]:
    """The labels every object carries; a backend selects a run's pods with RUN_LABEL."""
    return {NAME_LABEL: APP_NAME, PART_OF_LABEL: COURSE_NAME, RUN_LABEL: run, COMPONENT_LABEL: component}


def _metadata(name: str, namespace: str | None, component: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {**metadata, "labels": labels(name, component)}


def _container(name: str, image: str | None, command: Sequence[str], args: Sequence[str],
               resources: Mapping[str, Any], ports: Sequence[Mapping[str, Any]] = (),
               env: Mapping[str, str] | None = None, read_only: bool = False,
               readiness: Mapping[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": check_image("image", settings.image() if image is None else image, DEFAULT_IMAGE,
                             ManifestError),
        # A local image loaded into kind has no registry to pull from; with a ":latest"
        # tag Kubernetes would default to "Always" and fail with ErrImagePull.
        "imagePullPolicy": "IfNotPresent",
        "command": list(command),
    }
    if args:
        container["args"] = list(args)
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if ports:
        container["ports"] = [dict(p) for p in ports]
    if readiness:
        container["readinessProbe"] = dict(readiness)
    container["resources"] = {k: dict(v) for k, v in resources.items()}
    mount: dict[str, Any] = {"name": "outputs", "mountPath": OUTPUT_MOUNT}
    if read_only:
        mount["readOnly"] = True
    container["volumeMounts"] = [mount]
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    return container


def _pod_spec(containers: list[dict[str, Any]], restart_policy: str | None = None,
              **extra: Any) -> dict[str, Any]:
    """A pod spec that passes the "restricted" Pod Security Standard."""
    spec: dict[str, Any] = dict(extra)
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    spec["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": POD_USER_ID,
        "runAsGroup": POD_USER_ID,
        "fsGroup": POD_USER_ID,  # volumes that support it become writable by that group
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    spec["containers"] = containers
    secrets = settings.image_pull_secrets()  # MNIST_IMAGE_PULL_SECRETS: a private registry's credentials
    if secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in secrets]
    spec["volumes"] = [{"name": "outputs", "persistentVolumeClaim": {"claimName": VOLUME_CLAIM}}]
    return spec


def _job_pod_metadata(run: str) -> dict[str, Any]:
    return {
        "labels": labels(run, "training"),
        # An Istio sidecar never exits, so a job pod with one never completes.
        "annotations": {"sidecar.istio.io/inject": "false"},
    }


def _training_container(config: TrainConfig, image: str, resources: Mapping[str, Any],
                        env: Mapping[str, str] | None = None) -> dict[str, Any]:
    return _container(
        CONTAINER_NAME, image, ["python", "-m", "mnist_lib.train"], config.to_args(), resources,
        ports=[{"name": TF_PORT_NAME, "containerPort": TF_PORT}],
        env={"PYTHONUNBUFFERED": "1", **(env or {})},
    )


# -- the shared setup -------------------------------------------------------------

def namespace(name: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The course's namespace. Pod Security "restricted" warns about any pod that breaks it.

    Warn and audit rather than enforce: Katib injects a metrics-collector sidecar
    into trial pods that does not declare a restricted security context.
    """
    _check_namespace(name)
    meta = {"name": name, "labels": {**labels(name, "namespace"),
                                     "pod-security.kubernetes.io/warn": "restricted",
                                     "pod-security.kubernetes.io/audit": "restricted"}}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def volume_claim(size: str = "5Gi", access_mode: str | None = None, storage_class: str | None = None,
                 namespace: str | None = None) -> dict[str, Any]:
    """The shared volume for checkpoints, TensorBoard logs and exported models.

    ``access_mode`` and ``storage_class`` default to the settings ``MNIST_ACCESS_MODE``
    (ReadWriteOnce) and ``MNIST_STORAGE_CLASS`` (none: the cluster's default class).
    ReadWriteOnce is what kind's default (local-path) storage offers: every pod on
    the one node can use it. On a cluster of several nodes use ReadWriteMany (NFS,
    CephFS, Filestore, EFS...), or workers on other nodes cannot mount it.
    """
    access_mode = settings.access_mode() if access_mode is None else access_mode
    storage_class = settings.storage_class() if storage_class is None else storage_class
    modes = settings.ACCESS_MODES
    if access_mode not in modes:
        raise ManifestError(f"access_mode must be one of {modes}, got {access_mode!r}")
    if not isinstance(size, str) or not re.fullmatch(r"[1-9][0-9]*(Mi|Gi|Ti)", size):
        raise ManifestError(f"size {size!r} is not a storage size like '5Gi' or '500Mi'")
    spec: dict[str, Any] = {"accessModes": [access_mode], "resources": {"requests": {"storage": size}}}
    if storage_class is not None:
        spec["storageClassName"] = check_dns_label("storage class", storage_class, ManifestError)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _metadata(VOLUME_CLAIM, _check_namespace(namespace), "storage"), "spec": spec}


def volume_helper(image: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    """The pod through which a notebook reads and writes the shared volume it cannot mount.

    It mounts the claim at ``/outputs`` and sleeps; the kubernetes backend execs
    :mod:`mnist_lib.cluster.volume_agent` in it for each transfer (tar over the API
    server, as ``kubectl cp`` does). One per namespace, reused by every notebook.
    It ends itself after a working day (``activeDeadlineSeconds``) and is made
    again on the next use, so a forgotten one does not hold the volume for ever.
    """
    # No CPU request: it sleeps between transfers, and a 2-CPU node must still fit a
    # parameter-server job's four 500m pods beside it (a transfer uses the CPU left over).
    container = _container(VOLUME_HELPER_CONTAINER, image, ["sleep", "infinity"], [],
                           {"requests": {"cpu": "0", "memory": "64Mi"},
                            "limits": {"cpu": "1", "memory": "512Mi"}})
    spec = _pod_spec([container], restart_policy="Never")
    spec["activeDeadlineSeconds"] = 10 * 3600
    spec["terminationGracePeriodSeconds"] = 0  # sleep ignores SIGTERM: do not wait 30 s for it
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _metadata(VOLUME_HELPER, _check_namespace(namespace), "volume-helper"), "spec": spec}


# -- training -----------------------------------------------------------------------

def pod_failure_policy() -> dict[str, Any]:
    """What a training Job does when one of its pods fails: the same decisions as the operator's ExitCode.

    Rules are tried in order; a failure no rule matches is retried in a new pod, and counts
    towards the backoff limit: a pod deleted (training exits 143 on SIGTERM) or killed (137), a
    distributed peer lost (138). Each new pod resumes from the latest epoch checkpoint.
    """
    return {"rules": [
        # Evicted, preempted, its node drained: not the training's fault, so it uses up no retry.
        # (A pod deleted with `kubectl delete` gets no such condition: it is retried and counted.)
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        # Bad input (2) or a bug (1): running again cannot help, so fail now instead of retrying.
        {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In",
                                              "values": [EXIT_FAILED, EXIT_BAD_INPUT]}},
    ]}


def training_job(name: str, config: TrainConfig, image: str | None = None,
                 namespace: str | None = None, resources: Mapping[str, Any] = TRAINING_RESOURCES,
                 backoff_limit: int = BACKOFF_LIMIT) -> dict[str, Any]:
    """One training pod as a batch/v1 Job: the simplest way to train on a cluster.

    ``backoff_limit``: how many times a failed pod is retried before the Job fails.
    """
    check_name(name, "job name")
    check_int("backoff_limit", backoff_limit, 0, 100, error=ManifestError)
    _check_config(config)
    # Never: a failed pod is replaced by a new one (which resumes from the last checkpoint on the
    # shared volume), as the pod failure policy decides; it needs Never to see each exit code.
    pod = _pod_spec([_training_container(config, image, resources)], restart_policy="Never")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(name, _check_namespace(namespace), "training"),
        "spec": {
            "backoffLimit": backoff_limit,
            "podFailurePolicy": pod_failure_policy(),
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": _job_pod_metadata(name), "spec": pod},
        },
    }


def tfjob(name: str, config: TrainConfig, workers: int = 2, parameter_servers: int = 0,
          image: str | None = None, namespace: str | None = None,
          resources: Mapping[str, Any] = TRAINING_RESOURCES,
          backoff_limit: int = BACKOFF_LIMIT) -> dict[str, Any]:
    """A Kubeflow TFJob (kubeflow.org/v1): the operator sets TF_CONFIG in every pod.

    ``parameter_servers=0``: Worker x ``workers``, multi-worker mirrored (worker 0
    writes). ``parameter_servers>0``: Chief + PS + Worker, parameter-server training
    (the chief coordinates and writes). Every replica gets the same flags.
    ``backoff_limit``: how many times failed pods are restarted before the TFJob fails.
    """
    check_int("workers", workers, 1, 64, error=ManifestError)
    check_int("parameter_servers", parameter_servers, 0, 16, error=ManifestError)
    check_int("backoff_limit", backoff_limit, 0, 100, error=ManifestError)
    check_name(name, "job name", f"-worker-{workers - 1}")
    _check_config(config)
    return _tfjob(name, config, workers, parameter_servers, image, _check_namespace(namespace), resources,
                  backoff_limit)


def _tfjob(name: str | None, config: TrainConfig, workers: int, parameter_servers: int, image: str | None,
           namespace: str | None, resources: Mapping[str, Any], backoff_limit: int = BACKOFF_LIMIT,
           run: str | None = None, restart_policy: str = "ExitCode") -> dict[str, Any]:
    """The TFJob without the checks (Katib's trial template has placeholders for values)."""
    run = run or name
    counts = {"Chief": 1, "PS": parameter_servers} if parameter_servers else {}
    counts["Worker"] = workers
    replica_specs = {
        role: {
            "replicas": count,
            # ExitCode: a replica that exits with 128 or more (killed, a peer lost, SIGTERM) is recreated
            # and resumes from the latest checkpoint; 1 or 2 (a bug, a bad flag) fails the job at once.
            # Two limits of operator v1.9.4: a deleted or evicted pod fails the TFJob whatever this says
            # (it counts a terminating pod as failed before it exits: kubeflow/trainer#1560), and
            # recreated pods do not count towards backoffLimit. A TFJob failed that way resumes from its
            # checkpoint when it is submitted again (without clearing its folders).
            "restartPolicy": restart_policy,
            "template": {"metadata": _job_pod_metadata(run),
                         "spec": _pod_spec([_training_container(config, image, resources)])},
        }
        for role, count in counts.items()
    }
    metadata = _metadata(name, namespace, "training") if name else {"labels": labels(run, "training")}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": metadata,
        "spec": {
            "runPolicy": {
                # When the job ends, delete the pods still running (parameter servers
                # wait forever) but keep finished ones, so their logs can be read.
                "cleanPodPolicy": "Running",
                "backoffLimit": backoff_limit,
                "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            },
            "tfReplicaSpecs": replica_specs,
        },
    }


def indexed_job(name: str, config: TrainConfig, workers: int = 2, image: str | None = None,
                namespace: str | None = None, resources: Mapping[str, Any] = TRAINING_RESOURCES,
                retries_per_worker: int = RETRIES_PER_WORKER) -> list[dict[str, Any]]:
    """Multi-worker training without the Kubeflow operator: ``[headless Service, Indexed Job]``.

    An Indexed Job gives each pod ``JOB_COMPLETION_INDEX`` (0, 1, ...) and the hostname
    ``<job>-<index>``; with the headless Service as its subdomain, each pod gets the DNS
    name ``<job>-<index>.<service>`` (in full ``<job>-<index>.<service>.<namespace>.svc``; the
    short name resolves inside the namespace, so the Job runs unchanged in any namespace).
    The Job lists those names once in ``MNIST_WORKER_HOSTS`` and training derives TF_CONFIG from them
    (:func:`mnist_lib.tf_config.indexed_job_tf_config`), as the operator would set it.

    A lost worker (its pod deleted, evicted or killed) is replaced, the others exit with
    ``EXIT_PEER_LOST`` and are replaced too, and all resume from the latest checkpoint: each worker
    gets ``retries_per_worker`` new pods, under the :func:`pod_failure_policy`.
    """
    check_int("workers", workers, 1, 64, error=ManifestError)
    check_name(name, "job name", f"-{workers - 1}")
    check_int("retries_per_worker", retries_per_worker, 0, 100, error=ManifestError)
    _check_config(config)
    namespace = _check_namespace(namespace)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, "training"),
        "spec": {
            "clusterIP": "None",  # headless: DNS names for the pods, no load balancing
            # Publish a pod's name as soon as it has an address, not when it is Ready:
            # workers look each other up while they all start.
            "publishNotReadyAddresses": True,
            "selector": {NAME_LABEL: APP_NAME, RUN_LABEL: name, COMPONENT_LABEL: "training"},
            "ports": [{"name": TF_PORT_NAME, "port": TF_PORT, "targetPort": TF_PORT}],
        },
    }
    hosts = indexed_job_worker_hosts(name, name, workers, TF_PORT)
    container = _training_container(config, image, resources, env={"MNIST_WORKER_HOSTS": hosts})
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(name, namespace, "training"),
        "spec": {
            "completionMode": "Indexed",
            "completions": workers,
            "parallelism": workers,  # all workers at once: they train together
            "backoffLimitPerIndex": retries_per_worker,
            "maxFailedIndexes": 0,  # a worker out of retries fails the job: the others cannot go on without it
            "podFailurePolicy": pod_failure_policy(),
            # A worker's new pod only once the old one has stopped: TensorFlow refuses two tasks of one index.
            "podReplacementPolicy": "Failed",
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": _job_pod_metadata(name),
                "spec": _pod_spec([container], restart_policy="Never", subdomain=name),
            },
        },
    }
    return [service, job]


# -- TensorBoard and serving ----------------------------------------------------------

def _deployment_and_service(name: str, namespace: str, component: str, container: dict[str, Any],
                            ports: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    selector = {NAME_LABEL: APP_NAME, RUN_LABEL: name, COMPONENT_LABEL: component}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, component),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels(name, component)}, "spec": _pod_spec([container])},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, component),
        "spec": {
            "selector": selector,
            "ports": [{"name": port_name, "port": port, "targetPort": port_name} for port_name, port in ports],
        },
    }
    return [deployment, service]


def tensorboard(name: str = "tensorboard", log_dir: str = OUTPUT_MOUNT, image: str | None = None,
                namespace: str | None = None,
                resources: Mapping[str, Any] = TENSORBOARD_RESOURCES) -> list[dict[str, Any]]:
    """TensorBoard over the shared volume: ``[Deployment, Service]`` on port 6006.

    The default ``log_dir`` is the whole volume: TensorBoard searches it recursively,
    so every run shows up side by side as ``<run>/logs/train`` and ``<run>/logs/validation``.
    Open it with ``kubectl -n mnist port-forward service/tensorboard 6006``.
    """
    check_name(name, "name")
    log_dir = _check_under_outputs("log_dir", log_dir)
    container = _container(
        "tensorboard", image,
        ["tensorboard", "--logdir", log_dir, "--host", "0.0.0.0", "--port", str(TENSORBOARD_PORT)], [],
        resources, ports=[{"name": "http", "containerPort": TENSORBOARD_PORT}], read_only=True,
        readiness={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
    )
    return _deployment_and_service(name, _check_namespace(namespace), "tensorboard", container,
                                   [("http", TENSORBOARD_PORT)])


JUPYTER_PORT = 8888
JUPYTER_TOKEN_SECRET = "jupyter-token"           # the Secret (key "token") a JupyterLab pod logs in with
JUPYTER_WORK_DIR = "/home/course/work"           # the notebooks' folder in the pod (a copy of the image's)
JUPYTER_RESOURCES = {"requests": {"cpu": "100m", "memory": "512Mi"},
                     "limits": {"cpu": "2", "memory": "4Gi"}}  # chapter 01 trains in the kernel


def jupyterlab(name: str = "jupyter", service_account: str = "default", image: str | None = None,
               env: Mapping[str, str] | None = None, namespace: str | None = None,
               resources: Mapping[str, Any] = JUPYTER_RESOURCES) -> list[dict[str, Any]]:
    """A JupyterLab in the cluster with the course's notebooks: ``[Deployment, Service]`` on port 8888.

    For a workshop whose attendees have only a browser (``python -m mnist_lib.room up --jupyter``).
    The kernel talks to the cluster as ``service_account`` (its token is mounted, and the course
    reads the pod's namespace), exactly as a laptop with that account's kubeconfig: its output
    folder is its own (an emptyDir), not the pods' volume, and the volume is reached through the
    backend. Login is the token in the Secret ``jupyter-token``, key ``token``.
    """
    check_name(name, "name")
    # The image's notebooks are copied into a writable folder first (-n: an edited copy stays).
    start = (f"mkdir -p {JUPYTER_WORK_DIR} && cp -rn /app/notebooks/. {JUPYTER_WORK_DIR}/ && exec jupyter lab "
             f"--ip=0.0.0.0 --port={JUPYTER_PORT} --no-browser --ServerApp.root_dir={JUPYTER_WORK_DIR} "
             '--IdentityProvider.token="$JUPYTER_TOKEN" --LabApp.news_url=None --LabApp.extension_manager=readonly '
             "--LabApp.expose_app_in_browser=True")
    container = _container(
        "jupyterlab", image, ["sh", "-c", start], [], resources,
        ports=[{"name": "http", "containerPort": JUPYTER_PORT}],
        env={"MNIST_OUTPUT_DIR": str(PurePosixPath(JUPYTER_WORK_DIR, "outputs")), "MNIST_BACKEND": "kubernetes",
             **(env or {})},
        readiness={"httpGet": {"path": "/api", "port": "http"}, "periodSeconds": 2},
    )
    container["env"].append({"name": "JUPYTER_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": JUPYTER_TOKEN_SECRET, "key": "token"}}})
    container["volumeMounts"].append({"name": "work", "mountPath": JUPYTER_WORK_DIR})
    objects = _deployment_and_service(name, _check_namespace(namespace), "jupyterlab", container,
                                      [("http", JUPYTER_PORT)])
    pod = objects[0]["spec"]["template"]["spec"]
    pod["serviceAccountName"] = service_account
    pod["volumes"].append({"name": "work", "emptyDir": {}})
    return objects


SERVING_CONFIG_DIR = "/etc/tensorflow-serving"  # where the serving pod mounts its ConfigMap
SERVING_CONFIG_FILE = "models.config"            # the ModelServerConfig's key in it (and file name)
SERVING_CONFIG_POLL_SECONDS = 30                 # TF Serving re-reads the file this often


class TextFile(str):
    """A file's text in a ConfigMap, or a patch in a kustomization: rendered as a YAML block (``|``), readable."""


yaml.SafeDumper.add_representer(
    TextFile, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", str(text), style="|"))


def model_server_config(model_name: str = MODEL_NAME, model_base_path: str | None = None,
                        version_policy: Any = "all") -> str:
    """TF Serving's model config file (a ``ModelServerConfig`` in text format) for one model.

    ``version_policy``: ``"all"`` (every version under the base path: a client may ask
    for an older one), ``"latest"`` (TF Serving's own default: only the highest), a
    list of versions such as ``[1, 2]`` (``specific``), or a ``ServableVersionPolicy``
    (:func:`mnist_lib.serving_config.version_policy`). Built with the official protos.
    """
    base_path = _check_under_outputs("model_base_path",
                                     model_base_path or f"{OUTPUT_MOUNT}/export/{model_name}")
    try:
        config = serving_config.model_server_config(model_name, base_path, version_policy)
    except serving_config.ModelConfigError as error:
        raise ManifestError(str(error)) from None
    return serving_config.to_text(config)


def model_server(name: str = "mnist-serving", model_name: str = MODEL_NAME, model_base_path: str | None = None,
                 image: str | None = None, command: Sequence[str] | None = None,
                 namespace: str | None = None,
                 resources: Mapping[str, Any] = SERVING_RESOURCES,
                 version_policy: Any = "all") -> list[dict[str, Any]]:
    """TF Serving over the shared volume: ``[ConfigMap, Deployment, Service]``, gRPC 8500 and REST 8501.

    The ConfigMap ``<name>-config`` holds the model config file (:func:`model_server_config`),
    mounted read-only at ``/etc/tensorflow-serving/models.config``; the server reads it
    (``--model_config_file``) and again every 30 s, so a changed ConfigMap changes what is
    served without a restart. It names the model, its ``model_base_path`` (default
    ``/outputs/export/<model_name>``; a run's own export is
    ``f"{config.export_dir}/{config.model_name}"``) and the ``version_policy``: by
    default ``"all"``, every version found, so a client can ask for an older one (TF
    Serving alone would serve only the latest); ``"latest"``, or a list such as ``[1, 2]``.
    Apply the list in this order (the pod mounts the ConfigMap); delete it in reverse.

    The command defaults to ``tensorflow_model_server`` for the official image and to
    the course's ``python -m mnist_lib.serve`` (same flags, same protocol) for any other
    image: a cluster without a registry runs the course image. ``image`` defaults to
    :func:`serving_image`: the official image unless ``MNIST_SERVING_IMAGE`` says otherwise.
    """
    image = serving_image() if image is None else image
    config_name = f"{name}-config"
    check_name(name, "name", longest_suffix="-config")
    check_model_name("model_name", model_name, ManifestError)
    config_text = model_server_config(model_name, model_base_path, version_policy)
    if command is None:
        repository = check_image("image", image, DEFAULT_IMAGE, ManifestError).split("@")[0]
        if ":" in repository.rsplit("/", 1)[-1]:  # drop the tag, not a registry's port
            repository = repository.rsplit(":", 1)[0]
        official = repository.endswith("tensorflow/serving")
        command = ["tensorflow_model_server"] if official else COURSE_SERVER
    # "--flag=value": tensorflow_model_server does not accept "--flag value". The config
    # file replaces --model_name/--model_base_path (TF Serving ignores those beside it).
    args = [f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}",
            f"--model_config_file={SERVING_CONFIG_DIR}/{SERVING_CONFIG_FILE}",
            f"--model_config_file_poll_wait_seconds={SERVING_CONFIG_POLL_SECONDS}"]
    if list(command) == COURSE_SERVER:
        # The course's server listens on 127.0.0.1 by default (safe on a laptop); in a
        # pod it must listen on the pod's address for the Service and the probe.
        args.append("--host=0.0.0.0")
    container = _container(
        "serving", image, command, args, resources,
        ports=[{"name": "grpc", "containerPort": GRPC_PORT},
               {"name": "http", "containerPort": REST_PORT}],
        read_only=True,
        # Ready once the model is loaded: TF Serving answers its status on REST.
        readiness={"httpGet": {"path": f"/v1/models/{model_name}", "port": "http"},
                   "initialDelaySeconds": 5, "periodSeconds": 5},
    )
    # The whole folder, not a subPath: a subPath mount never sees the ConfigMap change.
    container["volumeMounts"].append({"name": "serving-config", "mountPath": SERVING_CONFIG_DIR,
                                      "readOnly": True})
    namespace = _check_namespace(namespace)
    deployment, service = _deployment_and_service(name, namespace, "serving", container,
                                                  [("grpc", GRPC_PORT), ("http", REST_PORT)])
    deployment["spec"]["template"]["spec"]["volumes"].append(
        {"name": "serving-config", "configMap": {"name": config_name}})
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(config_name, namespace, "serving"),
        "data": {SERVING_CONFIG_FILE: TextFile(config_text)},
    }
    return [config_map, deployment, service]


# -- hyperparameter sweeps with Katib ----------------------------------------------------

def katib_experiment(sweep: SweepSpec, *, parameter_servers: int = 0, image: str | None = None,
                     namespace: str | None = None,
                     resources: Mapping[str, Any] = TRAINING_RESOURCES) -> dict[str, Any]:
    """A Katib Experiment (kubeflow.org/v1beta1) running ``sweep``: learning rate x hidden layers.

    Each trial is our TFJob (``sweep.workers`` workers, and a Chief and
    ``parameter_servers`` PS if there are any) with ``${trialParameters.learningRate}``
    and ``${trialParameters.hiddenLayers}`` in the flags of *every* replica, and its own
    checkpoint and export folders (``/outputs/<trial-name>/...``), so the best model
    can be found and served. The candidates are the space's grid values (Katib's random
    search draws among them), as many trials as the sweep has; ``sweep.fixed`` and the
    space's one width and epochs set the other hyperparameters.
    Katib reads ``validation/epoch_accuracy`` from the event files and maximizes it.
    Note: Katib documents early stopping as working with the StdOut and File
    collectors; with TensorFlowEvent, medianstop may never stop a trial.
    """
    workers = sweep.workers
    check_int("parameter_servers", parameter_servers, 0, 16, error=ManifestError)
    # Trials are named <experiment>-<8 random characters>; their pods <trial>-worker-N.
    name = check_name(sweep.name, "experiment name", f"-xxxxxxxx-worker-{workers - 1}")
    space = sweep.space
    if len(space.widths) != 1:
        raise ManifestError("the Katib manifest sweeps learning rate and hidden layers; fix the width "
                            "to one value (SearchSpace(widths=(128,)))")
    base = run_config(name, **sweep.fixed, width=space.widths[0], epochs=space.epochs)
    learning_rates, hidden_layers = space.learning_rates(), space.layer_values()
    max_trials = len(sweep.points())
    parallel_trials = min(sweep.parallel, max_trials)

    trial_dir = f"{OUTPUT_MOUNT}/${{trialParameters.trialName}}"
    trial_config = dataclasses.replace(
        base, learning_rate="${trialParameters.learningRate}",
        hidden_layers="${trialParameters.hiddenLayers}",
        model_dir=f"{trial_dir}/checkpoints", log_dir=KATIB_METRICS_DIR, export_dir=f"{trial_dir}/export")
    # OnFailure, not ExitCode: Katib's early stopping ends a trial by killing its training process,
    # which ExitCode would answer with a new pod.
    trial = _tfjob(None, trial_config, workers, parameter_servers, image, None, resources, run=name,
                   restart_policy="OnFailure")
    # The pod that writes the event files: the chief, or worker 0 when there is none.
    primary = ({"training.kubeflow.org/replica-type": "chief"} if parameter_servers else
               {"training.kubeflow.org/replica-type": "worker", "training.kubeflow.org/replica-index": "0"})
    spec: dict[str, Any] = {
        "objective": {"type": "maximize", "objectiveMetricName": OBJECTIVE,
                      "additionalMetricNames": ["validation/epoch_loss", "train/epoch_accuracy"]},
        "algorithm": {"algorithmName": sweep.search},
    }
    if sweep.early_stopping is not None:
        # Katib's defaults (start_step 4) would never stop a 3-epoch trial.
        spec["earlyStopping"] = {"algorithmName": "medianstop", "algorithmSettings": [
            {"name": "min_trials_required", "value": "2"}, {"name": "start_step", "value": "2"}]}
    spec.update({
        "parallelTrialCount": parallel_trials,
        "maxTrialCount": max_trials,
        "maxFailedTrialCount": min(3, max_trials),
        "metricsCollectorSpec": {
            "source": {"fileSystemPath": {"path": KATIB_METRICS_DIR, "kind": "Directory"}},
            "collector": {"kind": "TensorFlowEvent"},
        },
        "parameters": [
            {"name": "learning_rate", "parameterType": "discrete",
             "feasibleSpace": {"list": [str(v) for v in learning_rates]}},
            {"name": "hidden_layers", "parameterType": "discrete",
             "feasibleSpace": {"list": [str(v) for v in hidden_layers]}},
        ],
        "trialTemplate": {
            "primaryContainerName": CONTAINER_NAME,
            "primaryPodLabels": primary,
            "successCondition": 'status.conditions.#(type=="Succeeded")#|#(status=="True")#',
            "failureCondition": 'status.conditions.#(type=="Failed")#|#(status=="True")#',
            "trialParameters": [
                {"name": "learningRate", "description": "Adam learning rate", "reference": "learning_rate"},
                {"name": "hiddenLayers", "description": "hidden dense layers", "reference": "hidden_layers"},
                {"name": "trialName", "description": "the trial's own folder on the volume",
                 "reference": "${trialSpec.Name}"},
            ],
            "trialSpec": trial,
        },
    })
    return {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
            "metadata": _metadata(name, _check_namespace(namespace), "sweep"), "spec": spec}


# -- a local cluster ---------------------------------------------------------------

def kind_cluster(name: str = "mnist-course", workers: int = 0) -> dict[str, Any]:
    """A kind cluster config (``kind create cluster --config manifests/kind-cluster.yaml``).

    One node by default: the shared ReadWriteOnce volume then reaches every pod.
    """
    check_name(name, "cluster name")
    check_int("workers", workers, 0, 8, error=ManifestError)
    nodes = [{"role": "control-plane"}] + [{"role": "worker"} for _ in range(workers)]
    return {"apiVersion": "kind.x-k8s.io/v1alpha4", "kind": "Cluster", "name": name, "nodes": nodes}


# -- YAML ------------------------------------------------------------------------------

_TOP_KEYS = ("apiVersion", "kind", "metadata", "spec")


def _ordered(obj: Mapping[str, Any]) -> dict[str, Any]:
    """apiVersion, kind, metadata, spec first, as kubectl shows them; the rest as built."""
    first = {k: obj[k] for k in _TOP_KEYS if k in obj}
    return {**first, **{k: v for k, v in obj.items() if k not in first}}


def to_yaml(objects: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> str:
    """Render one object or a list of them as multi-document YAML (``---`` between)."""
    items = [objects] if isinstance(objects, Mapping) else list(objects)
    return yaml.safe_dump_all([_ordered(o) for o in items], sort_keys=False,
                              default_flow_style=False, explicit_start=True, width=100)


# -- manifests/*.yaml --------------------------------------------------------------------

def generated_yaml(module: str, title: str, usage: str, objects: Iterable[Mapping[str, Any]]) -> str:
    """A generated YAML file: a header (what it is, which module made it, how to use it), then ``objects``."""
    header = [f"# {title}",
              f"# Generated from {module.replace('.', '/')}.py by `python -m {module} --write`:",
              "# edit the Python, not this file.",
              *[f"# {line}" for line in usage.splitlines()]]
    return "\n".join(header) + "\n" + to_yaml(objects)


@dataclasses.dataclass(frozen=True)
class ManifestFile:
    """One generated file: its path (under manifests/), what it holds, how to use it, how to build it."""

    filename: str
    title: str
    usage: str
    build: Callable[[], list[dict[str, Any]]]
    module: str = "mnist_lib.manifests"  # the module that renders it (its --write)

    def render(self) -> str:
        return generated_yaml(self.module, self.title, self.usage, self.build())


def _apply(filename: str, needs: str = "") -> str:
    first = "First: kubectl apply -f manifests/namespace.yaml\n"
    return (needs + "\n" if needs else "") + first + f"Apply: kubectl apply -f manifests/{filename}"


def course_files(ns: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE) -> tuple[ManifestFile, ...]:
    """The files of manifests/, with their objects in namespace ``ns``, running ``image``.

    manifests/ holds the defaults (:data:`FILES`), not this machine's settings, so the files are the
    same everywhere. Other values give what a kustomize overlay of manifests/ must build
    (tests/test_manifests_kustomize.py). The model server runs the official image whatever ``image``.
    """
    at = {"namespace": ns, "image": image}
    return (
        ManifestFile("kind-cluster.yaml", "A local Kubernetes cluster for the course (kind).",
                     "Create: kind create cluster --config manifests/kind-cluster.yaml\n"
                     "Then:   kind load docker-image mnist-course:latest --name mnist-course",
                     lambda: [kind_cluster()]),
        ManifestFile("namespace.yaml", "The course's namespace and the shared volume mounted at /outputs.",
                     "Apply: kubectl apply -f manifests/namespace.yaml",
                     lambda: [namespace(ns), volume_claim(namespace=ns)]),
        ManifestFile("job.yaml", "Train in one pod (a batch/v1 Job).", _apply("job.yaml"),
                     lambda: [training_job("mnist-job", run_config("mnist-job"), **at)]),
        ManifestFile("tfjob-multi-worker.yaml", "Multi-worker training, TFJob with 2 workers.",
                     _apply("tfjob-multi-worker.yaml", "Needs the Kubeflow training operator v1.9."),
                     lambda: [tfjob("mnist-multi-worker", run_config("mnist-multi-worker"), **at)]),
        ManifestFile("tfjob-parameter-server.yaml", "Parameter-server training, TFJob Chief + 1 PS + 2 workers.",
                     _apply("tfjob-parameter-server.yaml", "Needs the Kubeflow training operator v1.9."),
                     lambda: [tfjob("mnist-ps", run_config("mnist-ps"), parameter_servers=1, **at)]),
        ManifestFile("indexed-job.yaml", "Multi-worker training without the operator: Indexed Job + headless Service.",
                     _apply("indexed-job.yaml"),
                     lambda: indexed_job("mnist-indexed", run_config("mnist-indexed"), **at)),
        ManifestFile("tensorboard.yaml", "TensorBoard over every run on the shared volume.",
                     _apply("tensorboard.yaml") + "\nOpen:  kubectl -n mnist port-forward service/tensorboard 6006",
                     lambda: tensorboard(**at)),
        ManifestFile("serving.yaml", "TF Serving for the model exported to /outputs/export/mnist.",
                     _apply("serving.yaml") + "\nOpen:  kubectl -n mnist port-forward service/mnist-serving 8500 8501",
                     lambda: model_server(image=SERVING_IMAGE, namespace=ns)),  # the official image, always
        ManifestFile("katib-experiment.yaml",
                     "A Katib hyperparameter sweep: learning rate x hidden layers, TFJob trials.",
                     _apply("katib-experiment.yaml", "Needs Katib v0.19 and the Kubeflow training operator v1.9."),
                     lambda: [katib_experiment(SweepSpec("mnist-sweep"), **at)]),
    )


FILES = course_files()


# -- manifests/ as a kustomize base ---------------------------------------------------------
# `kubectl apply -k overlays/<name>` applies the course's objects in one go, in another namespace, with
# another image and StorageClass, and no file edited. The overlays are beside manifests/, not in it: kustomize
# refuses an overlay inside its base's folder ("cycle detected"). mnist_lib/overlays.py renders them.

# Every file whose kinds any cluster knows; no object is in two of them (kustomize refuses a duplicate).
# Not kind-cluster.yaml: kind's config, not an object. Not the TFJobs nor katib-experiment.yaml: their
# kinds exist only where the training operator and Katib are installed, and `kubectl apply -k` fails on a
# kind the cluster does not know. Chapters 04 and 07 submit them, in MNIST_NAMESPACE.
BASE_FILES = ("namespace.yaml", "job.yaml", "indexed-job.yaml", "tensorboard.yaml", "serving.yaml")


def kustomization(**fields: Any) -> dict[str, Any]:
    """A kustomization.yaml as data, like every object of the course (kustomize reads it; no cluster does)."""
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields}


BASE = ManifestFile(
    "kustomization.yaml",
    "The course's objects as a kustomize base: namespace mnist, image mnist-course:latest, the default StorageClass.",
    "Apply: kubectl apply -k overlays/attendee   (overlays/kind: this base as it is)\n"
    "See what it applies: kubectl kustomize overlays/attendee\n"
    "Your own overlay: copy overlays/attendee anywhere (its `resources:` is the path from there to manifests/)\n"
    "  and set in it your namespace (`namespace:`), the image you pushed (`images:`, newName and newTag) and\n"
    "  a class of `kubectl get storageclass` (the patch's value); delete what you keep at the default\n"
    "  (`replacements:` goes with `namespace:`).\n"
    "Not here: kind-cluster.yaml, the TFJobs and katib-experiment.yaml (mnist_lib/manifests.py, BASE_FILES, says why).",
    lambda: [kustomization(resources=list(BASE_FILES))])


def render_all() -> dict[str, str]:
    """Every file of manifests/ (the objects' files, then the kustomize base), as text: {filename: contents}."""
    return {f.filename: f.render() for f in (*FILES, BASE)}


def render_command(argv: Sequence[str] | None, module: str, what: str, render: Callable[[], dict[str, str]],
                   default_dir: Path) -> int:
    """The command line of a module that renders YAML files from the library (this one, ``room.kustomize``):
    print them, ``--write`` them, or ``--check`` that the committed files are what the library builds."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=f"Render {what} from {module}.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the files")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 with a diff if a file differs from what the library builds")
    parser.add_argument("--dir", type=Path, default=default_dir, help=f"default: {default_dir}")
    args = parser.parse_args(argv)

    rendered = render()
    if args.write:
        for filename, text in rendered.items():
            (args.dir / filename).parent.mkdir(parents=True, exist_ok=True)
            (args.dir / filename).write_text(text)
            print(f"wrote {args.dir / filename}")
        return 0
    if args.check:
        stale = 0
        for filename, text in rendered.items():
            path = args.dir / filename
            current = path.read_text() if path.exists() else ""
            if current != text:
                stale += 1
                sys.stdout.writelines(difflib.unified_diff(
                    current.splitlines(keepends=True), text.splitlines(keepends=True),
                    f"{path} (committed)", f"{path} ({module})"))
        if stale:
            print(f"{stale} file(s) differ: run `python -m {module} --write`", file=sys.stderr)
            return 1
        print(f"{len(rendered)} files up to date in {args.dir}")
        return 0
    for filename, text in rendered.items():
        print(f"# ---- {filename}\n{text}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return render_command(argv, "mnist_lib.manifests", "the course's Kubernetes manifests (manifests/*.yaml)",
                          render_all, MANIFESTS_DIR)


if __name__ == "__main__":
    sys.exit(main())
