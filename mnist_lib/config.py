"""Training hyperparameters and paths: one dataclass, checked before TensorFlow starts.

The same :class:`TrainConfig` is filled from three places, in increasing priority:
its defaults, ``MNIST_*`` environment variables (handy in a container spec), and
command-line flags (what the manifests pass to every replica). Validation happens
here, in plain Python, so that a typo fails in a fraction of a second with a
message that names the flag, instead of minutes later inside TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mnist_lib import paths, runs
from mnist_lib.checks import check_int, check_learning_rate, check_model_name
from mnist_lib.constants import MODEL_NAME

ARCHITECTURES = ("cnn", "mlp")  # what mnist_lib.model.build_model builds
MAX_HIDDEN_LAYERS = 8
MAX_WIDTH = 4096


class ConfigError(ValueError):
    """A hyperparameter or path is invalid. The message says which and what to do."""


@dataclass
class TrainConfig:
    """Everything one training run needs. Field names match the CLI flags."""

    learning_rate: float = 1e-3
    hidden_layers: int = 1
    width: int = 128
    architecture: str = "cnn"
    epochs: int = 3
    batch_size: int = 128
    seed: int = 42
    model_dir: Path = field(default_factory=lambda: paths.output_dir() / runs.CHECKPOINTS)
    log_dir: Path = field(default_factory=lambda: paths.output_dir() / runs.LOGS)
    export_dir: Path = field(default_factory=lambda: paths.output_dir() / runs.EXPORT)
    model_name: str = MODEL_NAME
    # Train on the first N training images only (0 = all 55,000). For quick demos and tests.
    train_limit: int = 0
    data_dir: Path = field(default_factory=paths.data_dir)

    def __post_init__(self) -> None:
        for name in ("model_dir", "log_dir", "export_dir", "data_dir"):
            setattr(self, name, Path(getattr(self, name)))

    @classmethod
    def for_run(cls, run_name: str, root: Path | str | None = None, **hyperparameters: Any) -> "TrainConfig":
        """A config whose folders are the run's own: ``<root>/<run-name>/{checkpoints,logs,export}``.

        ``root`` defaults to :func:`mnist_lib.paths.output_dir` (``outputs/``); the
        manifests use ``/outputs``, the shared volume. One folder per run, so runs
        never overwrite each other's checkpoints or exports (the 2018 sweep exported
        all nine trials into one folder).
        """
        return cls(**hyperparameters, **runs.folders(run_name, root))

    # -- validation ------------------------------------------------------
    def validate(self, check_paths: bool = True) -> "TrainConfig":
        """Raise :class:`ConfigError` for the first invalid value; return self if all is well.

        ``check_paths=False`` skips creating and probing the folders: for a config
        that will run elsewhere (a pod, whose folders are on the cluster's volume).
        """
        check_learning_rate("--learning-rate", self.learning_rate, ConfigError)
        check_int("--hidden-layers", self.hidden_layers, 0, MAX_HIDDEN_LAYERS,
                  "0 means no hidden dense layer (a linear classifier for the MLP)", ConfigError)
        check_int("--width", self.width, 1, MAX_WIDTH, "units per hidden layer", ConfigError)
        check_int("--epochs", self.epochs, 1, 1000, "passes over the training set", ConfigError)
        check_int("--batch-size", self.batch_size, 1, 60_000, "images per training step", ConfigError)
        check_int("--seed", self.seed, 0, 2**31 - 1, "any non-negative integer", ConfigError)
        check_int("--train-limit", self.train_limit, 0, 60_000, "0 means all training images", ConfigError)
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"--architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}"
            )
        check_model_name("--model-name", self.model_name, ConfigError)
        if check_paths:
            for flag, folder in (("--model-dir", self.model_dir), ("--log-dir", self.log_dir),
                                 ("--export-dir", self.export_dir)):
                _check_writable(flag, folder)
        return self

    def remove_outputs(self) -> None:
        """Delete this run's checkpoints, logs and exports, to train from scratch.

        Without it, training the same run again *resumes* (or, if it finished,
        returns the finished result): that is what a restarted pod should do.
        """
        for folder in (self.model_dir, self.log_dir, self.export_dir):
            shutil.rmtree(folder, ignore_errors=True)

    # -- conversions -----------------------------------------------------
    def to_args(self) -> list[str]:
        """The command-line flags that reproduce this config (used by every manifest).

        Paths are passed as given, so a manifest can say ``/outputs/...`` for the
        shared volume. Every replica of a distributed job gets the same flags:
        the 2018 course passed them to the master only, and its workers crashed.
        """
        args: list[str] = []
        for f in dataclasses.fields(self):
            if f.name == "data_dir":
                continue  # a property of the machine (MNIST_DATA_DIR), not of the run
            args += [f"--{f.name.replace('_', '-')}", str(getattr(self, f.name))]
        return args

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


def _check_writable(flag: str, folder: Path) -> None:
    """Create ``folder`` if needed and prove we can write there, without leaving anything."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{flag} {str(folder)!r} cannot be created: {err.strerror}. "
                          "Choose a folder you can write to.") from None
    if not folder.is_dir():
        raise ConfigError(f"{flag} {str(folder)!r} exists but is not a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {str(folder)!r} is not writable by this user. "
                          "Choose a folder you can write to (or fix its permissions).")


# -- command line and environment ------------------------------------------

def _env_name(field_name: str) -> str:
    return "MNIST_" + field_name.upper()


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lib.train",
        description="Train the course's MNIST model: on this machine, or as one replica of a "
                    "distributed job (TF_CONFIG decides). Every flag can also be set with an "
                    "environment variable MNIST_<FLAG> (e.g. MNIST_LEARNING_RATE).",
    )
    helps = {
        "learning_rate": "Adam learning rate",
        "hidden_layers": f"hidden dense layers, 0-{MAX_HIDDEN_LAYERS}",
        "width": "units per hidden dense layer",
        "architecture": "cnn (default, ~99%%) or mlp (faster, ~98%%)",
        "epochs": "passes over the training set",
        "batch_size": "images per step (global: split across workers)",
        "seed": "random seed for weights and shuffling",
        "model_dir": "checkpoints; training resumes from here",
        "log_dir": "TensorBoard logs",
        "export_dir": "SavedModels for TF Serving: <export-dir>/<model-name>/<version>/",
        "model_name": "name of the served model",
        "train_limit": "use only the first N training images (0 = all)",
    }
    for f in dataclasses.fields(TrainConfig):
        if f.name == "data_dir":
            continue
        kind = {float: float, int: int}.get(type(getattr(defaults, f.name)), str)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=_typed(kind, f.name),
            default=None,
            help=f"{helps.get(f.name, '')} (default: {getattr(defaults, f.name)}; env {_env_name(f.name)})",
        )
    return parser


def _typed(kind, name: str):
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            flag = "--" + name.replace("_", "-")
            what = {float: "a number", int: "a whole number"}.get(kind, "text")
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text!r}") from None

    return convert


def config_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> TrainConfig:
    """Parse flags (falling back to ``MNIST_*`` variables, then defaults) and validate.

    Raises :class:`ConfigError` with a readable message; argparse handles
    unknown flags and non-numbers itself (exit status 2).
    """
    environ = os.environ if environ is None else environ
    parsed = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(parsed, f.name, None)
        if value is None and _env_name(f.name) in environ:
            raw = environ[_env_name(f.name)]
            kind = type(getattr(TrainConfig(), f.name))
            try:
                value = kind(raw) if kind in (int, float) else raw
            except ValueError:
                raise ConfigError(f"environment variable {_env_name(f.name)}={raw!r} is not a valid "
                                  f"{kind.__name__}") from None
        if value is not None:
            values[f.name] = value
    return TrainConfig(**values).validate()
