"""What every backend can do: the verbs of Kubeflow's ``TrainingClient``, plus a few.

A backend implements the primitive verbs (``apply``, ``get_job``, ``get_job_logs``,
``delete``, ``port_forward``); waiting with progress is written once, here, on
top of ``get_job``, so both backends report progress and failures the same way.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mnist_lib import paths, runs
from mnist_lib.cluster import (FAILED, SUCCEEDED, JobFailedError, JobStatus, JobTimeoutError, Manifest,
                               NotFoundError, Objects, as_list, job_in, main_replica, replica_specs)

LOG_TAIL_LINES = 30


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
        from mnist_lib.tf_config import operator_address

        return operator_address(name, self.namespace)

    def wait_for_replica_envs(self, tfjob: Manifest, timeout: float = 300) -> dict[str, dict[str, str]]:
        """The environment of every replica of a submitted TFJob: ``{"worker 0": {"TF_CONFIG": ...}, ...}``.

        Call it right after :meth:`create_job`: it waits until each replica's pod
        exists. Why not later: on a cluster, when the job ends the operator deletes
        the pods still running (``cleanPodPolicy: Running``: the parameter servers,
        a worker that has not exited yet), and what they were given goes with them.
        """
        name = tfjob["metadata"]["name"]
        deadline = time.monotonic() + timeout
        envs: dict[str, dict[str, str]] = {}
        for rtype, spec in replica_specs(tfjob).items():
            for index in range(int(spec.get("replicas", 1))):
                while True:
                    try:
                        envs[f"{rtype.lower()} {index}"] = self.replica_env(name, rtype, index, kind="TFJob")
                        break
                    except NotFoundError:  # its pod is not created yet
                        if time.monotonic() > deadline:
                            raise JobTimeoutError(f"TFJob {name}: no pod for {rtype.lower()} {index} after "
                                                  f"{timeout:.0f} s; look at the job's events "
                                                  f"(kubectl -n {self.namespace} describe tfjob {name})") from None
                        time.sleep(0.5)
        return envs

    # -- built on the primitives --------------------------------------------
    def create_job(self, objects: Objects) -> str:
        """Submit a Job or TFJob (with companions such as its headless Service); return the job's name."""
        items = as_list(objects)
        job = job_in(items)
        self.apply(items)
        return job["metadata"]["name"]

    def wait_for_job_conditions(self, name: str, expected_conditions: Iterable[str] = (SUCCEEDED,),
                                timeout: float = 900, polling_interval: float = 1.0,
                                progress: bool = True, kind: str | None = None) -> JobStatus:
        """Wait until the job reaches one of ``expected_conditions``; print each change if ``progress``.

        A job that ends Failed raises :class:`JobFailedError` with the tail of the
        failing replica's logs, so the reason is on screen at once. Waiting too
        long raises :class:`JobTimeoutError`; the job itself keeps running.
        """
        expected = set(expected_conditions)
        deadline = time.monotonic() + timeout
        last = ""
        crash_logs = ""  # the tail of a crashed replica's log, read while its pod still exists
        while True:
            status = self.get_job(name, kind=kind)
            self.check_pods(status)
            if progress and status.summary() != last:
                last = status.summary()
                print(last, flush=True)
            if status.phase in expected:
                return status
            if status.phase == FAILED:
                raise self.failure(status, crash_logs)
            if any(r.restarts or r.failed for r in status.replicas.values()):
                # On a cluster the Job controller deletes a crash-looping pod when the job
                # fails, and its log with it: keep the last one we could read.
                try:
                    crash_logs = self._log_tail(status, self._failing_replica(status, count_restarts=True)) \
                        or crash_logs
                except Exception:
                    pass  # not readable right now (a container restarting): keep the previous tail
            if time.monotonic() > deadline:
                raise JobTimeoutError(
                    f"{status.kind} {name} is still {status.phase} after {timeout:.0f} s; it keeps running. "
                    "Look at its logs (get_job_logs), wait again, or delete it (delete_job).")
            time.sleep(polling_interval)

    def read_output(self, path: str) -> str:
        """The text of a file on the shared volume, e.g. ``/outputs/ch03-job/checkpoints/result.json``."""
        return self.pull(path)[0].read_text()

    def read_result(self, config: Any) -> dict[str, Any] | None:
        """A finished run's ``result.json`` (test accuracy, timings...), or None if there is none yet."""
        return runs.read_result(config.model_dir, backend=self)

    def clear_outputs(self, config: Any) -> None:
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

    def _log_tail(self, status: JobStatus, replica: str) -> str:
        """The last lines of replica ``replica`` 0's log."""
        return self.get_job_logs(status.name, replica=replica, index=0, tail=LOG_TAIL_LINES, kind=status.kind)

    def failure(self, status: JobStatus, crash_logs: str = "") -> JobFailedError:
        """A :class:`JobFailedError` with the tail of the failing replica's logs.

        ``crash_logs``: the tail read earlier from a crashed replica, used when its pod
        (and log) is gone by now, as on a cluster after the Job controller gave up.
        """
        replica = self._failing_replica(status)
        try:
            logs = self._log_tail(status, replica)
        except Exception as err:  # the failure matters more than missing logs
            logs = crash_logs or f"(logs unavailable: {err})"
        reason = status.message or "a replica failed"
        return JobFailedError(
            f"{status.kind} {status.name} failed: {reason}\n"
            f"--- last {LOG_TAIL_LINES} log lines of {replica.lower()} 0 ---\n{logs.rstrip()}",
            status, logs)
