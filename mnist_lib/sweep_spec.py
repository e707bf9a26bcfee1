"""What a hyperparameter sweep is, as data: its search space, its rules, its trials.

A :class:`SweepSpec` describes an experiment and nothing about where it runs, so
the two things that carry one out take the same spec: :class:`mnist_lib.sweep.Sweep`
runs its trials as jobs on a backend, and :func:`mnist_lib.manifests.katib_experiment`
hands it to Katib on a cluster. It lives in its own module because both of those
import it (and :mod:`mnist_lib.sweep` imports :mod:`mnist_lib.manifests`).

Everything is checked when a spec is built, before any job exists; the values of
each trial are checked again as training flags when its manifest is built
(:func:`mnist_lib.manifests.run_config`), which is where a pod's input is checked.
"""

from __future__ import annotations

import enum
import itertools
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mnist_lib.checks import check_int, is_int, is_learning_rate, is_number
from mnist_lib.config import MAX_HIDDEN_LAYERS, MAX_WIDTH

SEARCHES = ("grid", "random")
JOB_KINDS = ("TFJob", "Job")
SEARCHED = ("learning_rate", "hidden_layers", "width", "epochs")  # what a trial varies
MAX_TRIALS = 100
MAX_PARALLEL = 16


class TrialStatus(enum.StrEnum):
    """A trial's status, in Katib's words (Katib says "Killed" where we say "Stopped")."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    EARLY_STOPPED = "EarlyStopped"
    STOPPED = "Stopped"


FINISHED = frozenset(TrialStatus) - {TrialStatus.PENDING, TrialStatus.RUNNING}


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
        if not lr or len(lr) != 2 or not all(is_learning_rate(v) for v in lr) or lr[0] > lr[1]:
            raise SweepError(f"learning_rate must be a range (low, high) with 0 < low <= high <= 1, "
                             f"e.g. (1e-4, 1e-2); got {self.learning_rate!r}")
        layers = tuple(self.hidden_layers) if isinstance(self.hidden_layers, (tuple, list)) else None
        if not layers or len(layers) != 2 or not all(is_int(v) for v in layers) \
                or not 0 <= layers[0] <= layers[1] <= MAX_HIDDEN_LAYERS:
            raise SweepError(f"hidden_layers must be a range (low, high) of whole numbers with "
                             f"0 <= low <= high <= {MAX_HIDDEN_LAYERS}; got {self.hidden_layers!r}")
        widths = tuple(self.widths) if isinstance(self.widths, (tuple, list)) else (self.widths,)
        if not widths or not all(is_int(w) and 1 <= w <= MAX_WIDTH for w in widths) \
                or len(set(widths)) != len(widths):
            raise SweepError(f"widths must be distinct whole numbers from 1 to {MAX_WIDTH}, "
                             f"e.g. (64, 128); got {self.widths!r}")
        check_int("learning_rate_values", self.learning_rate_values, 1, 10, error=SweepError)
        check_int("epochs", self.epochs, 1, 100, error=SweepError)
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

    def first(self) -> dict[str, Any]:
        """The lowest value of each hyperparameter: what a listed trial does not say."""
        return {"learning_rate": self.learning_rate[0], "hidden_layers": self.hidden_layers[0],
                "width": self.widths[0], "epochs": self.epochs}

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
        check_int("min_trials", self.min_trials, 1, MAX_TRIALS, error=SweepError)
        check_int("start_step", self.start_step, 1, 100, error=SweepError)

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


# == the sweep, as data =================================================================

@dataclass(frozen=True)
class SweepSpec:
    """What a sweep is: which points it tries, how many at a time, as what kind of job.

    - ``search``: ``"grid"`` (every combination) or ``"random"`` (``max_trials`` draws,
      from ``seed``). ``trials`` instead lists the points explicitly:
      ``[{"learning_rate": 0.5}, ...]`` (what a point leaves out is the space's lowest value).
    - ``fixed``: the hyperparameters every trial shares (``architecture``,
      ``train_limit``, ``batch_size``, ``seed``...).
    - ``job_kind``: ``"TFJob"`` with ``workers`` replicas (the default, for a
      cluster with the training operator) or ``"Job"``, one pod per trial.
    - ``early_stopping``: a :class:`MedianStop`, True (its defaults) or False; kept
      as the rule, or None.
    - ``retries``: how often a trial's job restarts a failed pod; ``trial_timeout``:
      seconds after which a still-running trial counts as failed.

    ``name`` is checked where a name is made from it, because each adds its own
    suffix and a pod hostname has at most 63 characters: :class:`mnist_lib.sweep.Sweep`
    (``<name>-<id>-<trial>``) and :func:`mnist_lib.manifests.katib_experiment`
    (Katib's ``<name>-<8 characters>``).
    """

    name: str = "sweep"
    space: SearchSpace = field(default_factory=SearchSpace)
    search: str = "grid"
    max_trials: int | None = None
    trials: Sequence[Mapping[str, Any]] | None = None
    parallel: int = 2
    job_kind: str = "TFJob"
    workers: int = 2
    fixed: Mapping[str, Any] = field(default_factory=dict)
    early_stopping: MedianStop | bool | None = True
    seed: int = 0
    retries: int = 1
    trial_timeout: float = 900.0

    def __post_init__(self) -> None:
        if not isinstance(self.space, SearchSpace):
            raise SweepError(f"space must be a SearchSpace, got {type(self.space).__name__}")
        if self.search not in SEARCHES:
            raise SweepError(f"search must be one of {SEARCHES}, got {self.search!r}")
        if self.job_kind not in JOB_KINDS:
            raise SweepError(f"job_kind must be one of {JOB_KINDS}, got {self.job_kind!r}")
        if self.job_kind == "TFJob":
            workers = check_int("workers", self.workers, 1, 8, error=SweepError)
        else:
            workers = 1  # a Job is one pod: a TFJob's worker count does not apply to it
        check_int("parallel", self.parallel, 1, MAX_PARALLEL, error=SweepError)
        check_int("retries", self.retries, 0, 10, error=SweepError)
        if not (is_number(self.trial_timeout) and self.trial_timeout > 0):
            raise SweepError(f"trial_timeout must be a positive number of seconds, got {self.trial_timeout!r}")
        fixed = dict(self.fixed or {})
        clash = sorted(set(fixed) & set(SEARCHED))
        if clash:
            raise SweepError(f"{clash} are searched, so they cannot also be fixed: set them in the "
                             "SearchSpace (a one-value range fixes them)")
        # Normalised, and copied: a dict changed later must not change the spec.
        object.__setattr__(self, "workers", workers)
        object.__setattr__(self, "trial_timeout", float(self.trial_timeout))
        object.__setattr__(self, "early_stopping", _early_stopping_rule(self.early_stopping))
        object.__setattr__(self, "fixed", fixed)
        object.__setattr__(self, "trials", None if self.trials is None else _listed(self.trials))
        self.points()  # a grid larger than max_trials, or too many trials, is refused now

    @property
    def explicit(self) -> bool:
        """The points were listed, not searched."""
        return self.trials is not None

    def points(self) -> list[dict[str, Any]]:
        """Each trial's searched hyperparameters, in order: the grid, the seeded draws, or the list."""
        if self.trials is not None:
            points = [{**self.space.first(), **point} for point in self.trials]
        elif self.search == "grid":
            points = self.space.grid()
            if self.max_trials is not None and \
                    check_int("max_trials", self.max_trials, 1, MAX_TRIALS, error=SweepError) < len(points):
                raise SweepError(f"the grid has {len(points)} points but max_trials is {self.max_trials}: "
                                 "raise max_trials, narrow the space, or use search='random'")
        else:
            count = len(self.space.grid()) if self.max_trials is None else self.max_trials
            check_int("max_trials", count, 1, MAX_TRIALS, error=SweepError)
            points = self.space.sample(count, self.seed)
        if len(points) > MAX_TRIALS:
            raise SweepError(f"{len(points)} trials is more than {MAX_TRIALS}: narrow the search space")
        return points


def _early_stopping_rule(choice: Any) -> MedianStop | None:
    """True is the default :class:`MedianStop`, False or None no early stopping."""
    if choice is True:
        return MedianStop()
    if choice is False or choice is None:
        return None
    if isinstance(choice, MedianStop):
        return choice
    raise SweepError(f"early_stopping must be True, False or a MedianStop, got {choice!r}")


def _listed(trials: Any) -> tuple[dict[str, Any], ...]:
    """The explicitly listed points, each a dict of hyperparameters."""
    if isinstance(trials, (str, bytes, Mapping)) or not len(trials):
        raise SweepError("trials must be a non-empty list of dicts like {'learning_rate': 0.001}")
    for point in trials:
        if not isinstance(point, Mapping):
            raise SweepError(f"each trial must be a dict of hyperparameters, got {point!r}")
    return tuple(dict(point) for point in trials)
