"""A real Kubernetes cluster for the tests: start it once per session, or reuse a running one.

The cluster is what ``infra/k8s/`` builds and runs on this machine: kube-apiserver,
controller-manager, scheduler, kubelet and kube-proxy v1.32.13 built from source,
a containerd node, CoreDNS, the Kubeflow training operator and, as in kind, a default
StorageClass (``standard``, local-path-provisioner): a claim without a class binds in
any namespace once a pod uses it. Nothing is faked.

- If ``infra/k8s/cluster.sh status`` says a cluster is running (a developer's),
  the session uses it and leaves it running.
- Otherwise the session starts one (``build.sh``, ``cluster.sh up``, image import)
  and stops it at the end, also after a failure, Ctrl-C or SIGTERM.
- Where a cluster cannot start (not Linux, not root, no Go, no Docker) the tests
  skip and say how to run them, except under ``CI``: there it is an error, since
  CI must not silently skip.

Tests use the ``real_cluster`` fixture (the cluster with the training operator),
or ``cluster_without_operator`` (before the operator is installed: the hook in
conftest runs those first). Timings go to ``test-artifacts/real-cluster-timings.json``.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from mnist_lib import paths

COURSE_ROOT = Path(__file__).resolve().parent.parent
INFRA = COURSE_ROOT / "infra" / "k8s"
CLUSTER_SH = INFRA / "cluster.sh"
BUILD_SH = INFRA / "build.sh"
STATE = Path(os.environ.get("K8S_STATE", "/tmp/mnist-course-k8s"))
ARTIFACTS = COURSE_ROOT / "test-artifacts"
TIMINGS = ARTIFACTS / "real-cluster-timings.json"
IMAGE = "mnist-course:latest"  # what the manifests run (manifests.DEFAULT_IMAGE)
NODE_IMAGE = "docker.io/library/mnist-course:latest"  # the same image, as containerd names it
MARKER = "real_cluster"
GO_STANDARD_PATH = Path("/usr/local/go/bin/go")  # go.dev's install location, often not on a script's PATH
WITHOUT_OPERATOR = "cluster_without_operator"  # the fixture of tests that need the CRD absent

HOW_TO_RUN = ("To run these tests: on Linux as root with Go and Docker (the course's CI machine), "
              "`.venv/bin/python -m pytest -m real_cluster tests/` starts a cluster with infra/k8s/ "
              "and stops it afterwards; or start one yourself with `infra/k8s/build.sh && "
              "infra/k8s/cluster.sh up` and the tests reuse it.")


def in_ci() -> bool:
    """The house rule: under CI (any non-empty value but false/0) nothing may skip for lack of a cluster."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip with a reason and the way to run the tests; under CI fail instead."""
    if in_ci():
        pytest.fail(f"CI is set, so the real Kubernetes cluster must start here: {reason}", pytrace=False)
    pytest.skip(f"no real Kubernetes cluster: {reason} {HOW_TO_RUN}")


# -- timings, written as they are measured (a crash keeps what was measured) ---------

_timings_lock = threading.Lock()


def record(key: str, value: Any) -> None:
    """Store one measurement in test-artifacts/real-cluster-timings.json (read by the closing notes)."""
    with _timings_lock:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            data = json.loads(TIMINGS.read_text())
        except (OSError, ValueError):
            data = {}
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
        paths.write_json(TIMINGS, dict(sorted(data.items())))


def record_test(nodeid: str, seconds: float, outcome: str) -> None:
    """Each real-cluster test's duration (conftest calls this from pytest_runtest_logreport)."""
    record("tests", {nodeid: {"seconds": round(seconds, 1), "outcome": outcome}})


# -- ordering (conftest's pytest_collection_modifyitems) ----------------------------

def order_last(items: list[pytest.Item]) -> None:
    """Move the real-cluster tests to the end of the session, keeping their order.

    At the end, the cluster's Go build (started in the background by ``make test``)
    has had time to finish, and no other test competes for the 2 cores. Among them,
    tests that need the cluster before the operator is installed go first.
    """
    cluster = [item for item in items if item.get_closest_marker(MARKER)]
    if not cluster:
        return
    others = [item for item in items if not item.get_closest_marker(MARKER)]
    cluster.sort(key=lambda item: 0 if WITHOUT_OPERATOR in getattr(item, "fixturenames", ()) else 1)
    items[:] = others + cluster


# -- the cluster --------------------------------------------------------------------

@dataclass
class RealCluster:
    """A running cluster: how to reach it and how to run the course against it."""

    kubeconfig: Path
    env: dict[str, str]  # KUBECONFIG, MNIST_BACKEND, MNIST_SERVING_IMAGE
    started_here: bool = False  # False: a developer's cluster, left running
    timings: dict[str, float] = field(default_factory=dict)

    def api_client(self):
        """An ApiClient for the admin kubeconfig (not $KUBECONFIG, which the client reads at import)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def backend(self, namespace: str):
        """The course's KubernetesBackend for ``namespace`` on this cluster."""
        from mnist_lib.cluster.kubernetes import KubernetesBackend

        return KubernetesBackend(namespace=namespace, api_client=self.api_client())

    def supports_tfjob(self) -> bool:
        return self.backend("default").supports_tfjob()

    def claim_folder(self, namespace: str, claim: str = "mnist-outputs") -> Path | None:
        """The node's folder behind a bound claim (the provisioned PV's path), or None while it is unbound.

        The default StorageClass provisions ``$K8S_STATE/local-path/<pv>_<namespace>_<claim>``
        when the first pod that uses the claim is scheduled; the node is this machine.
        """
        from kubernetes import client

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            pvc = core.read_namespaced_persistent_volume_claim(claim, namespace)
            if pvc.status.phase != "Bound" or not pvc.spec.volume_name:
                return None
            source = core.read_persistent_volume(pvc.spec.volume_name).spec
        path = (source.host_path or source.local).path
        return Path(path)


def _cluster_sh(*args: str, env: dict[str, str] | None = None, timeout: float = 900,
                log: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run infra/k8s/cluster.sh (or build.sh via ``args[0]``) and keep its output in test-artifacts."""
    command = [str(CLUSTER_SH), *args] if not args[0].endswith(".sh") else list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=COURSE_ROOT)
    if log:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / log).write_text(f"$ {' '.join(command)}\n{done.stdout}\n--- stderr ---\n{done.stderr}")
    return done


def _tail(done: subprocess.CompletedProcess[str], lines: int = 30) -> str:
    text = (done.stdout + "\n" + done.stderr).strip().splitlines()
    return "\n".join(text[-lines:])


def _read_env_file() -> dict[str, str]:
    """``$K8S_STATE/env``, which ``cluster.sh up`` writes: KUBECONFIG=..."""
    values = {}
    for line in (STATE / "env").read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key.removeprefix("export ").strip()] = value.strip().strip('"').strip("'")
    return values


def cluster_running() -> bool:
    """Is a cluster already up (``cluster.sh status``: API ready, node Ready)? Then it is reused, never stopped."""
    try:
        return CLUSTER_SH.is_file() and _cluster_sh("status", timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _ports_in_use() -> list[str]:
    """Listeners on the API server's or etcd's port: a cluster we do not know is running.

    Then ``up`` must not be tried: its failure would run ``down``, which removes the
    node address and iptables rules that the other cluster uses.
    """
    api_port = os.environ.get("API_PORT", "6443")
    try:
        listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[3] for line in listening.splitlines()
            if len(line.split()) > 3 and line.split()[3].rsplit(":", 1)[-1] in (api_port, "2379")]


def _why_not_here() -> str | None:
    """Why a cluster cannot be started on this machine, or None."""
    if platform.system() != "Linux":
        return f"the cluster runs a kubelet and containerd, which need Linux (this is {platform.system()})."
    if os.geteuid() != 0:
        return "starting the cluster needs root (kubelet, containerd, iptables, mounts)."
    if not (shutil.which("go") or GO_STANDARD_PATH.is_file()):  # build.sh looks there too
        return "Go is not installed (infra/k8s/build.sh builds Kubernetes from source)."
    if not (CLUSTER_SH.is_file() and BUILD_SH.is_file()):
        return f"{CLUSTER_SH.relative_to(COURSE_ROOT)} or {BUILD_SH.relative_to(COURSE_ROOT)} is missing."
    busy = _ports_in_use()
    if busy:
        return (f"something already listens on {', '.join(busy)} but `infra/k8s/cluster.sh status` does not "
                "report a ready cluster: another cluster is running or starting (stop it, or wait for "
                "it and run again).")
    from mnist_lib import container

    ok, message = container.docker_status()
    if not ok:
        return f"the course image is built with Docker and loaded into the node: {message}"
    return None


def _node_has_image(cluster: RealCluster) -> bool:
    from kubernetes import client

    with cluster.api_client() as api:
        nodes = client.CoreV1Api(api).list_node().items
    return any(NODE_IMAGE in (image.names or []) for n in nodes for image in n.status.images or [])


def _timed(cluster_timings: dict[str, float], key: str, fn, *args, **kwargs):
    started = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        cluster_timings[key] = round(time.monotonic() - started, 1)
        record(key, cluster_timings[key])


class _Stopper:
    """Runs ``cluster.sh down`` exactly once: from the fixture's finalizer, atexit, or SIGTERM.

    ``down`` runs in its own session, so a second Ctrl-C at the terminal does not
    interrupt it half way (that would leave mounts and iptables rules behind).
    """

    def __init__(self) -> None:
        self.armed = False
        self._done = threading.Lock()
        self._previous_sigterm: Any = None

    def arm(self) -> None:
        self.armed = True
        atexit.register(self.stop)
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            # A CI timeout sends SIGTERM: turn it into KeyboardInterrupt so pytest tears down.
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._interrupt)

    def disarm(self) -> None:
        """Not ours to stop after all (another session's ``up`` started it first)."""
        self.armed = False
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    @staticmethod
    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def stop(self) -> None:
        if not self.armed or not self._done.acquire(blocking=False):
            return
        self.armed = False
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        started = time.monotonic()
        ARTIFACTS.mkdir(exist_ok=True)
        with open(ARTIFACTS / "real-cluster-down.log", "w") as log:
            process = subprocess.Popen([str(CLUSTER_SH), "down"], stdout=log, stderr=subprocess.STDOUT,
                                       cwd=COURSE_ROOT, start_new_session=True)
            while True:
                try:
                    process.wait()
                    break
                except KeyboardInterrupt:
                    print("\nstill stopping the Kubernetes cluster (cluster.sh down); please wait", flush=True)
        record("cluster_down_s", round(time.monotonic() - started, 1))
        if process.returncode != 0:
            print(f"cluster.sh down exited {process.returncode}: see {ARTIFACTS / 'real-cluster-down.log'}",
                  flush=True)


def start_or_reuse(request: pytest.FixtureRequest, need_no_operator: bool) -> RealCluster:
    """The session's cluster: reuse a running one, or start one (stopped by a finalizer)."""
    timings: dict[str, float] = {}
    with _timings_lock:  # a new session starts a new file
        TIMINGS.unlink(missing_ok=True)
    record("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if cluster_running():
        started_here = False
        record("reused", True)
    else:
        reason = _why_not_here()
        if reason:
            unavailable(reason)
        from mnist_lib import container

        record("reused", False)
        if not container.image_exists(IMAGE):
            _timed(timings, "image_build_s", container.build_image, IMAGE, progress=None)
        done = _timed(timings, "build_s", _cluster_sh, str(BUILD_SH), timeout=3600,
                      log="real-cluster-build.log")
        if done.returncode != 0:
            unavailable(f"infra/k8s/build.sh failed (exit {done.returncode}):\n{_tail(done)}")
        stopper = _Stopper()
        stopper.arm()  # before `up`: a half-started cluster is stopped too
        request.addfinalizer(stopper.stop)
        done = _timed(timings, "cluster_up_s", _cluster_sh, "up", env={"OPERATOR": "0"} if need_no_operator else {},
                      log="real-cluster-up.log")
        if done.returncode != 0:
            unavailable(f"infra/k8s/cluster.sh up failed (exit {done.returncode}):\n{_tail(done)}")
        started_here = "cluster already running" not in done.stdout
        if not started_here:  # another session's `up` held cluster.sh's lock and started it: leave it running
            stopper.disarm()
            record("reused", True)
    # `status` is 0 as soon as the API and the node are ready; `up` writes env at its very end.
    deadline = time.monotonic() + 180
    while not (STATE / "env").is_file() and time.monotonic() < deadline:
        time.sleep(2)
    try:
        values = _read_env_file()
    except OSError as err:
        unavailable(f"the cluster runs, but {STATE / 'env'} (written by `cluster.sh up`) is missing: {err}")
    kubeconfig = Path(values["KUBECONFIG"])
    # No MNIST_OUTPUT_DIR: the pods' volume is the claim mnist-outputs, provisioned by the default
    # StorageClass in the backend's namespace, and the chapters read it through the backend
    # (a helper pod), as on a learner's cluster; the kernel's own output folder stays local.
    env = {"KUBECONFIG": str(kubeconfig), "MNIST_BACKEND": "kubernetes", "MNIST_SERVING_IMAGE": IMAGE}
    cluster = RealCluster(kubeconfig, env, started_here, timings)
    if started_here or not _node_has_image(cluster):
        done = _timed(timings, "image_import_s", _cluster_sh, "import", IMAGE, timeout=900,
                      log="real-cluster-import.log")
        if done.returncode != 0:
            unavailable(f"infra/k8s/cluster.sh import {IMAGE} failed (exit {done.returncode}):\n{_tail(done)}")
    return cluster


def install_operator(cluster: RealCluster) -> None:
    """``cluster.sh install-operator`` if the cluster has no TFJob resource yet."""
    if cluster.supports_tfjob():
        return
    done = _timed(cluster.timings, "operator_install_s", _cluster_sh, "install-operator", timeout=600,
                  log="real-cluster-operator.log")
    if done.returncode != 0 or not cluster.supports_tfjob():
        unavailable(f"infra/k8s/cluster.sh install-operator failed (exit {done.returncode}):\n{_tail(done)}")


# -- fixtures (conftest imports them) ----------------------------------------------

@pytest.fixture(scope="session")
def _real_cluster_base(request: pytest.FixtureRequest) -> Iterator[RealCluster]:
    """The cluster as started: without the operator if some test of the session needs that."""
    need_no_operator = any(WITHOUT_OPERATOR in getattr(item, "fixturenames", ())
                           for item in request.session.items)
    yield start_or_reuse(request, need_no_operator)


@pytest.fixture(scope="session")
def real_cluster(_real_cluster_base: RealCluster) -> RealCluster:
    """A real cluster with the Kubeflow training operator: kubeconfig, env."""
    install_operator(_real_cluster_base)
    return _real_cluster_base


@dataclass
class WorkshopRoom:
    """A room made by the instructor's command, ``python -m mnist_lib.room up`` (mnist_lib.room)."""

    name: str
    folder: Path             # the attendees' kubeconfigs
    attendees: list[str]
    instructor_env: dict[str, str]
    up_report: dict[str, Any]

    def kubeconfig(self, attendee: str) -> Path:
        return self.folder / f"{attendee}.kubeconfig"

    def namespace(self, attendee: str) -> str:
        return f"{self.name}-{attendee}"

    def command(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``python -m mnist_lib.room ARGS --room NAME --kubeconfig-dir FOLDER`` as the instructor."""
        import sys

        return subprocess.run([sys.executable, "-m", "mnist_lib.room", *args, "--room", self.name,
                               "--kubeconfig-dir", str(self.folder)], cwd=COURSE_ROOT, env=self.instructor_env,
                              capture_output=True, text=True, timeout=timeout)


ROOM = "mnist-room"
ROOM_SIZE = 3


@pytest.fixture(scope="session")
def workshop_room(real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkshopRoom]:
    """A room of three attendees, made with the instructor's command; `room down` at the end of the session.

    Attendee 1 runs the cluster chapters with its kubeconfig (tests/test_notebooks_on_kubernetes.py);
    tests/test_room_real_cluster.py tries the others, the isolation, the quota and `room down`."""
    env = {**os.environ, **real_cluster.env}
    env.pop("MNIST_NAMESPACE", None)
    room = WorkshopRoom(ROOM, tmp_path_factory.mktemp("room"), [f"attendee-{i}" for i in range(1, ROOM_SIZE + 1)],
                        env, {})
    started = time.monotonic()
    done = room.command("up", "--attendees", str(ROOM_SIZE), "--hours", "4", "--json")
    assert done.returncode == 0, f"room up failed:\n{done.stdout}\n{done.stderr}"
    room.up_report = json.loads(done.stdout)
    record("room_up_s", {str(ROOM_SIZE): round(time.monotonic() - started, 1)})
    yield room
    room.command("down")  # idempotent: the room test's own `down` has usually emptied it already


@pytest.fixture
def cluster_without_operator(_real_cluster_base: RealCluster) -> RealCluster:
    """The cluster before the training operator is installed (these tests run first)."""
    if _real_cluster_base.supports_tfjob():
        if _real_cluster_base.started_here:
            pytest.fail("the cluster was started with OPERATOR=0 but already serves TFJobs: "
                        "did a test that installs the operator run first? (see order_last)")
        pytest.skip("reusing a running cluster that already has the training operator; deleting the "
                    "TFJob CRD would delete every TFJob on it (other users' too). Run this test on a "
                    "cluster the session starts itself (stop yours with infra/k8s/cluster.sh down).")
    return _real_cluster_base
