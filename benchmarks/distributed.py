"""Benchmark: one epoch as a 2-worker local TFJob, against one plain process.

    .venv/bin/python -m benchmarks.distributed [--repeats 2] [--epochs 1]

The same training (MLP, all 55,000 images, one epoch) three ways, each from a
fresh start so nothing resumes from a checkpoint:

- ``single``: ``python -m mnist_lib.train`` in one process, as chapter 03's pod runs;
- ``multi_worker``: a TFJob of 2 workers on the local backend (multi-worker mirrored);
- ``parameter_server``: a TFJob of chief + 1 PS + 2 workers (for information).

For each: ``wall_seconds`` from start (or submit) until the run has finished,
including Python and TensorFlow start-up, and ``training_seconds``, the training
loop alone as the chief measured it. Target: the 2-worker job's wall time at
most 2x the single process's. Writes benchmarks/results/distributed.json. Not a
test: the numbers depend on the machine and on whoever else uses its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import when_and_where
from mnist_lib import paths

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.json"
TARGET_RATIO = 2.0


def single(epochs: int, root: Path) -> dict[str, float]:
    """One plain training process."""
    run = root / f"single-{time.monotonic_ns()}"
    args = ["--architecture", "mlp", "--epochs", str(epochs), "--model-dir", str(run / "checkpoints"),
            "--log-dir", str(run / "logs"), "--export-dir", str(run / "export")]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mnist_lib.train", *args], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"single-process training failed:\n{done.stderr[-2000:]}")
    result = json.loads((run / "checkpoints" / "result.json").read_text())
    return {"wall_seconds": wall, "training_seconds": result["training_seconds"],
            "test_accuracy": result["test_accuracy"]}


def tfjob(backend, epochs: int, parameter_servers: int) -> dict[str, float]:
    """One TFJob on the local backend, from submit to Succeeded."""
    from mnist_lib import manifests

    name = f"bench-{'ps' if parameter_servers else 'mw'}-{time.monotonic_ns() % 10**8}"
    config = manifests.run_config(name, architecture="mlp", epochs=epochs)
    started = time.perf_counter()
    backend.create_job(manifests.tfjob(name, config, workers=2, parameter_servers=parameter_servers))
    backend.wait_for_job_conditions(name, timeout=1200, polling_interval=0.2, progress=False)
    wall = time.perf_counter() - started
    result = backend.read_result(config)
    backend.delete_job(name)
    return {"wall_seconds": wall, "training_seconds": result["training_seconds"],
            "test_accuracy": result["test_accuracy"]}


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (median reported)")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        os.environ["MNIST_OUTPUT_DIR"] = tmp  # before the backend maps /outputs
        from mnist_lib.cluster.local import LocalBackend

        backend = LocalBackend(state_dir=Path(tmp) / "state")
        runs: dict[str, list] = {"single": [], "multi_worker": [], "parameter_server": []}
        for _ in range(args.repeats):  # interleaved, so a burst of load hits all three alike
            runs["single"].append(single(args.epochs, Path(tmp)))
            runs["multi_worker"].append(tfjob(backend, args.epochs, parameter_servers=0))
            runs["parameter_server"].append(tfjob(backend, args.epochs, parameter_servers=1))
        backend.shutdown()

    summary = {name: median(r) for name, r in runs.items()}
    ratio = summary["multi_worker"]["wall_seconds"] / summary["single"]["wall_seconds"]
    report = {
        "what": f"MLP, 55,000 images, {args.epochs} epoch(s): 2-worker local TFJob vs one process",
        **when_and_where(),
        "repeats": args.repeats,
        "median": summary,
        "runs": runs,
        "multi_worker_wall_ratio": round(ratio, 2),
        "multi_worker_training_ratio": round(summary["multi_worker"]["training_seconds"]
                                             / summary["single"]["training_seconds"], 2),
        "target_wall_ratio_at_most": TARGET_RATIO,
        "target_met": ratio <= TARGET_RATIO,
    }
    paths.write_json(RESULTS, report)
    print(f"{'':18}{'wall s':>9}{'training s':>12}{'test acc':>10}")
    for name, m in summary.items():
        print(f"{name:18}{m['wall_seconds']:>9.1f}{m['training_seconds']:>12.1f}{m['test_accuracy']:>10.4f}")
    print(f"2-worker / single wall time: {ratio:.2f}x (target <= {TARGET_RATIO}x) -> {RESULTS}")


if __name__ == "__main__":
    main()
