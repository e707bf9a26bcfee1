"""Hyperparameter sweeps: one small training job per point of a search space.

This is where the 2018 workshop ended ("could you test different parameters?"),
and where its sweep went wrong: a ``sed`` over a YAML template gave the
hyperparameters to the master replica only, and all nine trials exported into
one folder. Here:

- what a sweep is (its search space, its rules) is a :class:`SweepSpec`
  (:mod:`mnist_lib.sweep_spec`), checked when it is built, before anything is
  submitted, so a typo loses nothing; a :class:`Sweep` runs one on a backend;
- every trial is one job built by :mod:`mnist_lib.manifests` (a TFJob by default,
  or a one-pod Job), so every replica gets the same flags, and each trial has its
  own run folder ``outputs/<trial>/{checkpoints,logs,export}``; every manifest is
  built (and so every value checked as a training flag) before the first is submitted;
- validation accuracy streams from each trial's TensorBoard event files while it
  runs, and the *median-stop* rule (Katib's ``medianstop``) ends hopeless trials early;
- a failing trial is recorded with its logs and the others go on; :meth:`Sweep.stop`
  stops every trial; results are saved to ``outputs/<sweep>/sweep.json`` after every
  change and can be reloaded with :func:`load_sweep`;
- :func:`promote` copies the best trial's model into the served model's folder as
  a new version, which chapter 06's server picks up by itself.

Plain function calls do everything (that is what the tests and chapter 07 use)::

    sweep = Sweep("ch07-sweep", SearchSpace(learning_rate=(1e-4, 1e-2), hidden_layers=(1, 2)),
                  job_kind="Job", fixed={"architecture": "mlp", "train_limit": 5000})
    result = sweep.run()
    promote(result.best())

:mod:`mnist_lib.widgets` puts sliders and a live plot on top.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

from mnist_lib import cluster, manifests, paths, runs
from mnist_lib.checks import is_number
from mnist_lib.cluster import JobPhase
from mnist_lib.cluster.base import Backend
from mnist_lib.config import ConfigError
from mnist_lib.constants import LOG_TAIL_LINES, MODEL_NAME, OBJECTIVE
from mnist_lib.sweep_spec import FINISHED, MedianStop, SearchSpace, SweepError, SweepSpec, TrialStatus

# The spec's classes are part of this module's API too: `from mnist_lib.sweep import SearchSpace, Sweep`.
__all__ = ["FINISHED", "MedianStop", "SearchSpace", "Sweep", "SweepError", "SweepResult", "SweepSpec", "Trial",
           "TrialStatus", "load_sweep", "promote", "serving_path"]

log = logging.getLogger(__name__)

RESULTS_FILE = "sweep.json"


# == trials ==============================================================================

@dataclass
class Trial:
    """One point of the search space, trained as one job. Also a row of ``sweep.json``."""

    name: str
    params: dict[str, Any]
    status: TrialStatus = TrialStatus.PENDING
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, validation accuracy)
    test_accuracy: float | None = None
    export_path: str | None = None
    started: float | None = None   # time.time()
    finished: float | None = None
    message: str = ""
    logs: str = ""                 # the tail of the main (or failing) replica's log
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        """``lr 0.001, 2 layers``: the legend of the plots."""
        p = self.params
        layers = p.get("hidden_layers")
        text = f"lr {p.get('learning_rate'):g}, {layers} layer{'s' if layers != 1 else ''}"
        return text + (f" x {p['width']}" if p.get("width") not in (None, 128) else "")

    @property
    def val_accuracy(self) -> float | None:
        """Validation accuracy after the last epoch it trained (what the sweep ranks by)."""
        return self.curve[-1][1] if self.curve else None

    @property
    def best_accuracy(self) -> float | None:
        return max(v for _, v in self.curve) if self.curve else None

    @property
    def epochs_done(self) -> int:
        return self.curve[-1][0] if self.curve else 0

    @property
    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["curve"] = [list(point) for point in self.curve]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Trial":
        known = {f.name for f in dataclasses.fields(cls)}
        trial = cls(**{k: v for k, v in data.items() if k in known})
        trial.status = TrialStatus(trial.status)
        trial.curve = [(int(s), float(v)) for s, v in trial.curve]
        return trial


# == results ============================================================================

@dataclass
class SweepResult:
    """What a sweep did: its settings and every trial. Saved as ``outputs/<sweep>/sweep.json``."""

    name: str
    search: str
    space: dict[str, Any]
    settings: dict[str, Any]
    trials: list[Trial]
    started: float | None = None
    finished: float | None = None
    path: str | None = None

    def best(self) -> Trial:
        """The succeeded trial with the highest final *validation* accuracy.

        Validation, not test: choosing by test accuracy would tune to the test set,
        which then no longer measures how the model does on new digits.
        """
        done = [t for t in self.trials if t.status == TrialStatus.SUCCEEDED and t.val_accuracy is not None]
        if not done:
            statuses = ", ".join(f"{t.name}: {t.status}" for t in self.trials)
            raise SweepError(f"sweep {self.name} has no succeeded trial to choose from ({statuses})")
        return max(done, key=lambda t: t.val_accuracy)

    def by_status(self) -> dict[TrialStatus, int]:
        counts: dict[TrialStatus, int] = {}
        for t in self.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        return counts

    @property
    def wall_seconds(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started

    def time_saved_by_early_stopping(self) -> float:
        """Seconds of training the early stops saved: for each stopped trial, the median
        duration of the succeeded trials minus its own (an estimate: we never saw the rest)."""
        full = [t.seconds for t in self.trials if t.status == TrialStatus.SUCCEEDED and t.seconds]
        if not full:
            return 0.0
        typical = statistics.median(full)
        return sum(max(0.0, typical - t.seconds) for t in self.trials
                   if t.status == TrialStatus.EARLY_STOPPED and t.seconds is not None)

    def table(self) -> str:
        """One line per trial: name, parameters, status, accuracies, seconds."""
        lines = [f"{'trial':<22} {'parameters':<26} {'status':<13} {'val acc':>7} {'test acc':>8} {'time':>6}"]
        for t in self.trials:
            val = f"{t.val_accuracy:.3f}" if t.val_accuracy is not None else "-"
            test = f"{t.test_accuracy:.3f}" if t.test_accuracy is not None else "-"
            secs = f"{t.seconds:.0f}s" if t.seconds is not None else "-"
            lines.append(f"{t.name:<22} {t.label:<26} {t.status:<13} {val:>7} {test:>8} {secs:>6}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "search": self.search, "space": self.space, "settings": self.settings,
                "started": self.started, "finished": self.finished,
                "trials": [t.to_dict() for t in self.trials]}

    def save(self, path: Path | str) -> Path:
        """Write JSON atomically (temporary file, then rename): a reader never sees half of it."""
        path = paths.write_json(path, self.to_dict(), indent=1)
        self.path = str(path)
        return path


def load_sweep(where: Path | str) -> SweepResult:
    """Reload a saved sweep: a ``sweep.json``, its folder, or a sweep name (its latest run)."""
    where = Path(where)
    candidates = [where] if where.suffix == ".json" else [where / RESULTS_FILE]
    if not where.is_absolute() and len(where.parts) == 1 and not candidates[0].exists():
        # A sweep name: its runs are folders <name>-<id>/ under the outputs folder.
        saved = sorted((p for p in paths.output_dir().glob(f"{where.name}-*/{RESULTS_FILE}")
                        if re.fullmatch(rf"{re.escape(where.name)}-[0-9a-f]{{4}}", p.parent.name)),
                       key=lambda p: p.stat().st_mtime)
        candidates = saved[-1:] or candidates
    path = candidates[0]
    if not path.is_file():
        raise FileNotFoundError(f"no saved sweep at {path}: pass a sweep.json, its folder, or the "
                                f"name of a sweep that ran under {paths.output_dir()}")
    data = json.loads(path.read_text())
    return SweepResult(name=data["name"], search=data["search"], space=data["space"],
                       settings=data["settings"], started=data.get("started"),
                       finished=data.get("finished"), path=str(path),
                       trials=[Trial.from_dict(t) for t in data["trials"]])



# == the sweep ===========================================================================

UpdateCallback = Callable[["Sweep"], None]
CustomizeJob = Callable[[Trial, dict[str, Any]], dict[str, Any]]


class Sweep:
    """A :class:`SweepSpec`'s trials, run as jobs on a backend, at most ``parallel`` at a time.

    ``Sweep(spec, backend=...)``, or in short ``Sweep("ch07-sweep", space, job_kind="Job",
    ...)``, which builds the spec from a name, a :class:`SearchSpace` and the other
    fields of :class:`SweepSpec`. The rest says where and how it runs:

    - ``backend``: where the trials run (default: :func:`mnist_lib.cluster.get_backend`'s
      choice, made when it starts); ``image``: the image of their pods (default: the settings');
    - ``customize_job(trial, manifest) -> manifest``: a last change to each trial's
      manifest (node selectors, resources, an environment variable...);
    - ``poll_interval``: seconds between two looks at the running trials.

    The spec's ``name`` + a fresh 4-character id names this run (``ch07-sweep-3fa2``),
    and the trials are ``<run>-00``, ``<run>-01``...: unique, so a sweep run again never
    collides with (or resumes from the checkpoints of) an earlier one, on a laptop
    or on a cluster where finished jobs stay for a day.

    Everything is checked here; nothing is submitted until :meth:`run` or :meth:`start`.
    """

    def __init__(self, spec: SweepSpec | str | None = None, space: SearchSpace | None = None, *,
                 backend: Backend | None = None, image: str | None = None,
                 customize_job: CustomizeJob | None = None, poll_interval: float = 1.0,
                 **spec_fields: Any) -> None:
        self.spec = _as_spec(spec, space, spec_fields)
        if not (is_number(poll_interval) and poll_interval > 0):
            raise SweepError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        self.poll_interval = float(poll_interval)
        self.backend, self.image, self._customize = backend, image, customize_job
        self.name = self._run_name()
        self.trials = [Trial(f"{self.name}-{i:02d}", params) for i, params in enumerate(self.spec.points())]
        for trial in self.trials:  # build (and so validate) every manifest before submitting any
            trial.manifest = self._manifest(trial)
        self.results_path = paths.output_dir() / self.name / RESULTS_FILE
        self.started: float | None = None
        self.finished: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._on_update: list[UpdateCallback] = []
        self.error: Exception | None = None  # what stopped a background sweep, if anything

    # -- building -----------------------------------------------------------------------
    def _run_name(self) -> str:
        """``<name>-<id>``, its trials ``<name>-<id>-NN``: every pod name must fit in 63 characters."""
        suffix = f"-worker-{self.spec.workers - 1}" if self.spec.job_kind == "TFJob" else ""
        try:
            manifests.check_name(self.spec.name, "sweep name", f"-xxxx-00{suffix}")
        except manifests.ManifestError as err:
            raise SweepError(str(err)) from None
        return f"{self.spec.name}-{secrets.token_hex(2)}"

    def _manifest(self, trial: Trial) -> dict[str, Any]:
        """The trial's job, built by the same functions as every other manifest of the course."""
        spec = self.spec
        try:
            config = manifests.run_config(trial.name, **spec.fixed, **trial.params)
            if spec.job_kind == "TFJob":  # no namespace: the backend puts the job in its own
                job = manifests.tfjob(trial.name, config, workers=spec.workers, image=self.image,
                                      backoff_limit=spec.retries)
            else:
                job = manifests.training_job(trial.name, config, image=self.image, backoff_limit=spec.retries)
        except (ConfigError, manifests.ManifestError, TypeError) as err:
            raise SweepError(f"trial {trial.name} ({trial.params}) is invalid: {err}") from None
        if self._customize is not None:
            job = self._customize(trial, job)
        return job

    # -- reading the trials' folders (on a cluster, through the backend) -------------------
    def _read_curves(self, trials: list[Trial]) -> None:
        """Refresh the validation curve of each trial from its event files, in one transfer."""
        if not trials:
            return
        try:
            scalars = runs.scalars_of([t.name for t in trials], self.backend)
        except Exception as err:  # a half-written event file, a slow API: keep what we had, read again
            log.debug("reading the trials' events: %s", err)
            return
        for trial in trials:
            curve = scalars[trial.name].get(OBJECTIVE, [])
            if len(curve) >= len(trial.curve):
                trial.curve = [(int(s), float(v)) for s, v in curve]

    # -- running ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self, on_update: UpdateCallback | None = None) -> SweepResult:
        """Run every trial and return the result (blocks; interrupt the kernel to stop them all)."""
        if self.started is not None:
            raise SweepError(f"sweep {self.name} has already run: build a new Sweep to run again")
        if on_update is not None:
            self._on_update.append(on_update)
        if self.backend is None:
            self.backend = cluster.get_backend()
        self.started = time.time()
        self._save()
        try:
            while not self._stop.is_set():
                self._launch_pending()
                self._poll_running()
                self._notify()
                if all(t.status in FINISHED for t in self.trials):
                    break
                self._stop.wait(self.poll_interval)
        finally:
            # Stopped, interrupted, or an error here: no trial may outlive the sweep.
            self._stop_all("the sweep was stopped")
            self.finished = time.time()
            self._save()
            self._notify()
        return self.result()

    def start(self, on_update: UpdateCallback | None = None) -> "Sweep":
        """Run in a background thread (for the widget); :meth:`wait` or :meth:`stop` later."""
        if self._thread is not None:
            raise SweepError(f"sweep {self.name} was already started")
        self._thread = threading.Thread(target=self._run_quietly, args=(on_update,),
                                        name=f"sweep-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run_quietly(self, on_update: UpdateCallback | None) -> None:
        try:
            self.run(on_update)
        except Exception as err:  # the thread has no caller to raise to: record it
            log.exception("sweep %s failed", self.name)
            self.error = err

    def wait(self, timeout: float | None = None) -> SweepResult:
        """Wait for a started sweep to finish; TimeoutError if it is still running after ``timeout``."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"sweep {self.name} is still running after {timeout} s")
        return self.result()

    def stop(self, timeout: float = 120) -> SweepResult:
        """Stop every running trial, cancel the pending ones, and wait until they are gone."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        elif self._thread is None and self.started is None:
            self._stop_all("the sweep was stopped before it started")
        return self.result()

    def result(self) -> SweepResult:
        """A snapshot of the settings and every trial (safe to call while it runs)."""
        with self._lock:
            return SweepResult(
                name=self.name, search="list" if self.spec.explicit else self.spec.search,
                space=self.spec.space.as_dict(), settings=self.settings(),
                trials=[Trial.from_dict(t.to_dict()) for t in self.trials],
                started=self.started, finished=self.finished, path=str(self.results_path))

    def settings(self) -> dict[str, Any]:
        spec = self.spec
        return {"job_kind": spec.job_kind, "workers": spec.workers, "parallel": spec.parallel,
                "fixed": spec.fixed, "seed": spec.seed, "retries": spec.retries,
                "early_stopping": dataclasses.asdict(spec.early_stopping) if spec.early_stopping else None,
                "backend": getattr(self.backend, "name", None)}

    # -- one pass of the loop ------------------------------------------------------------------
    def _launch_pending(self) -> None:
        running = sum(t.status == TrialStatus.RUNNING for t in self.trials)
        for trial in self.trials:
            if running >= self.spec.parallel or self._stop.is_set():
                return
            if trial.status != TrialStatus.PENDING:
                continue
            # A fresh folder: a leftover checkpoint would make training "resume" a finished run.
            runs.clear(trial.name, self.backend)
            with self._lock:
                trial.started = time.time()
                try:
                    self.backend.create_job(trial.manifest)
                    trial.status = TrialStatus.RUNNING
                    running += 1
                except Exception as err:  # e.g. the cluster refused it: this trial fails, not the sweep
                    self._finish(trial, TrialStatus.FAILED, f"could not submit: {err}")
            self._save()

    def _poll_running(self) -> None:
        running = [t for t in self.trials if t.status == TrialStatus.RUNNING]
        self._read_curves(running)
        for trial in running:
            try:
                status = self.backend.get_job(trial.name, kind=self.spec.job_kind)
            except Exception as err:
                self._finish(trial, TrialStatus.FAILED, f"lost track of its job: {err}")
                continue
            if status.phase == JobPhase.SUCCEEDED:
                self._succeeded(trial)
            elif status.phase == JobPhase.FAILED:
                failure = self.backend.failure(status)
                trial.logs = failure.logs
                self._finish(trial, TrialStatus.FAILED, str(failure).splitlines()[0])
            elif trial.seconds is not None and trial.seconds > self.spec.trial_timeout:
                self._capture_logs(trial)
                self._finish(trial, TrialStatus.FAILED,
                             f"still running after {self.spec.trial_timeout:.0f} s (trial_timeout)")
            else:
                self._maybe_stop_early(trial)

    def _maybe_stop_early(self, trial: Trial) -> None:
        """Apply the early-stopping rule to a running trial, against the trials that succeeded."""
        if self.spec.early_stopping is None:
            return
        completed = [t.curve for t in self.trials if t.status == TrialStatus.SUCCEEDED]
        reason = self.spec.early_stopping.reason_to_stop(trial.curve, completed)
        if reason:
            self._capture_logs(trial)
            self._finish(trial, TrialStatus.EARLY_STOPPED, reason)

    def _succeeded(self, trial: Trial) -> None:
        self._read_curves([trial])  # the last epoch may have been written since this poll's read
        result = runs.result(trial.name, self.backend) or {}
        trial.test_accuracy = result.get("test_accuracy")
        model_name = self.spec.fixed.get("model_name", MODEL_NAME)
        trial.export_path = runs.latest_export(trial.name, model_name, self.backend) or ""
        self._capture_logs(trial)
        self._finish(trial, TrialStatus.SUCCEEDED, "trained and exported" if trial.export_path else
                     "succeeded, but no exported model was found in its folder")

    def _capture_logs(self, trial: Trial) -> None:
        try:
            trial.logs = self.backend.get_job_logs(trial.name, tail=LOG_TAIL_LINES, kind=self.spec.job_kind)
        except Exception as err:
            trial.logs = f"(logs unavailable: {err})"

    def _finish(self, trial: Trial, status: TrialStatus, message: str) -> None:
        """Record the outcome and delete the job: its pods stop, its folder stays."""
        with self._lock:
            trial.status, trial.message = status, message
            trial.finished = time.time()
        try:
            self.backend.delete_job(trial.name, kind=self.spec.job_kind)
        except Exception as err:
            log.warning("could not delete job %s: %s", trial.name, err)
        self._save()

    def _stop_all(self, message: str) -> None:
        for trial in self.trials:
            if trial.status == TrialStatus.RUNNING:
                self._capture_logs(trial)
                self._finish(trial, TrialStatus.STOPPED, message)
            elif trial.status == TrialStatus.PENDING:
                with self._lock:
                    trial.status, trial.message = TrialStatus.STOPPED, message + " (never started)"

    def _notify(self) -> None:
        for callback in self._on_update:
            try:
                callback(self)
            except Exception:  # a broken plot must not break the sweep
                log.exception("sweep update callback failed")

    def _save(self) -> None:
        try:
            self.result().save(self.results_path)
        except OSError as err:
            log.warning("could not save %s: %s", self.results_path, err)

    # -- the same sweep for Katib ----------------------------------------------------------------
    def katib_experiment(self) -> dict[str, Any]:
        """The equivalent Katib Experiment, built by :func:`mnist_lib.manifests.katib_experiment`.

        Katib then runs the trials on the cluster (TFJobs with ``workers`` replicas),
        collects ``validation/epoch_accuracy`` from their event files and applies
        medianstop. The learning rates are this sweep's grid values (Katib's random
        search then draws among them).
        """
        try:
            return manifests.katib_experiment(self.spec, image=self.image)
        except manifests.ManifestError as err:
            raise SweepError(str(err)) from None

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.result().by_status().items())
        return f"Sweep({self.name}: {len(self.trials)} trials, {counts})"


def _as_spec(spec: SweepSpec | str | None, space: SearchSpace | None, fields: dict[str, Any]) -> SweepSpec:
    """``Sweep(spec)`` as it is, or the short form ``Sweep("name", space, search=..., ...)`` as a spec."""
    if isinstance(spec, SweepSpec):
        if space is not None or fields:
            raise SweepError("give Sweep either a SweepSpec or its fields (name, space, search...), not both")
        return spec
    if spec is not None:
        fields["name"] = spec
    if space is not None:
        fields["space"] = space
    return SweepSpec(**fields)


# == promotion to serving =================================================================

def serving_path(model_name: str = MODEL_NAME, backend: Backend | None = None) -> Path:
    """This machine's copy of the served model's folder, ``/outputs/serving/<model>``, brought up to date.

    On the local backend it is ``outputs/serving/<model>`` itself; on a cluster the
    versions are copied here from the volume (changed files only).
    """
    return runs.local_copy(runs.serving_base(model_name), backend)


def promote(trial: Trial, model_base_path: str | None = None, backend: Backend | None = None) -> PurePosixPath:
    """Copy ``trial``'s exported model into ``model_base_path`` as its next version; return it.

    ``model_base_path`` is on the volume (default ``/outputs/serving/<model>``). A running
    server (chapter 06's, or TF Serving) watches that folder; with TF Serving's default
    policy it serves the highest version, so the best model goes live without a restart.
    The copy is made on the volume, in a hidden folder *renamed* into place: a rename is
    atomic, so the server never loads half a model.
    """
    if not isinstance(trial, Trial):
        raise SweepError(f"promote() takes a Trial (e.g. result.best()), got {type(trial).__name__}")
    if trial.status != TrialStatus.SUCCEEDED or not trial.export_path:
        raise SweepError(f"trial {trial.name} is {trial.status} with no exported model: promote a "
                         "succeeded trial, e.g. result.best()")
    source = PurePosixPath(trial.export_path)
    base = model_base_path or runs.serving_base(source.parent.name)
    try:
        return PurePosixPath(runs.put_version(str(source), base, backend=backend))
    except Exception as err:  # not on the volume any more (deleted, another namespace)
        raise SweepError(f"could not copy {source} to {base}: {err}") from None
