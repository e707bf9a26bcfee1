"""Benchmark: time-to-accuracy of the course's models on full MNIST, on this CPU.

    .venv/bin/python -m benchmarks.training [--repeats 1]

Trains, in a fresh process each (as ``python -m mnist_lib.train`` would), the
default CNN and a wider MLP on all 55,000 training images, and reports for each
epoch the cumulative time spent in the training loop (process start, data loading,
evaluation and export excluded) and the validation accuracy, then the test accuracy.

Targets (issue 2): default CNN >= 99.0% test accuracy with <= 60 s of training;
MLP >= 97.5% with <= 10 s. Writes benchmarks/results/training.json. Not a test: the
seconds depend on the machine and on whatever else runs on its cores (recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from mnist_lib import paths
from mnist_lib.config import TrainConfig

RESULTS = paths.COURSE_ROOT / "benchmarks" / "results" / "training.json"

# name: (hyperparameters, target test accuracy, target training seconds)
MODELS = {
    "cnn (course default, 5 epochs)": ({"architecture": "cnn", "epochs": 5}, 0.990, 60.0),
    "mlp 1x512 (5 epochs)": ({"architecture": "mlp", "hidden_layers": 1, "width": 512, "epochs": 5},
                             0.975, 10.0),
}


def run_one(hyperparameters: dict, workdir: Path) -> dict:
    config = TrainConfig.for_run("bench", root=workdir, **hyperparameters)
    done = subprocess.run([sys.executable, "-m", "mnist_lib.train", *config.to_args()],
                          capture_output=True, text=True, cwd=paths.COURSE_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"training failed: {done.stderr[-2000:]}")
    return json.loads((config.model_dir / "result.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    models = []
    for name, (hyperparameters, target_accuracy, target_seconds) in MODELS.items():
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as workdir:
                result = run_one(hyperparameters, Path(workdir))
            epochs = [{"epoch": h["epoch"], "training_seconds": h["cumulative_seconds"],
                       "val_accuracy": round(h["val_accuracy"], 4)} for h in result["history"]]
            row = {
                "model": name, "repeat": repeat, "hyperparameters": hyperparameters,
                "test_accuracy": round(result["test_accuracy"], 4),
                "training_seconds": round(result["training_seconds"], 1),
                "per_epoch": epochs,
                "target": {"test_accuracy": target_accuracy, "training_seconds": target_seconds},
                "target_met": result["test_accuracy"] >= target_accuracy
                and result["training_seconds"] <= target_seconds,
            }
            models.append(row)
            print(f"{name:<34} test accuracy {row['test_accuracy']:.2%} after "
                  f"{row['training_seconds']:.1f} s of training "
                  f"(target >= {target_accuracy:.1%} in <= {target_seconds:.0f} s: "
                  f"{'met' if row['target_met'] else 'NOT met'})", flush=True)
            for e in epochs:
                print(f"    epoch {e['epoch']}: {e['training_seconds']:6.1f} s, "
                      f"validation {e['val_accuracy']:.2%}")
    results = {
        "benchmark": "time-to-accuracy, full MNIST, single process",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "models": models,
    }
    paths.write_json(RESULTS, results)
    print(f"written {paths.relative(RESULTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
