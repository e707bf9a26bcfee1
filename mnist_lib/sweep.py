"""Hyperparameter sweeps: one small training job per point of a search space.

This is where the 2018 workshop ended ("could you test different parameters?"),
and where its sweep went wrong: a ``sed`` over a YAML template gave the
hyperparameters to the master replica only, and all nine trials exported into
one folder. Here:

- every trial is one job built by :mod:`mnist_lib.manifests` (a TFJob by default,
  or a one-pod Job), so every replica gets the same flags, and each trial has its
  own run folder ``outputs/<trial>/{checkpoints,logs,export}``;
- names and values are validated when the :class:`Sweep` is built, before
  anything is submitted, so a typo loses nothing and no value can reach a manifest
  unchecked;
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
import itertools
import json
import logging
import math
import random
import re
import secrets
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Sequence

from mnist_lib import manifests, paths, runs
from mnist_lib.config import MAX_HIDDEN_LAYERS, MAX_WIDTH, ConfigError

log = logging.getLogger(__name__)

# -- constants -----------------------------------------------------------------------

SEARCHES = ("grid", "random")
JOB_KINDS = ("TFJob", "Job")
SEARCHED = ("learning_rate", "hidden_layers", "width", "epochs")  # what a trial varies
OBJECTIVE = manifests.KATIB_OBJECTIVE  # validation/epoch_accuracy: what train.py writes each epoch
MAX_TRIALS = 100
MAX_PARALLEL = 16
RESULTS_FILE = "sweep.json"
LOG_TAIL_LINES = 40

# A trial's status, in Katib's words (Katib says "Killed" where we say "Stopped").
PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
EARLY_STOPPED, STOPPED = "EarlyStopped", "Stopped"
FINISHED = (SUCCEEDED, FAILED, EARLY_STOPPED, STOPPED)


class SweepError(ValueError):
    """A search space, setting or trial cannot make a valid sweep. The message says what to do."""


# == the search space ================================================================

@dataclass(frozen=True)
class SearchSpace:
    """Which hyperparameters to try.

    ``learning_rate`` is a range on a *log* scale: 1e-4 to 1e-2 spans two orders
    of magnitude, and the interesting differences are ratios (0.001 vs 0.003),
    not differences. A grid takes ``learning_rate_values`` points evenly spaced in
    log10; random search draws log-uniformly. ``hidden_layers`` is an inclusive
    range of whole numbers; ``widths`` the layer sizes to try; every trial trains
    ``epochs`` epochs.
    """

    learning_rate: tuple[float, float] = (1e-4, 1e-2)
    hidden_layers: tuple[int, int] = (1, 3)
    learning_rate_values: int = 3
    widths: tuple[int, ...] = (128,)
    epochs: int = 3

    def __post_init__(self) -> None:
        lr = tuple(self.learning_rate) if isinstance(self.learning_rate, (tuple, list)) else None
        if not lr or len(lr) != 2 or not all(_is_number(v) for v in lr) \
                or not 0 < lr[0] <= lr[1] <= 1:
            raise SweepError(f"learning_rate must be a range (low, high) with 0 < low <= high <= 1, "
                             f"e.g. (1e-4, 1e-2); got {self.learning_rate!r}")
        layers = tuple(self.hidden_layers) if isinstance(self.hidden_layers, (tuple, list)) else None
        if not layers or len(layers) != 2 or not all(_is_int(v) for v in layers) \
                or not 0 <= layers[0] <= layers[1] <= MAX_HIDDEN_LAYERS:
            raise SweepError(f"hidden_layers must be a range (low, high) of whole numbers with "
                             f"0 <= low <= high <= {MAX_HIDDEN_LAYERS}; got {self.hidden_layers!r}")
        widths = tuple(self.widths) if isinstance(self.widths, (tuple, list)) else (self.widths,)
        if not widths or not all(_is_int(w) and 1 <= w <= MAX_WIDTH for w in widths) \
                or len(set(widths)) != len(widths):
            raise SweepError(f"widths must be distinct whole numbers from 1 to {MAX_WIDTH}, "
                             f"e.g. (64, 128); got {self.widths!r}")
        _check_int("learning_rate_values", self.learning_rate_values, 1, 10)
        _check_int("epochs", self.epochs, 1, 100)
        # Normalise (lists from a widget, numpy numbers) so the space is hashable and printable.
        object.__setattr__(self, "learning_rate", (float(lr[0]), float(lr[1])))
        object.__setattr__(self, "hidden_layers", (int(layers[0]), int(layers[1])))
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))

    def learning_rates(self) -> list[float]:
        """The grid's learning rates: evenly spaced in log10, rounded to 2 significant digits."""
        low, high = (math.log10(v) for v in self.learning_rate)
        n = self.learning_rate_values if high > low else 1
        values = [_round(10 ** (low + (high - low) * i / max(1, n - 1))) for i in range(n)]
        return sorted(set(values))

    def layer_values(self) -> list[int]:
        return list(range(self.hidden_layers[0], self.hidden_layers[1] + 1))

    def grid(self) -> list[dict[str, Any]]:
        """Every combination, learning rate slowest."""
        return [{"learning_rate": lr, "hidden_layers": layers, "width": width, "epochs": self.epochs}
                for lr, layers, width in itertools.product(self.learning_rates(), self.layer_values(),
                                                           self.widths)]

    def sample(self, count: int, seed: int = 0) -> list[dict[str, Any]]:
        """``count`` random points: learning rate log-uniform, layers and width uniform."""
        rng = random.Random(seed)
        low, high = (math.log10(v) for v in self.learning_rate)
        return [{"learning_rate": _round(10 ** rng.uniform(low, high)),
                 "hidden_layers": rng.randint(*self.hidden_layers),
                 "width": rng.choice(self.widths), "epochs": self.epochs}
                for _ in range(count)]

    def describe(self) -> str:
        lo, hi = self.learning_rate
        layers = "{}-{}".format(*self.hidden_layers) if self.hidden_layers[0] != self.hidden_layers[1] \
            else str(self.hidden_layers[0])
        widths = ", ".join(map(str, self.widths))
        return (f"learning rate {lo:g} to {hi:g} (log scale), {layers} hidden layer(s) of {widths}, "
                f"{self.epochs} epoch(s)")

    def as_dict(self) -> dict[str, Any]:
        return {"learning_rate": list(self.learning_rate), "hidden_layers": list(self.hidden_layers),
                "learning_rate_values": self.learning_rate_values, "widths": list(self.widths),
                "epochs": self.epochs}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(what: str, value: Any, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise SweepError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _round(value: float) -> float:
    """0.0031622776 -> 0.0032: readable in a legend, and still on the log scale."""
    return float(f"{value:.2g}")


# == early stopping: the median-stop rule ==============================================

@dataclass(frozen=True)
class MedianStop:
    """Stop a trial whose best accuracy by epoch k is below the median of completed trials at k.

    The rule Katib calls ``medianstop``. It needs ``min_trials`` completed trials to
    compare with, and never judges before epoch ``start_step``. Cheap and
    conservative: it only stops trials that are clearly worse than what already
    finished, which is where a sweep wastes most of its time (a learning rate that
    diverges trains just as long as a good one).
    """

    min_trials: int = 2
    start_step: int = 1

    def __post_init__(self) -> None:
        _check_int("min_trials", self.min_trials, 1, MAX_TRIALS)
        _check_int("start_step", self.start_step, 1, 100)

    def reason_to_stop(self, curve: Sequence[tuple[int, float]],
                       completed: Sequence[Sequence[tuple[int, float]]]) -> str | None:
        """Why ``curve`` should stop now, or None. Curves are ``[(epoch, accuracy), ...]``."""
        if not curve:
            return None
        step = curve[-1][0]
        if step < self.start_step:
            return None
        at_step = [dict(c)[step] for c in completed if step in dict(c)]
        if len(at_step) < self.min_trials:
            return None
        best = max(value for s, value in curve if s <= step)
        median = statistics.median(at_step)
        if best < median:
            return (f"best validation accuracy {best:.3f} by epoch {step} is below the median "
                    f"{median:.3f} of {len(at_step)} completed trials at that epoch")
        return None


# == trials ==============================================================================

@dataclass
class Trial:
    """One point of the search space, trained as one job. Also a row of ``sweep.json``."""

    name: str
    params: dict[str, Any]
    status: str = PENDING
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
    def finished_ok(self) -> bool:
        return self.status == SUCCEEDED

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
        done = [t for t in self.trials if t.status == SUCCEEDED and t.val_accuracy is not None]
        if not done:
            statuses = ", ".join(f"{t.name}: {t.status}" for t in self.trials)
            raise SweepError(f"sweep {self.name} has no succeeded trial to choose from ({statuses})")
        return max(done, key=lambda t: t.val_accuracy)

    def by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
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
        full = [t.seconds for t in self.trials if t.status == SUCCEEDED and t.seconds]
        if not full:
            return 0.0
        typical = statistics.median(full)
        return sum(max(0.0, typical - t.seconds) for t in self.trials
                   if t.status == EARLY_STOPPED and t.seconds is not None)

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
        runs = sorted((p for p in paths.output_dir().glob(f"{where.name}-*/{RESULTS_FILE}")
                       if re.fullmatch(rf"{re.escape(where.name)}-[0-9a-f]{{4}}", p.parent.name)),
                      key=lambda p: p.stat().st_mtime)
        candidates = runs[-1:] or candidates
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


class Sweep:
    """A set of trials, run as jobs on a backend, at most ``parallel`` at a time.

    ``name`` + a fresh 4-character id names this run (``ch07-sweep-3fa2``), and the
    trials are ``<run>-00``, ``<run>-01``...: unique, so a sweep run again never
    collides with (or resumes from the checkpoints of) an earlier one, on a laptop
    or on a cluster where finished jobs stay for a day.

    - ``search``: ``"grid"`` (every combination) or ``"random"`` (``max_trials`` draws).
      ``trials`` instead lists the points explicitly: ``[{"learning_rate": 0.5}, ...]``.
    - ``fixed``: the hyperparameters every trial shares (``architecture``,
      ``train_limit``, ``batch_size``, ``seed``...).
    - ``job_kind``: ``"TFJob"`` with ``workers`` replicas (the default, for a
      cluster with the training operator) or ``"Job"``, one pod per trial.
    - ``early_stopping``: a :class:`MedianStop`, True (its defaults) or False.
    - ``customize_job(trial, manifest) -> manifest``: a last change to each trial's
      manifest (node selectors, resources, an environment variable...).

    Everything is checked here; nothing is submitted until :meth:`run` or :meth:`start`.
    """

    def __init__(self, name: str = "sweep", space: SearchSpace | None = None, *, search: str = "grid",
                 max_trials: int | None = None, parallel: int = 2, job_kind: str = "TFJob",
                 workers: int = 2, fixed: Mapping[str, Any] | None = None,
                 early_stopping: MedianStop | bool = True, seed: int = 0,
                 trials: Sequence[Mapping[str, Any]] | None = None, backend: Any = None,
                 customize_job: Callable[[Trial, dict[str, Any]], dict[str, Any]] | None = None,
                 retries: int = 1, poll_interval: float = 1.0, trial_timeout: float = 900.0,
                 image: str | None = None) -> None:
        self.space = space if space is not None else SearchSpace()
        if not isinstance(self.space, SearchSpace):
            raise SweepError(f"space must be a SearchSpace, got {type(space).__name__}")
        if search not in SEARCHES:
            raise SweepError(f"search must be one of {SEARCHES}, got {search!r}")
        if job_kind not in JOB_KINDS:
            raise SweepError(f"job_kind must be one of {JOB_KINDS}, got {job_kind!r}")
        self.search, self.job_kind, self.seed = search, job_kind, seed
        self.workers = _check_int("workers", workers, 1, 8) if job_kind == "TFJob" else 1
        self.parallel = _check_int("parallel", parallel, 1, MAX_PARALLEL)
        self.retries = _check_int("retries", retries, 0, 10)
        if not (_is_number(poll_interval) and poll_interval > 0) or \
                not (_is_number(trial_timeout) and trial_timeout > 0):
            raise SweepError("poll_interval and trial_timeout must be positive numbers of seconds")
        self.poll_interval, self.trial_timeout = float(poll_interval), float(trial_timeout)
        self.early_stopping = (MedianStop() if early_stopping is True else
                               early_stopping if isinstance(early_stopping, MedianStop) else None)
        if early_stopping not in (True, False, None) and not isinstance(early_stopping, MedianStop):
            raise SweepError(f"early_stopping must be True, False or a MedianStop, got {early_stopping!r}")
        self.fixed = dict(fixed or {})
        clash = sorted(set(self.fixed) & set(SEARCHED))
        if clash:
            raise SweepError(f"{clash} are searched, so they cannot also be fixed: set them in the "
                             "SearchSpace (a one-value range fixes them)")

        # The run's name: <name>-<id>, trials <name>-<id>-NN; every pod name must fit in 63 characters.
        suffix = f"-worker-{self.workers - 1}" if job_kind == "TFJob" else ""
        try:
            manifests.check_name(name, "sweep name", f"-xxxx-00{suffix}")
        except manifests.ManifestError as err:
            raise SweepError(str(err)) from None
        self.base_name = name
        self.name = f"{name}-{secrets.token_hex(2)}"

        self.explicit = trials is not None  # the points were listed, not searched
        points = self._points(trials, max_trials)
        self.backend = backend
        self._customize = customize_job
        self.image = image
        self.trials = [Trial(f"{self.name}-{i:02d}", params) for i, params in enumerate(points)]
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
    def _points(self, trials: Sequence[Mapping[str, Any]] | None, max_trials: int | None) -> list[dict]:
        if trials is not None:
            if isinstance(trials, (str, bytes, Mapping)) or not len(trials):
                raise SweepError("trials must be a non-empty list of dicts like {'learning_rate': 0.001}")
            defaults = {"learning_rate": self.space.learning_rate[0],
                        "hidden_layers": self.space.hidden_layers[0],
                        "width": self.space.widths[0], "epochs": self.space.epochs}
            points = []
            for point in trials:
                if not isinstance(point, Mapping):
                    raise SweepError(f"each trial must be a dict of hyperparameters, got {point!r}")
                points.append({**defaults, **point})
        elif self.search == "grid":
            points = self.space.grid()
            if max_trials is not None and _check_int("max_trials", max_trials, 1, MAX_TRIALS) < len(points):
                raise SweepError(f"the grid has {len(points)} points but max_trials is {max_trials}: "
                                 "raise max_trials, narrow the space, or use search='random'")
        else:
            count = len(self.space.grid()) if max_trials is None else max_trials
            points = self.space.sample(_check_int("max_trials", count, 1, MAX_TRIALS), self.seed)
        if len(points) > MAX_TRIALS:
            raise SweepError(f"{len(points)} trials is more than {MAX_TRIALS}: narrow the search space")
        return points

    def _manifest(self, trial: Trial) -> dict[str, Any]:
        """The trial's job, built by the same functions as every other manifest of the course."""
        try:
            config = manifests.run_config(trial.name, **self.fixed, **trial.params)
            if self.job_kind == "TFJob":  # no namespace: the backend puts the job in its own
                job = manifests.tfjob(trial.name, config, workers=self.workers, image=self.image)
                job["spec"]["runPolicy"]["backoffLimit"] = self.retries
            else:
                job = manifests.training_job(trial.name, config, image=self.image)
                job["spec"]["backoffLimit"] = self.retries
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
            from mnist_lib.cluster import get_backend

            self.backend = get_backend()
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
                name=self.name, search="list" if self.explicit else self.search,
                space=self.space.as_dict(), settings=self.settings(),
                trials=[Trial.from_dict(t.to_dict()) for t in self.trials],
                started=self.started, finished=self.finished, path=str(self.results_path))

    def settings(self) -> dict[str, Any]:
        return {"job_kind": self.job_kind, "workers": self.workers, "parallel": self.parallel,
                "fixed": self.fixed, "seed": self.seed, "retries": self.retries,
                "early_stopping": dataclasses.asdict(self.early_stopping) if self.early_stopping else None,
                "backend": getattr(self.backend, "name", None)}

    # -- one pass of the loop ------------------------------------------------------------------
    def _launch_pending(self) -> None:
        running = sum(t.status == RUNNING for t in self.trials)
        for trial in self.trials:
            if running >= self.parallel or self._stop.is_set():
                return
            if trial.status != PENDING:
                continue
            # A fresh folder: a leftover checkpoint would make training "resume" a finished run.
            runs.clear(trial.name, self.backend)
            with self._lock:
                trial.started = time.time()
                try:
                    self.backend.create_job(trial.manifest)
                    trial.status = RUNNING
                    running += 1
                except Exception as err:  # e.g. the cluster refused it: this trial fails, not the sweep
                    self._finish(trial, FAILED, f"could not submit: {err}")
            self._save()

    def _poll_running(self) -> None:
        from mnist_lib.cluster import FAILED as JOB_FAILED, SUCCEEDED as JOB_SUCCEEDED

        running = [t for t in self.trials if t.status == RUNNING]
        self._read_curves(running)
        for trial in running:
            try:
                status = self.backend.get_job(trial.name, kind=self.job_kind)
            except Exception as err:
                self._finish(trial, FAILED, f"lost track of its job: {err}")
                continue
            if status.phase == JOB_SUCCEEDED:
                self._succeeded(trial)
            elif status.phase == JOB_FAILED:
                failure = self.backend.failure(status)
                trial.logs = failure.logs
                self._finish(trial, FAILED, str(failure).splitlines()[0])
            elif trial.seconds is not None and trial.seconds > self.trial_timeout:
                self._capture_logs(trial)
                self._finish(trial, FAILED, f"still running after {self.trial_timeout:.0f} s (trial_timeout)")
            elif self.early_stopping is not None:
                completed = [t.curve for t in self.trials if t.status == SUCCEEDED]
                reason = self.early_stopping.reason_to_stop(trial.curve, completed)
                if reason:
                    self._capture_logs(trial)
                    self._finish(trial, EARLY_STOPPED, reason)

    def _succeeded(self, trial: Trial) -> None:
        self._read_curves([trial])  # the last epoch may have been written since this poll's read
        result = runs.result(trial.name, self.backend) or {}
        trial.test_accuracy = result.get("test_accuracy")
        trial.export_path = runs.latest_export(trial.name, self._model_name(), self.backend) or ""
        self._capture_logs(trial)
        self._finish(trial, SUCCEEDED, "trained and exported" if trial.export_path else
                     "succeeded, but no exported model was found in its folder")

    def _capture_logs(self, trial: Trial) -> None:
        try:
            trial.logs = self.backend.get_job_logs(trial.name, tail=LOG_TAIL_LINES, kind=self.job_kind)
        except Exception as err:
            trial.logs = f"(logs unavailable: {err})"

    def _finish(self, trial: Trial, status: str, message: str) -> None:
        """Record the outcome and delete the job: its pods stop, its folder stays."""
        with self._lock:
            trial.status, trial.message = status, message
            trial.finished = time.time()
        try:
            self.backend.delete_job(trial.name, kind=self.job_kind)
        except Exception as err:
            log.warning("could not delete job %s: %s", trial.name, err)
        self._save()

    def _stop_all(self, message: str) -> None:
        for trial in self.trials:
            if trial.status == RUNNING:
                self._capture_logs(trial)
                self._finish(trial, STOPPED, message)
            elif trial.status == PENDING:
                with self._lock:
                    trial.status, trial.message = STOPPED, message + " (never started)"

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

    def _model_name(self) -> str:
        return self.fixed.get("model_name", "mnist")

    # -- the same sweep for Katib ----------------------------------------------------------------
    def katib_experiment(self) -> dict[str, Any]:
        """The equivalent Katib Experiment, built by :func:`mnist_lib.manifests.katib_experiment`.

        Katib then runs the trials on the cluster (TFJobs with ``workers`` replicas),
        collects ``validation/epoch_accuracy`` from their event files and applies
        medianstop. The learning rates are this sweep's grid values (Katib's random
        search then draws among them).
        """
        if len(self.space.widths) != 1:
            raise SweepError("the Katib manifest sweeps learning rate and hidden layers; fix the width "
                             "to one value (SearchSpace(widths=(128,)))")
        config = manifests.run_config(self.base_name, **self.fixed, width=self.space.widths[0],
                                      epochs=self.space.epochs)
        return manifests.katib_experiment(
            self.base_name, config, learning_rates=self.space.learning_rates(),
            hidden_layers=self.space.layer_values(), algorithm=self.search,
            max_trials=len(self.trials), parallel_trials=self.parallel,
            workers=max(1, self.workers), early_stopping=self.early_stopping is not None)

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.result().by_status().items())
        return f"Sweep({self.name}: {len(self.trials)} trials, {counts})"


# == promotion to serving =================================================================

def serving_path(model_name: str = runs.DEFAULT_MODEL, backend: Any = None) -> Path:
    """This machine's copy of the served model's folder, ``/outputs/serving/<model>``, brought up to date.

    On the local backend it is ``outputs/serving/<model>`` itself; on a cluster the
    versions are copied here from the volume (changed files only).
    """
    return runs.local_copy(runs.serving_base(model_name), backend)


def promote(trial: Trial, model_base_path: str | None = None, backend: Any = None) -> PurePosixPath:
    """Copy ``trial``'s exported model into ``model_base_path`` as its next version; return it.

    ``model_base_path`` is on the volume (default ``/outputs/serving/<model>``). A running
    server (chapter 06's, or TF Serving) watches that folder; with TF Serving's default
    policy it serves the highest version, so the best model goes live without a restart.
    The copy is made on the volume, in a hidden folder *renamed* into place: a rename is
    atomic, so the server never loads half a model.
    """
    if not isinstance(trial, Trial):
        raise SweepError(f"promote() takes a Trial (e.g. result.best()), got {type(trial).__name__}")
    if trial.status != SUCCEEDED or not trial.export_path:
        raise SweepError(f"trial {trial.name} is {trial.status} with no exported model: promote a "
                         "succeeded trial, e.g. result.best()")
    source = PurePosixPath(trial.export_path)
    base = model_base_path or runs.serving_base(source.parent.name)
    try:
        return PurePosixPath(runs.put_version(str(source), base, backend=backend))
    except Exception as err:  # not on the volume any more (deleted, another namespace)
        raise SweepError(f"could not copy {source} to {base}: {err}") from None
