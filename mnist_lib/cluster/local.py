"""The local backend: run Kubernetes objects as processes on this machine.

No cluster needed. Each pod of a Job, TFJob or Deployment becomes one process,
started the way Kubernetes and the Kubeflow training operator (v1) would start it:

- **TFJob**: one process per replica. Each gets ``TF_CONFIG`` exactly as the
  operator builds it (:func:`mnist_lib.tf_config.build_tf_config`), with
  ``localhost:<port>`` where the operator writes ``<job>-worker-0.<ns>.svc:2222``;
  the ports are picked when the job is submitted and kept across restarts, like
  a pod's DNS name. ``restartPolicy`` (Never, OnFailure, Always, ExitCode) and
  ``runPolicy.backoffLimit`` are honoured; the job succeeds when the chief
  succeeds or, with no chief, when worker 0 does (all workers with
  ``successPolicy: AllWorkers``), the operator's rule. Then, as ``cleanPodPolicy``
  says (default Running), the replicas still running (parameter servers) are stopped.
  A deleted pod (:meth:`LocalBackend.delete_pod`) fails the TFJob at once, as operator
  v1.9.4 does (kubeflow/trainer#1560). One difference, on purpose: the operator does not
  count pods recreated under ExitCode towards ``backoffLimit`` (it counts container
  restarts, and such pods have none); this backend does, so a replica that always
  fails stops here instead of looping.
- **Job** (batch/v1): one process, or one per index for an Indexed Job, with
  ``JOB_COMPLETION_INDEX`` set and ``MNIST_WORKER_HOSTS`` rewritten to the local
  ports (this backend plays cluster DNS). The Job controller's decisions: a failed
  pod is tried against ``podFailurePolicy`` (Ignore, FailJob, FailIndex, else Count),
  and counted failures against ``backoffLimitPerIndex`` (``maxFailedIndexes``) or
  ``backoffLimit`` (default 6); a deleted pod gets SIGTERM and its exit is judged the same way.
- **Deployment**: long-lived processes, restarted if they exit; a **Service**
  selecting them is reached with :meth:`LocalBackend.port_forward`.
- Namespaces and PersistentVolumeClaims are recorded; there is nothing to run.
- **ConfigMap**: each key is written as a file under the state folder
  (``configmaps/<namespace>/<name>/<key>``), and a pod's ``configMap`` volume maps
  its mountPath there, as kubelet projects it (re-applying rewrites the files; a
  whole-folder mount sees the change, as on a cluster). Paths under ``/outputs`` in
  the text become this machine's output folder, as in a command's arguments, so a
  TF Serving model config's ``base_path: "/outputs/serving/mnist"`` finds the local folder.

Containers run this checkout's code instead of an image: ``python`` becomes this
kernel's interpreter, ``tensorboard`` becomes ``python -m tensorboard.main`` and
``tensorflow_model_server`` the course's own server, ``python -m mnist_lib.serve``
(same flags, same protocol).
The shared claim mounted at ``/outputs`` maps to :func:`mnist_lib.paths.output_dir`,
and every argument or environment value under a mount path is rewritten to match.

Nothing outlives its job: each pod is a process group, stopped when the job ends
(cleanPodPolicy), is deleted, or this Python process exits (an ``atexit`` hook,
plus the kernel's death signal for a killed kernel). Each process is recorded
in a state folder, so the next kernel stops anything a dead one left behind.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import psutil

from mnist_lib import paths
from mnist_lib.cluster import volume_agent
from mnist_lib.cluster.base import (Backend, PortForward, as_list, canonical_replica, in_namespace, main_replica,
                                    replica_specs)
from mnist_lib.cluster.types import (FINISHED, ConflictError, InvalidObjectError, JobPhase, JobStatus,
                                     NotFoundError, Objects, ReplicaStatus)
from mnist_lib.constants import DEFAULT_NAMESPACE, FIRST_RETRYABLE_EXIT_CODE, OUTPUT_MOUNT
from mnist_lib.tf_config import WORKER_HOSTS_ENV, build_tf_config
from mnist_lib.waiting import wait_until

STATE_ENV = "MNIST_LOCAL_STATE_DIR"
# What our image runs when a container gives no command (its ENTRYPOINT).
DEFAULT_ENTRYPOINT = ["python", "-m", "mnist_lib.train"]
STOP_GRACE_SECONDS = 5.0  # SIGTERM, then SIGKILL, like a pod's terminationGracePeriod
POLL_SECONDS = 0.2
JOB_BACKOFF_LIMIT = 6  # batch/v1 Job default


# == processes ===================================================================

def _die_with_parent_setup() -> Any:
    """In the child, before exec: ask Linux to SIGTERM it when the kernel that started it dies."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved in the parent, called in the child
    except (OSError, AttributeError):  # not Linux: the atexit hook and the state folder still apply
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


_PREEXEC = _die_with_parent_setup()


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _exit_code(returncode: int) -> int:
    """A container's exit code: a process killed by signal N reports 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def stop_process_groups(pids: list[int], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the process groups led by ``pids``, SIGKILL what is left after ``grace`` seconds.

    All at once, so stopping four replicas takes one grace period, not four.
    Returns once the groups are gone, so the caller can rely on their ports being free.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        with contextlib.suppress(TimeoutError):  # still there: on to SIGKILL
            wait_until(lambda: not any(_group_alive(pid) for pid in pids), wait, interval=0.05)
            return


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def pod_failure_action(rules: Iterable[Mapping[str, Any]], container: str, code: int) -> tuple[int, str]:
    """(index of the first matching rule, its action) for a pod whose container exited with ``code``;
    ``(-1, "Count")`` when none matches. The Job controller's rule matching; no pod here has a
    DisruptionTarget condition (nothing evicts a process), so ``onPodConditions`` never matches."""
    for i, rule in enumerate(rules):
        codes = rule.get("onExitCodes")
        if not codes or codes.get("containerName") not in (None, container):
            continue
        values = [int(v) for v in codes.get("values") or []]
        if (code in values) == (codes.get("operator") == "In"):
            return i, str(rule["action"])
    return -1, "Count"


def _group_alive(pgid: int) -> bool:
    """Does any process (zombies aside) still belong to process group ``pgid``?"""
    for p in psutil.process_iter(["status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and _pgid(p.pid) == pgid:
            return True
    return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


class _StateFolder:
    """One JSON file per running process: who started it, so a later kernel can clean up."""

    def __init__(self, root: Path):
        self.pids = root / "pids"
        self.pids.mkdir(parents=True, exist_ok=True)
        me = psutil.Process()
        self.owner = {"owner_pid": me.pid, "owner_started": me.create_time()}

    def record(self, proc: subprocess.Popen, what: str) -> None:
        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            return
        entry = {"pid": proc.pid, "started": started, "what": what, **self.owner}
        (self.pids / f"{proc.pid}.json").write_text(json.dumps(entry))

    def forget(self, pid: int) -> None:
        (self.pids / f"{pid}.json").unlink(missing_ok=True)

    def clean_leftovers(self) -> list[str]:
        """Stop processes recorded by kernels that are no longer alive; return what was stopped."""
        stopped = []
        for path in self.pids.glob("*.json"):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
                continue
            if _alive(entry["owner_pid"], entry["owner_started"]):
                continue  # another live kernel (or this one) owns it
            if _alive(entry["pid"], entry["started"]):
                stop_process_groups([entry["pid"]], grace=2.0)
                stopped.append(entry["what"])
            path.unlink(missing_ok=True)
        return stopped


def _alive(pid: int, started: float) -> bool:
    """Is this exact process (not a later one that reused the pid) still running?"""
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - started) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# == turning a pod template into a command line ===================================

def _container(template: Mapping[str, Any], default_name: str | None = None) -> dict[str, Any]:
    containers = ((template.get("spec") or {}).get("containers")) or []
    if not containers:
        raise InvalidObjectError("a pod template needs spec.containers (one container)")
    for c in containers:
        if default_name and c.get("name") == default_name:
            return c
    return containers[0]


def _mounts(template: Mapping[str, Any], container: Mapping[str, Any], scratch: Path,
            config_map: Callable[[Mapping[str, Any]], Path] | None = None) -> dict[str, Path]:
    """Mount path -> local folder. Claims map to the output folder, emptyDirs to a scratch folder,
    ConfigMaps to the folder ``config_map(volume["configMap"])`` wrote their keys into."""
    volumes = {v.get("name"): v for v in (template.get("spec") or {}).get("volumes") or []}
    mounts: dict[str, Path] = {OUTPUT_MOUNT: paths.output_dir()}
    for m in container.get("volumeMounts") or []:
        volume = volumes.get(m.get("name"), {})
        if "persistentVolumeClaim" in volume:
            local = paths.output_dir()
        elif "configMap" in volume and config_map is not None:
            local = config_map(volume["configMap"])
        elif "hostPath" in volume:
            local = Path(volume["hostPath"]["path"])
        else:  # emptyDir and friends: a fresh folder per job
            local = scratch / m["name"]
        local = local / m["subPath"] if m.get("subPath") else local
        mounts[m["mountPath"].rstrip("/")] = local
    return mounts


def rewrite_path(value: str, mounts: Mapping[str, Path]) -> str:
    """``/outputs/run/checkpoints`` -> ``<output_dir>/run/checkpoints``; also inside ``--flag=/outputs/x``."""
    prefix, sep, rest = value.partition("=") if value.startswith("--") else ("", "", value)
    for mount, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if rest == mount or rest.startswith(mount + "/"):
            return f"{prefix}{sep}{local}{rest[len(mount):]}"
    return value


def rewrite_text(text: str, mounts: Mapping[str, Path]) -> str:
    """Every path under a mount path inside a text (a config file), as :func:`rewrite_path` for one value.

    ``base_path: "/outputs/serving/mnist"`` -> ``base_path: "<output_dir>/serving/mnist"``;
    ``/outputsx`` and ``/data/outputs`` stay as they are.
    """
    if not mounts:
        return text
    alternatives = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./~-])({alternatives})(?=/|[\s\"'`,;:=)\]}}]|$)", re.MULTILINE)
    return pattern.sub(lambda match: str(mounts[match.group(1)]), text)


def _command(container: Mapping[str, Any]) -> list[str]:
    """The container's command + args as a local command line (our image's programs only)."""
    argv = [str(a) for a in (container.get("command") or DEFAULT_ENTRYPOINT)]
    argv += [str(a) for a in container.get("args") or []]
    program = os.path.basename(argv[0])
    if re.fullmatch(r"python(3(\.\d+)?)?", program):
        return [sys.executable] + argv[1:]
    if program == "tensorboard":
        return [sys.executable, "-m", "tensorboard.main"] + argv[1:]
    if program == "mnist-train":
        return [sys.executable, "-m", "mnist_lib.train"] + argv[1:]
    if program == "tensorflow_model_server":  # not on PyPI: the course's server speaks its protocol
        return [sys.executable, "-m", "mnist_lib.serve"] + argv[1:]
    raise InvalidObjectError(
        f"the local backend runs the course image's programs (python -m ..., tensorboard), "
        f"not {argv[0]!r} from image {container.get('image')!r}; run this manifest on a cluster "
        "(MNIST_BACKEND=kubernetes)")


def _container_ports(container: Mapping[str, Any]) -> list[int]:
    return [int(p["containerPort"]) for p in container.get("ports") or [] if "containerPort" in p]


def _loopback_only(argv: list[str]) -> list[str]:
    """``--host 0.0.0.0`` is right in a pod (its own network); on a laptop it would open
    the learner's TensorBoard and model server to the whole network. Here a pod's
    address is the loopback."""
    return [a.replace("=0.0.0.0", "=127.0.0.1") if a.startswith("--") else
            ("127.0.0.1" if a == "0.0.0.0" else a) for a in argv]


def _rewrite_ports(argv: list[str], ports: Mapping[int, int]) -> list[str]:
    """Make ``--port 6006`` / ``--port=6006`` use the free local port chosen for container port 6006."""
    out = list(argv)
    for i, arg in enumerate(out):
        prev = out[i - 1] if i else ""
        if arg.isdigit() and int(arg) in ports and "port" in prev:
            out[i] = str(ports[int(arg)])
        elif arg.startswith("--") and "port" in arg.partition("=")[0] and arg.partition("=")[2].isdigit():
            flag, _, number = arg.partition("=")
            if int(number) in ports:
                out[i] = f"{flag}={ports[int(number)]}"
    return out


# == what the backend keeps for each pod and workload =============================

@dataclass
class _Replica:
    """One pod: a process, restarted in place according to its restart policy."""

    rtype: str  # "Chief", "PS", "Worker" (TFJob) or "Pod" (Job, Deployment)
    index: int
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    restart_policy: str
    container: str = ""
    ports: dict[int, int] = field(default_factory=dict)  # container port -> local port
    proc: subprocess.Popen | None = None
    state: str = "Pending"  # Running, Succeeded, Failed, Stopped
    restarts: int = 0
    failures: int = 0
    counted_failures: int = 0  # the failures a Job's backoff limit counts (not those its policy ignores)
    exit_code: int | None = None

    @property
    def label(self) -> str:
        return f"{self.rtype.lower()}-{self.index}"

    def wants_restart(self, code: int) -> bool:
        """Kubelet's and the operator's rule for restarting this pod after it exited with ``code``."""
        policy = self.restart_policy
        if policy == "Always":
            return True
        if code == 0:
            return False
        if policy == "OnFailure":
            return True
        if policy == "ExitCode":
            return code >= FIRST_RETRYABLE_EXIT_CODE
        return False  # Never


@dataclass
class _Workload:
    kind: str  # Job, TFJob, Deployment
    name: str
    namespace: str
    manifest: dict[str, Any]
    replicas: list[_Replica]
    backoff_limit: int | None = None
    backoff_limit_per_index: int | None = None  # Indexed Jobs
    max_failed_indexes: int | None = None
    pod_failure_rules: list[dict[str, Any]] = field(default_factory=list)
    success_policy: str = ""
    clean_pod_policy: str = "Running"
    companions: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) submitted with it
    addresses: dict[tuple[str, int], str] = field(default_factory=dict)  # TFJob (role, index) -> host:port
    conditions: list[dict[str, str]] = field(default_factory=list)
    message: str = ""

    @property
    def phase(self) -> JobPhase:
        return JobPhase(self.conditions[-1]["type"]) if self.conditions else JobPhase.CREATED

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    def condition(self, phase: JobPhase, reason: str, message: str) -> None:
        if self.phase != phase:
            self.conditions.append({"type": phase, "status": "True", "reason": reason, "message": message})
            self.message = message


# == the backend ==================================================================

class LocalBackend(Backend):
    """Runs Jobs, TFJobs and Deployments as processes here. Get it with ``get_backend("local")``."""

    name = "local"

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, state_dir: str | Path | None = None):
        self.namespace = namespace
        self.state_dir = Path(state_dir or os.environ.get(STATE_ENV) or paths.output_dir() / ".local-cluster")
        self._state = _StateFolder(self.state_dir)
        self.cleaned_up = self._state.clean_leftovers()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, namespace, name)
        self._workloads: dict[tuple[str, str, str], _Workload] = {}
        self._lock = threading.RLock()
        self._closed = False
        atexit.register(self.shutdown)
        # The "operator": a thread that notices exits, restarts pods and updates status.
        self._supervisor = threading.Thread(target=self._supervise, name="local-cluster", daemon=True)
        self._supervisor.start()

    def describe(self) -> str:
        return f"local processes, outputs in {paths.output_dir()}, logs in {self.state_dir / 'logs'}"

    # -- submit ---------------------------------------------------------------
    def apply(self, objects: Objects) -> list[str]:
        """Record each object and start the processes of Jobs, TFJobs and Deployments."""
        items = [in_namespace(obj, self.namespace) for obj in as_list(objects)]
        with self._lock:
            for obj in items:  # check everything before starting anything
                key = self._key(obj)
                if key in self._workloads:
                    raise ConflictError(
                        f"{key[0]} {key[2]} already exists (it is {self._workloads[key].phase}); "
                        f"delete it first with delete_job({key[2]!r}), or choose another name")
            for obj in items:  # first the ConfigMaps: the pods planned next mount them
                if obj["kind"] == "ConfigMap":
                    self._write_config_map(obj)
                    self._objects[self._key(obj)] = obj
            workloads = [self._workload(obj) for obj in items if obj["kind"] in ("Job", "TFJob", "Deployment")]
            for obj in items:
                self._objects[self._key(obj)] = obj
                if obj["kind"] == "PersistentVolumeClaim":
                    paths.output_dir().mkdir(parents=True, exist_ok=True)
            companions = [(o["kind"], o["metadata"]["name"]) for o in items if o["kind"] == "Service"]
            for w in workloads:
                w.companions = companions if w.kind != "Deployment" else []
                self._workloads[(w.kind, w.namespace, w.name)] = w
                for replica in w.replicas:
                    self._start(w, replica)
        return [f"{o['kind']}/{o['metadata']['name']}" for o in items]

    def _key(self, obj: Mapping[str, Any]) -> tuple[str, str, str]:
        namespace = "" if obj["kind"] == "Namespace" else (obj["metadata"].get("namespace") or self.namespace)
        return obj["kind"], namespace, obj["metadata"]["name"]

    def _workload(self, obj: Mapping[str, Any]) -> _Workload:
        """Plan the processes of one Job, TFJob or Deployment (nothing started yet)."""
        kind, namespace, name = self._key(obj)
        logs = self.state_dir / "logs" / namespace / name
        shutil.rmtree(logs, ignore_errors=True)  # a new job of an old name starts with fresh logs
        logs.mkdir(parents=True, exist_ok=True)
        spec = obj.get("spec") or {}
        if kind == "TFJob":
            return self._tfjob(obj, namespace, name, logs)
        template = spec.get("template") or {}
        if kind == "Job":
            count = int(spec.get("completions") or 1)
            indexed = spec.get("completionMode") == "Indexed"
            # The Job controller retries a failed pod whatever the pod's restartPolicy (Never: in a
            # new pod, OnFailure: in the same one), as _job_controller decides.
            policy = (template.get("spec") or {}).get("restartPolicy") or "Never"
            hosts = [free_port() for _ in range(count)]
            replicas = [self._replica("Pod", i, template, logs, policy,
                                      extra_env={"JOB_COMPLETION_INDEX": str(i)} if indexed else {},
                                      worker_ports=hosts if indexed else None)
                        for i in range(count)]
            limit, per_index = spec.get("backoffLimit"), spec.get("backoffLimitPerIndex")
            if limit is None:  # Kubernetes' defaults: 6, or no overall limit with a limit per index
                limit = JOB_BACKOFF_LIMIT if per_index is None else None
            max_failed = spec.get("maxFailedIndexes")
            return _Workload(kind, name, namespace, dict(obj), replicas,
                             backoff_limit=None if limit is None else int(limit),
                             backoff_limit_per_index=None if per_index is None else int(per_index),
                             max_failed_indexes=None if max_failed is None else int(max_failed),
                             pod_failure_rules=list((spec.get("podFailurePolicy") or {}).get("rules") or []))
        # Deployment
        replicas = [self._replica("Pod", i, template, logs, "Always") for i in range(int(spec.get("replicas", 1)))]
        return _Workload(kind, name, namespace, dict(obj), replicas)

    def _tfjob(self, obj: Mapping[str, Any], namespace: str, name: str, logs: Path) -> _Workload:
        """One replica per TFJob pod, each with the TF_CONFIG the training operator would give it."""
        specs = replica_specs(obj)
        counts = {rtype: int(s.get("replicas", 1)) for rtype, s in specs.items()}
        ports = {(rtype.lower(), i): free_port() for rtype, n in counts.items() for i in range(n)}
        address = lambda role, i: f"localhost:{ports[(role, i)]}"  # noqa: E731 (the operator's DNS name)
        replicas = []
        for rtype, rspec in specs.items():
            for i in range(counts[rtype]):
                tf_config = build_tf_config(counts, rtype, i, address)
                replicas.append(self._replica(
                    rtype, i, rspec.get("template") or {}, logs, rspec.get("restartPolicy", "Never"),
                    extra_env={"TF_CONFIG": tf_config} if tf_config else {}, container_name="tensorflow"))
        spec = obj.get("spec") or {}
        run_policy = spec.get("runPolicy") or {}
        limit = run_policy.get("backoffLimit")
        return _Workload("TFJob", name, namespace, dict(obj), replicas,
                         backoff_limit=None if limit is None else int(limit),
                         success_policy=spec.get("successPolicy") or "",
                         clean_pod_policy=run_policy.get("cleanPodPolicy") or "Running",
                         addresses={key: address(*key) for key in ports})

    def _replica(self, rtype: str, index: int, template: Mapping[str, Any], logs: Path, policy: str,
                 extra_env: Mapping[str, str] = (), container_name: str | None = None,
                 worker_ports: list[int] | None = None) -> _Replica:
        """The command line and environment of one pod's main container."""
        container = _container(template, container_name)
        mounts = _mounts(template, container, self.state_dir / "volumes" / logs.name,
                         lambda source: self._mounted_config_map(self.namespace, source))
        for local in mounts.values():
            if not local.exists():  # (a ConfigMap key mounted with subPath is a file)
                local.mkdir(parents=True, exist_ok=True)
        ports = {p: free_port() for p in _container_ports(container)}
        argv = _loopback_only(_rewrite_ports([rewrite_path(a, mounts) for a in _command(container)], ports))
        env = {k: v for k, v in os.environ.items()
               if k not in ("TF_CONFIG", "JOB_COMPLETION_INDEX", WORKER_HOSTS_ENV)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.COURSE_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"  # logs appear as they are written, as with kubectl logs -f
        for var in container.get("env") or []:
            if "value" not in var:
                continue  # valueFrom (secrets, the downward API) has no local equivalent
            value = rewrite_path(str(var["value"]), mounts)
            if var["name"] == "MNIST_DATA_DIR" and not Path(value).is_dir():
                continue  # the image's data folder: use this machine's (paths.data_dir())
            env[var["name"]] = value
        if worker_ports is not None and env.get(WORKER_HOSTS_ENV):
            # Cluster DNS: pod i of the Indexed Job answers on localhost:<port i>.
            env[WORKER_HOSTS_ENV] = ",".join(f"localhost:{p}" for p in worker_ports)
        env.update(extra_env)
        return _Replica(rtype, index, argv, env, logs / f"{rtype.lower()}-{index}.log", policy,
                        container.get("name") or "", ports)

    # -- the processes ------------------------------------------------------------
    def _start(self, w: _Workload, r: _Replica) -> None:
        with open(r.log_path, "ab") as log:
            if r.restarts:
                log.write(f"--- restarted ({r.restarts}) after exit code {r.exit_code} ---\n".encode())
                log.flush()
            r.proc = subprocess.Popen(r.argv, env=r.env, cwd=paths.COURSE_ROOT, stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=_PREEXEC)
        self._state.record(r.proc, f"{w.kind} {w.name} {r.label}")
        r.state = "Running"

    def _reap(self, r: _Replica) -> int | None:
        """The exit code if the process just ended (its process group is then stopped too)."""
        if r.proc is None or r.state != "Running":
            return None
        returncode = r.proc.poll()
        if returncode is None:
            return None
        stop_process_groups([r.proc.pid], grace=0.5)  # anything it started
        self._state.forget(r.proc.pid)
        r.exit_code = _exit_code(returncode)
        return r.exit_code

    def _stop(self, replicas: list[_Replica]) -> None:
        """Stop the running processes among ``replicas`` (SIGTERM, then SIGKILL), all at once."""
        running = [r for r in replicas if r.proc is not None and r.state == "Running"]
        stop_process_groups([r.proc.pid for r in running])
        for r in running:
            r.proc.wait()
            self._state.forget(r.proc.pid)
            r.exit_code = _exit_code(r.proc.returncode)
            r.state = "Stopped"

    # -- the operator's loop ------------------------------------------------------
    def _supervise(self) -> None:
        while not self._closed:
            with self._lock:
                for w in list(self._workloads.values()):
                    if not w.finished:
                        try:
                            self._reconcile(w)
                        except Exception as err:  # keep supervising the other jobs
                            w.condition(JobPhase.FAILED, "LocalBackendError", f"local backend error: {err}")
            time.sleep(POLL_SECONDS)

    def _reconcile(self, w: _Workload) -> None:
        """Look at every process of ``w`` once: restart, mark succeeded/failed, set conditions."""
        for r in w.replicas:
            code = self._reap(r)
            if code is None:
                continue
            if code != 0:
                r.failures += 1
            if w.kind == "Job":
                self._job_controller(w, r, code)
                continue
            if not r.wants_restart(code):
                r.state = "Succeeded" if code == 0 else "Failed"
                continue
            total_restarts = sum(x.restarts for x in w.replicas)
            if w.backoff_limit is not None and total_restarts >= w.backoff_limit:
                r.state = "Failed"
                w.condition(JobPhase.FAILED, "BackoffLimitExceeded",
                            f"{w.kind} {w.name} has failed because it has reached the specified "
                            f"backoff limit ({w.backoff_limit} restarts)")
                continue
            r.restarts += 1
            w.condition(JobPhase.RESTARTING, f"{w.kind}Restarting",
                        f"{w.kind} {w.name} is restarting because {r.rtype} {r.index} exited with code {code}.")
            self._start(w, r)
        if not w.finished:
            self._update_phase(w)
        if w.finished:
            self._clean_pods(w)

    def _job_controller(self, w: _Workload, r: _Replica, code: int) -> None:
        """The Job controller's decision when pod ``r`` of Job ``w`` exited with ``code``."""
        if code == 0:
            r.state = "Succeeded"
            return
        rule, action = pod_failure_action(w.pod_failure_rules, r.container, code)
        pod = f"{w.namespace}/{w.name}-{r.index}"
        if action == "FailJob":
            r.state = "Failed"
            w.condition(JobPhase.FAILED, "PodFailurePolicy",
                        f"Container {r.container} for pod {pod} failed with exit code {code} matching "
                        f"FailJob rule at index {rule}")
            return
        if action != "Ignore":
            r.counted_failures += 1
        if w.backoff_limit_per_index is not None:
            if action == "FailIndex" or r.counted_failures > w.backoff_limit_per_index:
                r.state = "Failed"
                failed = sum(x.state == "Failed" for x in w.replicas)
                if w.max_failed_indexes is None or failed > w.max_failed_indexes:
                    w.condition(JobPhase.FAILED, "FailedIndexes", "Job has failed indexes")
                return
        elif w.backoff_limit is not None and sum(x.counted_failures for x in w.replicas) > w.backoff_limit:
            r.state = "Failed"
            w.condition(JobPhase.FAILED, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
            return
        r.restarts += 1  # (a Job has no Restarting condition: its status counts the failed pods)
        self._start(w, r)

    def _update_phase(self, w: _Workload) -> None:
        by_type: dict[str, list[_Replica]] = {}
        for r in w.replicas:
            by_type.setdefault(r.rtype, []).append(r)
        failed = [r for r in w.replicas if r.state == "Failed"]
        if failed and w.kind != "Job":  # (a Job's failures: _job_controller decides)
            r = failed[0]
            w.condition(JobPhase.FAILED, f"{w.kind}Failed",
                        f"{w.kind} {w.name} has failed because {len(failed)} replica(s) failed "
                        f"({r.label} exited with code {r.exit_code}).")
            return
        if w.kind == "TFJob":
            main = by_type.get("Chief") or by_type.get("Master")
            if main:
                done = all(r.state == "Succeeded" for r in main)
            else:
                workers = by_type.get("Worker", [])
                done = bool(workers) and (
                    all(r.state == "Succeeded" for r in workers)
                    or (w.success_policy != "AllWorkers" and workers[0].state == "Succeeded"))
        elif w.kind == "Job":
            done = all(r.state == "Succeeded" for r in w.replicas)
        else:
            done = False  # a Deployment runs until it is deleted
        if done:
            w.condition(JobPhase.SUCCEEDED, f"{w.kind}Succeeded", f"{w.kind} {w.name} successfully completed.")
        elif any(r.state == "Running" for r in w.replicas):
            w.condition(JobPhase.RUNNING, f"{w.kind}Running", f"{w.kind} {w.name} is running.")

    def _clean_pods(self, w: _Workload) -> None:
        """After the job ends: stop what still runs (e.g. parameter servers), unless cleanPodPolicy None."""
        if w.kind == "TFJob" and w.clean_pod_policy == "None":
            return  # kept, as on a cluster, until delete_job() or the end of this Python process
        self._stop(w.replicas)

    # -- status and logs --------------------------------------------------------
    def _find(self, name: str, kind: str | None = None, namespace: str | None = None) -> _Workload:
        namespace = namespace or self.namespace
        kinds = [kind] if kind else ["TFJob", "Job", "Deployment"]
        with self._lock:
            for k in kinds:
                if (k, namespace, name) in self._workloads:
                    return self._workloads[(k, namespace, name)]
            known = sorted(n for (_, ns, n) in self._workloads if ns == namespace)
        raise NotFoundError(f"no {kind or 'job'} named {name!r} in namespace {namespace!r} "
                            f"(this kernel knows {known or 'none'}); submit it with create_job()")

    def get_job(self, name: str, kind: str | None = None) -> JobStatus:
        with self._lock:
            w = self._find(name, kind)
            if not w.finished:
                self._reconcile(w)
            replicas: dict[str, ReplicaStatus] = {}
            for r in w.replicas:
                counts = replicas.setdefault(r.rtype, ReplicaStatus())
                counts.active += r.state == "Running"
                counts.succeeded += r.state == "Succeeded"
                # A Job's pod with restartPolicy Never is retried in a new pod, and the failed one stays,
                # counted in status.failed; other pods restart their container (restartCount).
                new_pods = w.kind == "Job" and r.restart_policy == "Never"
                counts.failed += r.failures if new_pods else r.state == "Failed"
                counts.restarts += 0 if new_pods else r.restarts
            return JobStatus(w.name, w.kind, w.namespace, w.phase, replicas,
                             [dict(c) for c in w.conditions], w.message)

    def _replica_of(self, w: _Workload, replica: str | None, index: int) -> _Replica:
        types = {r.rtype for r in w.replicas}
        rtype = "Pod" if w.kind != "TFJob" else (canonical_replica(replica, types) or main_replica(w.kind, types))
        for r in w.replicas:
            if r.rtype == rtype and r.index == index:
                return r
        raise NotFoundError(f"{w.kind} {w.name} has no {rtype.lower()} {index}")

    def _failed_index(self, status: JobStatus, replica: str) -> int:
        """The first replica of this type that failed by itself (those the cleanup stopped are Stopped)."""
        w = self._find(status.name, status.kind)
        rtype = "Pod" if w.kind != "TFJob" else replica
        return next((r.index for r in w.replicas if r.rtype == rtype and r.state == "Failed"), 0)

    def get_job_logs(self, name: str, replica: str | None = None, index: int = 0,
                     tail: int | None = None, kind: str | None = None) -> str:
        r = self._replica_of(self._find(name, kind), replica, index)
        text = r.log_path.read_text(errors="replace") if r.log_path.exists() else ""
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:])
        return text

    def stream_job_logs(self, name: str, replica: str | None = None, index: int = 0,
                        kind: str | None = None) -> Iterator[str]:
        w = self._find(name, kind)
        r = self._replica_of(w, replica, index)
        with open(r.log_path, errors="replace") as log:
            while True:
                line = log.readline()
                if line:
                    yield line.rstrip("\n")
                elif r.state != "Running" or w.finished:
                    yield from (rest.rstrip("\n") for rest in log.readlines())
                    return
                else:
                    time.sleep(0.2)

    def replica_env(self, name: str, replica: str | None = None, index: int = 0,
                    kind: str | None = None) -> dict[str, str]:
        """The environment a replica was given (what ``kubectl exec ... env`` shows on a cluster)."""
        r = self._replica_of(self._find(name, kind), replica, index)
        return {k: v for k, v in r.env.items() if k in ("TF_CONFIG", "JOB_COMPLETION_INDEX", WORKER_HOSTS_ENV)
                or k.startswith("MNIST_")}

    def tfjob_address(self, name: str) -> Callable[[str, int], str]:
        """Where each replica of TFJob ``name`` listens here: ``localhost:<the port picked for it>``."""
        addresses = self._find(name, "TFJob").addresses

        def address(role: str, index: int) -> str:
            if (role.lower(), index) not in addresses:
                raise NotFoundError(f"TFJob {name} has no {role.lower()} {index}")
            return addresses[(role.lower(), index)]

        return address

    def check_pods(self, status: JobStatus) -> None:
        return None  # no images to pull here: the code is this checkout

    def supports_tfjob(self) -> bool:
        return True  # this backend plays the training operator's part

    # -- the shared volume: /outputs is paths.output_dir() ------------------------
    def pull(self, *volume_paths: str, missing_ok: bool = False) -> list[Path]:
        """Nothing to bring: ``/outputs/x`` is ``output_dir()/x``."""
        local = [paths.on_this_machine(p) for p in volume_paths]
        missing = [str(p) for p, here in zip(volume_paths, local) if not here.exists()]
        if missing and not missing_ok:
            raise NotFoundError(f"{', '.join(missing)} does not exist (locally {paths.output_dir()})")
        return [here for here in local if here.exists()]

    def put(self, local_folder: Path | str, dest: str, version: bool = False) -> str:
        target = paths.on_this_machine(dest)
        if Path(local_folder).resolve() == target.resolve():
            return dest  # already there: the output folder is the volume
        placed = volume_agent.copy_folder(str(local_folder), str(target), version=version)
        return paths.on_volume(placed)

    def copy_version(self, source: str, dest: str) -> str:
        placed = volume_agent.copy_folder(str(paths.on_this_machine(source)), str(paths.on_this_machine(dest)),
                                          version=True)
        return paths.on_volume(placed)

    def remove_outputs(self, volume_paths: Iterable[str]) -> None:
        volume_agent.remove([str(paths.on_this_machine(p)) for p in volume_paths])

    # -- delete -----------------------------------------------------------------
    def delete_pod(self, name: str, replica: str | None = None, index: int = 0, kind: str | None = None) -> str:
        """Delete one running pod of a job, as ``kubectl delete pod`` does: its process gets SIGTERM.

        A TFJob then fails at once (operator v1.9.4); a Job judges the pod's exit like any other
        failure (its ``podFailurePolicy``), and gives the index a new pod.
        """
        with self._lock:
            w = self._find(name, kind)
            r = self._replica_of(w, replica, index)
            pod = f"{w.name}-{r.label}" if w.kind == "TFJob" else f"{w.name}-{r.index}"
            if r.state != "Running" or w.finished:
                raise NotFoundError(f"{w.kind} {w.name} has no running pod for {r.label} (it is {r.state})")
            if w.kind == "TFJob":
                self._stop([r])
                r.state = "Failed"
                w.condition(JobPhase.FAILED, "TFJobFailed",  # the operator's words
                            f"TFJob {w.namespace}/{w.name} has failed because 1 {r.rtype} replica(s) failed.")
                self._clean_pods(w)
            else:
                proc = r.proc
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                # The kubelet's grace period, then SIGKILL (if it is still the same process).
                kill = threading.Timer(STOP_GRACE_SECONDS, lambda: proc.poll() is None and _kill_group(proc.pid))
                kill.daemon = True
                kill.start()
        return pod

    def delete_job(self, name: str, kind: str | None = None) -> None:
        """Stop every process of the job and forget it (and the Service submitted with it). Idempotent."""
        try:
            w = self._find(name, kind)
        except NotFoundError:
            return
        self._delete_workload(w)

    def _delete_workload(self, w: _Workload) -> None:
        with self._lock:
            self._stop(w.replicas)
            self._workloads.pop((w.kind, w.namespace, w.name), None)
            self._objects.pop((w.kind, w.namespace, w.name), None)
            for kind, name in w.companions:
                self._objects.pop((kind, w.namespace, name), None)

    def delete(self, objects: Objects) -> None:
        for obj in as_list(objects):
            key = self._key(obj)
            with self._lock:
                if key in self._workloads:
                    self._delete_workload(self._workloads[key])
                self._objects.pop(key, None)
                if key[0] == "ConfigMap":
                    shutil.rmtree(self._config_map_dir(key[1], key[2]), ignore_errors=True)

    # -- ConfigMaps: files under the state folder, mounted into pods --------------
    def _config_map_dir(self, namespace: str, name: str) -> Path:
        return self.state_dir / "configmaps" / namespace / name

    def _write_config_map(self, obj: Mapping[str, Any]) -> None:
        """Write each key of the ConfigMap as a file, as kubelet does for a configMap volume.

        Each file is replaced atomically (a server re-reading it never sees half of it),
        and keys no longer in the ConfigMap are removed.
        """
        _, namespace, name = self._key(obj)
        files: dict[str, bytes] = {}
        mounts = {OUTPUT_MOUNT: paths.output_dir()}
        for key, value in (obj.get("data") or {}).items():
            files[key] = rewrite_text(str(value), mounts).encode()
        for key, value in (obj.get("binaryData") or {}).items():
            files[key] = base64.b64decode(value)
        for key in files:
            if not re.fullmatch(r"[-._a-zA-Z0-9]+", key) or key in (".", ".."):
                raise InvalidObjectError(f"ConfigMap {name}: key {key!r} is not valid: use letters, digits, "
                                         "'-', '_' and '.' (it becomes a file name)")
        folder = self._config_map_dir(namespace, name)
        folder.mkdir(parents=True, exist_ok=True)
        for key, content in files.items():
            staging = folder / f"..{key}.tmp"
            staging.write_bytes(content)
            os.replace(staging, folder / key)
        for old in folder.iterdir():
            if old.name not in files and not old.name.startswith(".."):
                old.unlink()

    def _mounted_config_map(self, namespace: str, source: Mapping[str, Any]) -> Path:
        """The folder a pod's ``configMap`` volume maps to; the ConfigMap must have been applied."""
        name = source.get("name", "")
        if source.get("items"):
            raise InvalidObjectError(f"configMap volume {name}: 'items' (a subset of keys) is not supported "
                                     "by the local backend: mount the whole ConfigMap, or one key with subPath")
        folder = self._config_map_dir(namespace, name)
        if ("ConfigMap", namespace, name) not in self._objects:
            if not source.get("optional"):
                raise NotFoundError(f'configmap "{name}" not found in namespace {namespace!r}: a pod mounts it, '
                                    "so apply the ConfigMap first (in the same list, before the Deployment)")
            shutil.rmtree(folder, ignore_errors=True)  # optional and missing: an empty folder
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def shutdown(self) -> None:
        """Stop every process this backend started (runs at exit)."""
        with self._lock:
            self._stop([r for w in self._workloads.values() for r in w.replicas])
        self._closed = True

    def processes(self) -> list[int]:
        """PIDs of the processes running now (for tests and for checking that nothing is left)."""
        with self._lock:
            return [r.proc.pid for w in self._workloads.values() for r in w.replicas
                    if r.proc is not None and r.state == "Running"]

    # -- reaching a service -----------------------------------------------------
    def port_forward(self, name: str, port: int, kind: str = "Service", timeout: float = 60) -> PortForward:
        """The local port where the pods behind Service ``name`` (or Deployment ``name``) serve ``port``.

        Nothing to forward locally: the process listens on this machine already. This
        waits until it accepts connections, so the next cell can use it at once.
        """
        replica, container_port = self._target(name, port, kind)
        local = replica.ports.get(container_port)
        if local is None:
            raise NotFoundError(f"{kind} {name}: the container declares no containerPort {container_port} "
                                f"(it has {sorted(replica.ports) or 'none'}); add it under ports:")

        def listening() -> bool:
            if _port_open(local):
                return True
            exited = replica.proc is not None and replica.proc.poll() is not None
            if replica.restarts > 0 or (replica.state != "Running" and exited):
                # A Deployment's process is restarted at once: a crash shows as restarts.
                raise NotFoundError(f"{kind} {name}: its process exited (restarted {replica.restarts} "
                                    f"time(s)) before listening on port {container_port}; logs:\n"
                                    f"{replica.log_path.read_text(errors='replace')[-2000:]}")
            return False

        wait_until(listening, timeout, interval=0.25, on_timeout=lambda: NotFoundError(
            f"{kind} {name}: nothing listens on port {container_port} after {timeout:.0f} s; "
            f"see its logs in {replica.log_path}"))
        return PortForward(local, f"{kind.lower()}/{name}:{port}")

    def _target(self, name: str, port: int, kind: str) -> tuple[_Replica, int]:
        with self._lock:
            if kind == "Service":
                service = self._objects.get(("Service", self.namespace, name))
                if service is None:
                    raise NotFoundError(f"no Service named {name!r} in namespace {self.namespace!r}")
                spec = service.get("spec") or {}
                entry = next((p for p in spec.get("ports") or [] if int(p.get("port", -1)) == port), None)
                if entry is None:
                    raise NotFoundError(f"Service {name} has no port {port}")
                target = entry.get("targetPort", port)
                selector = spec.get("selector") or {}
                for w in self._workloads.values():
                    template = (w.manifest.get("spec") or {}).get("template") or {}
                    labels = (template.get("metadata") or {}).get("labels") or {}
                    if selector and all(labels.get(k) == v for k, v in selector.items()):
                        r = w.replicas[0]
                        if isinstance(target, str):  # a named port
                            c = _container(template)
                            target = next((int(p["containerPort"]) for p in c.get("ports") or []
                                           if p.get("name") == target), -1)
                        return r, int(target)
                raise NotFoundError(f"Service {name} selects {selector}, but no running Deployment or Job "
                                    "has pods with those labels")
            w = self._find(name, kind)
            return w.replicas[0], port
