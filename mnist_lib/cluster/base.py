"""What every backend can do: the verbs of Kubeflow's ``TrainingClient``, plus a few.

A backend implements the primitive verbs (``apply``, ``get_job``, ``get_job_logs``,
``delete``, ``port_forward``); waiting with progress is written once, here, on
top of ``get_job``, so both backends report progress and failures the same way.
The helpers both backends use to read the objects they are given are here too.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from mnist_lib import paths, runs, settings
from mnist_lib.cluster.types import (ClusterError, InvalidObjectError, JobFailedError, JobPhase, JobStatus,
                                     JobTimeoutError, Manifest, NotFoundError, Objects)
from mnist_lib.constants import LOG_TAIL_LINES, PEER_LOST_SAYS
from mnist_lib.tf_config import operator_address
from mnist_lib.waiting import wait_until

KEEP_LOGS_SECONDS = 10  # while a job runs, read its main replica's log tail this often (pods may vanish)

if TYPE_CHECKING:
    from mnist_lib.config import TrainConfig

# The job kinds the backends know how to follow (create_job, get_job, delete_job).
JOB_KINDS = ("Job", "TFJob")


# -- reading the objects a backend is given -------------------------------------

def _error_lines(log: str) -> list[str]:
    """The trainer's own one-line reasons (``error: ...``) in a log, not a peer's loss."""
    return [line for line in log.splitlines() if line.startswith("error:") and PEER_LOST_SAYS not in line]


def as_list(objects: Objects) -> list[dict[str, Any]]:
    """Accept one object or a list of them; check each looks like a Kubernetes object."""
    items = [objects] if isinstance(objects, Mapping) else list(objects)
    if not items:
        raise InvalidObjectError("nothing to submit: pass a Kubernetes object (a dict) or a list of them")
    for obj in items:
        if not isinstance(obj, Mapping) or not obj.get("kind") or not obj.get("apiVersion") \
                or not (obj.get("metadata") or {}).get("name"):
            raise InvalidObjectError(
                "each object needs apiVersion, kind and metadata.name (build them with "
                f"mnist_lib.manifests); got {str(obj)[:200]}")
    return [dict(obj) for obj in items]


def in_namespace(obj: Manifest, namespace: str) -> dict[str, Any]:
    """``obj`` placed in the backend's ``namespace``; one built for another namespace is refused.

    The course's objects carry no namespace (:mod:`mnist_lib.manifests`): like
    ``kubectl apply -n``, the backend puts them in its own, ``MNIST_NAMESPACE``.
    An object naming another one would land where this backend never looks.
    """
    if obj["kind"] == "Namespace":
        return dict(obj)
    given = (obj.get("metadata") or {}).get("namespace")
    if given and given != namespace:
        raise InvalidObjectError(
            f"{obj['kind']} {obj['metadata']['name']} is for namespace {given!r}, but this backend works in "
            f"{namespace!r} ({settings.NAMESPACE_ENV}): build it without namespace=..., or set "
            f"{settings.NAMESPACE_ENV}={given} before the first get_backend() of the kernel.")
    return {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}


def job_in(objects: Sequence[Manifest]) -> Manifest:
    """The one Job or TFJob among ``objects`` (the thing to wait for)."""
    jobs = [o for o in objects if o["kind"] in JOB_KINDS]
    if len(jobs) != 1:
        kinds = [o["kind"] for o in objects]
        raise InvalidObjectError(
            f"create_job needs exactly one Job or TFJob among the objects, got kinds {kinds}; "
            "use apply() for objects that are not jobs (Deployments, Services...)")
    return jobs[0]


def replica_specs(tfjob: Manifest) -> dict[str, dict[str, Any]]:
    """``spec.tfReplicaSpecs`` of a TFJob, checked: {'Chief': {...}, 'Worker': {...}}."""
    specs = (tfjob.get("spec") or {}).get("tfReplicaSpecs") or {}
    known = ("Chief", "Master", "PS", "Worker", "Evaluator")
    if not specs:
        raise InvalidObjectError(f"TFJob {tfjob['metadata']['name']} has no spec.tfReplicaSpecs")
    for rtype in specs:
        if rtype not in known:
            raise InvalidObjectError(f"TFJob replica type {rtype!r} is not one of {list(known)} "
                                     "(the spelling is case-sensitive)")
    return dict(specs)


def main_replica(kind: str, replicas: Iterable[str]) -> str:
    """The replica whose logs tell the story: the chief (or master) if any, else worker."""
    replicas = list(replicas)
    for rtype in ("Chief", "Master", "Worker"):
        if rtype in replicas:
            return rtype
    return replicas[0] if replicas else ("Job" if kind == "Job" else "Worker")


def canonical_replica(replica: str | None, known: Iterable[str]) -> str | None:
    """Match ``"worker"`` to ``"Worker"``, ``"ps"`` to ``"PS"``: replica names are case-insensitive here."""
    if replica is None:
        return None
    for name in known:
        if name.lower() == replica.lower():
            return name
    raise NotFoundError(f"no replica type {replica!r}; this job has {sorted(known)}")


# -- the verbs --------------------------------------------------------------------

class PortForward:
    """A local port that reaches a port of a pod or service. Close it when done (or use ``with``)."""

    def __init__(self, local_port: int, target: str, close: Callable[[], None] = lambda: None):
        self.local_port = local_port
        self.target = target
        self._close = close

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def close(self) -> None:
        self._close()

    def __enter__(self) -> "PortForward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PortForward({self.target} -> 127.0.0.1:{self.local_port})"


class Backend(ABC):
    """The verbs the notebooks use. See :mod:`mnist_lib.cluster` for an example."""

    name: str = "?"
    namespace: str

    # -- primitives each backend implements ---------------------------------
    @abstractmethod
    def apply(self, objects: Objects) -> list[str]:
        """Create or update objects (server-side apply); return ``kind/name`` of each."""

    @abstractmethod
    def delete(self, objects: Objects) -> None:
        """Delete these objects (and, for jobs and deployments, their pods). Missing ones are fine."""

    @abstractmethod
    def get_job(self, name: str, kind: str | None = None) -> JobStatus:
        """Status of a Job, TFJob or Deployment by name (``kind`` only needed if names clash)."""

    @abstractmethod
    def get_job_logs(self, name: str, replica: str | None = None, index: int = 0,
                     tail: int | None = None, kind: str | None = None) -> str:
        """Logs of one replica (default: the chief, else worker 0), like ``kubectl logs``."""

    @abstractmethod
    def stream_job_logs(self, name: str, replica: str | None = None, index: int = 0,
                        kind: str | None = None) -> Iterator[str]:
        """Yield log lines of one replica as they are written, until it stops."""

    @abstractmethod
    def delete_job(self, name: str, kind: str | None = None) -> None:
        """Delete a job and stop all its pods (and the Service submitted with it)."""

    @abstractmethod
    def delete_pod(self, name: str, replica: str | None = None, index: int = 0, kind: str | None = None) -> str:
        """Delete one running pod of a job, as ``kubectl delete pod`` (or a drained node) would; return its name.

        What happens next is the job's restart policy: an Indexed Job replaces it, and the run
        resumes from its latest checkpoint; a TFJob fails (operator v1.9.4, kubeflow/trainer#1560)."""

    @abstractmethod
    def port_forward(self, name: str, port: int, kind: str = "Service", timeout: float = 60) -> PortForward:
        """Reach ``port`` of a Service (or Pod) from this machine; returns the local port.

        Waits up to ``timeout`` seconds for something to listen there."""

    @abstractmethod
    def replica_env(self, name: str, replica: str | None = None, index: int = 0,
                    kind: str | None = None) -> dict[str, str]:
        """The environment a replica was given: TF_CONFIG, JOB_COMPLETION_INDEX, MNIST_* variables."""

    # -- the shared volume, mounted at /outputs in every pod ----------------
    @abstractmethod
    def pull(self, *volume_paths: str, missing_ok: bool = False) -> list[Path]:
        """Make ``/outputs/...`` files or folders readable here; return where they are on this machine.

        Locally the volume *is* the output folder: nothing moves. On a cluster the
        files come through the API (changed ones only) into the output folder.
        A missing path raises :class:`NotFoundError`; with ``missing_ok`` it is left
        out of the answer instead."""

    @abstractmethod
    def put(self, local_folder: Path | str, dest: str, version: bool = False) -> str:
        """Copy a folder of this machine to ``dest`` on the volume, or to its next numbered version
        if ``version``; staged and renamed into place (a server never sees half a model)."""

    @abstractmethod
    def copy_version(self, source: str, dest: str) -> str:
        """Copy a folder of the volume to ``dest``'s next numbered version, on the volume."""

    @abstractmethod
    def remove_outputs(self, volume_paths: Iterable[str]) -> None:
        """Delete paths under ``/outputs`` on the volume (and this machine's copies). Missing ones are fine."""

    @abstractmethod
    def supports_tfjob(self) -> bool:
        """Can this backend run TFJobs (on a cluster: is the Kubeflow training operator installed)?"""

    @abstractmethod
    def describe(self) -> str:
        """Where jobs run, in one line."""

    def processes(self) -> list[int]:
        """PIDs of processes this backend runs on this machine (none for a cluster)."""
        return []

    def tfjob_address(self, name: str) -> Callable[[str, int], str]:
        """Where replica ``(role, index)`` of TFJob ``name`` listens, as ``host:port``.

        On a cluster, the operator's convention: the DNS name of the replica's
        headless Service, ``<job>-<role>-<index>.<namespace>.svc:2222``. The local
        backend overrides it with the localhost ports it picked. Chapter 04 uses it
        to check that every address in a replica's TF_CONFIG is the right one.
        """
        return operator_address(name, self.namespace)

    def wait_for_replica_envs(self, tfjob: Manifest, timeout: float = 300) -> dict[str, dict[str, str]]:
        """The environment of every replica of a submitted TFJob: ``{"worker 0": {"TF_CONFIG": ...}, ...}``.

        Call it right after :meth:`create_job`: it waits until each replica's pod
        exists. Why not later: on a cluster, when the job ends the operator deletes
        the pods still running (``cleanPodPolicy: Running``: the parameter servers,
        a worker that has not exited yet), and what they were given goes with them.
        """
        name = tfjob["metadata"]["name"]
        wanted = [(rtype, index) for rtype, spec in replica_specs(tfjob).items()
                  for index in range(int(spec.get("replicas", 1)))]
        envs: dict[str, dict[str, str]] = {}

        def read_all() -> bool:
            for rtype, index in wanted:
                key = f"{rtype.lower()} {index}"
                if key not in envs:  # NotFoundError until its pod is created
                    envs[key] = self.replica_env(name, rtype, index, kind="TFJob")
            return True

        def timed_out() -> JobTimeoutError:
            missing = next(key for key in (f"{r.lower()} {i}" for r, i in wanted) if key not in envs)
            return JobTimeoutError(f"TFJob {name}: no pod for {missing} after {timeout:.0f} s; look at the "
                                   f"job's events (kubectl -n {self.namespace} describe tfjob {name})")

        wait_until(read_all, timeout, retry_on=(NotFoundError,), on_timeout=timed_out)
        return envs

    # -- built on the primitives --------------------------------------------
    def wait_for_log(self, name: str, text: str, replica: str | None = None, index: int = 0,
                     timeout: float = 300, kind: str | None = None) -> str:
        """Wait until a log line of the replica's (newest) pod contains ``text``; return that line.

        For example ``wait_for_log(job, "epoch 1/")``: the first epoch's checkpoint is written."""
        found: list[str] = []

        def logged() -> bool:
            status = self.get_job(name, kind)
            self.check_pods(status)  # a pod that can never start: say why now, not at the timeout
            logs = self.get_job_logs(name, replica=replica, index=index, kind=kind)
            found[:] = [line for line in logs.splitlines() if text in line][:1]
            if not found and status.finished:
                raise JobFailedError(f"{status.kind} {name} is {status.phase} and never logged {text!r}",
                                     status, logs)
            return bool(found)

        def timed_out() -> JobTimeoutError:
            return JobTimeoutError(f"{name}: no log line with {text!r} after {timeout:.0f} s; "
                                   "look at its logs (get_job_logs)")

        wait_until(logged, timeout, interval=1.0, retry_on=(NotFoundError,), on_timeout=timed_out)
        return found[0]

    def create_job(self, objects: Objects) -> str:
        """Submit a Job or TFJob (with companions such as its headless Service); return the job's name."""
        items = as_list(objects)
        job = job_in(items)
        self.apply(items)
        return job["metadata"]["name"]

    def wait_for_job_conditions(self, name: str, expected_conditions: Iterable[str] = (JobPhase.SUCCEEDED,),
                                timeout: float = 900, polling_interval: float = 1.0,
                                progress: bool = True, kind: str | None = None) -> JobStatus:
        """Wait until the job reaches one of ``expected_conditions``; print each change if ``progress``.

        A job that ends Failed raises :class:`JobFailedError` with the tail of the
        failing replica's logs, so the reason is on screen at once. Waiting too
        long raises :class:`JobTimeoutError`; the job itself keeps running.
        """
        expected = set(expected_conditions)
        # A loop of its own, not waiting.wait_until: each poll also prints changes and keeps crash logs.
        deadline = time.monotonic() + timeout
        last = ""
        crash_logs = ""  # the tail of a crashed replica's log, read while its pod still exists
        kept_at = time.monotonic()
        while True:
            status = self.get_job(name, kind=kind)
            self.check_pods(status)
            if progress and status.summary() != last:
                last = status.summary()
                print(last, flush=True)
            if status.phase in expected:
                return status
            if status.phase == JobPhase.FAILED:
                raise self.failure(status, crash_logs)
            troubled = any(r.restarts or r.failed for r in status.replicas.values())
            if troubled or time.monotonic() - kept_at > KEEP_LOGS_SECONDS:
                # On a cluster the Job controller deletes a crash-looping pod when the job fails, and
                # the operator a TFJob's running pods: keep the last log tail we could read.
                kept_at = time.monotonic()
                try:
                    replica = self._failing_replica(status, count_restarts=True)
                    crash_logs = self._log_tail(status, replica, self._failed_index(status, replica)) or crash_logs
                except (ClusterError, OSError):
                    pass  # not readable right now (a container restarting): keep the previous tail
            if time.monotonic() > deadline:
                raise JobTimeoutError(
                    f"{status.kind} {name} is still {status.phase} after {timeout:.0f} s; it keeps running. "
                    "Look at its logs (get_job_logs), wait again, or delete it (delete_job).")
            time.sleep(polling_interval)

    def read_output(self, path: str) -> str:
        """The text of a file on the shared volume, e.g. ``/outputs/ch03-job/checkpoints/result.json``."""
        return self.pull(path)[0].read_text()

    def read_result(self, config: TrainConfig) -> dict[str, Any] | None:
        """A finished run's ``result.json`` (test accuracy, timings...), or None if there is none yet."""
        return runs.read_result(config.model_dir, backend=self)

    def clear_outputs(self, config: TrainConfig) -> None:
        """Delete a run's checkpoints, logs and export on the shared volume, to train it from scratch."""
        self.remove_outputs([paths.on_volume(folder) for folder in (config.model_dir, config.log_dir,
                                                                      config.export_dir)])

    def check_pods(self, status: JobStatus) -> None:
        """Raise early for pod problems that never end by themselves (e.g. image pull errors)."""

    def _failing_replica(self, status: JobStatus, count_restarts: bool = False) -> str:
        """The replica whose log explains a failure: the first that failed (or, if counted,
        restarted), else the main one."""
        failing = [r for r, counts in status.replicas.items()
                   if counts.failed or (count_restarts and counts.restarts)]
        return failing[0] if failing else main_replica(status.kind, status.replicas)

    def _log_tail(self, status: JobStatus, replica: str, index: int) -> str:
        """The last lines of the log of pod ``index`` of ``replica``."""
        return self.get_job_logs(status.name, replica=replica, index=index, tail=LOG_TAIL_LINES, kind=status.kind)

    def _failed_index(self, status: JobStatus, replica: str) -> int:
        """The index of the first pod of ``replica`` to fail, or 0. It matters: when worker 1 fails
        first, the operator deletes worker 0 (cleanPodPolicy), whose log then says nothing."""
        return 0

    def failure(self, status: JobStatus, crash_logs: str = "") -> JobFailedError:
        """A :class:`JobFailedError` with the tail of the failing replica's logs.

        ``crash_logs``: the tail read earlier from a crashed replica, used when its pod
        (and log) is gone by now, as on a cluster after the Job controller gave up.
        """
        replica = self._failing_replica(status)
        index = 0
        try:
            index = self._failed_index(status, replica)
            logs = self._log_tail(status, replica, index)
        except (ClusterError, OSError) as err:  # the failure matters more than missing logs
            logs = crash_logs or f"(logs unavailable: {err})"
        if _error_lines(crash_logs) and not _error_lines(logs):
            logs = crash_logs  # the pod that said why is gone; the one read now was only stopped
        reason = status.message or "a replica failed"
        hint = ""
        if status.kind == "TFJob" and not _error_lines(logs):  # no error of its own: a pod was lost (or its log is)
            hint = ("\nIf a pod of this TFJob was deleted or evicted: operator v1.9.4 then fails the TFJob whatever "
                    "its restartPolicy (kubeflow/trainer#1560). Delete it and submit it again (delete_job, then "
                    "create_job; no clear_outputs) and it resumes from its latest checkpoint. An Indexed Job "
                    "(manifests.indexed_job) replaces a lost pod by itself.")
        return JobFailedError(
            f"{status.kind} {status.name} failed: {reason}\n"
            f"--- last {LOG_TAIL_LINES} log lines of {replica.lower()} {index} ---\n{logs.rstrip()}{hint}",
            status, logs)
