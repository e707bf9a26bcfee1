"""Benchmark: the time one deleted worker costs a multi-worker training.

    .venv/bin/python -m benchmarks.lost_pod [--repeats 2] [--backend local|kubernetes] [--namespace bench-lost]

Chapter 04's fault: a 2-worker Indexed Job (MLP, all 55,000 images, 3 epochs), and worker 1's pod
deleted (``backend.delete_pod``, as ``kubectl delete pod``) as soon as worker 0 has logged
epoch 1. Its ``podFailurePolicy`` replaces the pod, worker 0 (which lost its peer) too, and both
resume from the epoch-1 checkpoint. Measured, each from submit to Succeeded:

- ``undisturbed``: the same job with no fault;
- ``deleted_worker``: with the fault; ``after_deletion_seconds`` from the deletion to Succeeded.

``lost_seconds`` is the difference of the medians: the epoch under way when the pod went,
the processes' start-up (TensorFlow import, cluster setup) and, on a cluster, the pod's
rescheduling. Target: under one epoch plus 30 s. On ``--backend kubernetes`` it needs a
cluster (``KUBECONFIG``) and the course image on it; without one it says so and writes nothing.
Writes benchmarks/results/lost_pod_<backend>.json. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import when_and_where
from mnist_lib import paths

RESULTS = Path(__file__).resolve().parent / "results"
EPOCHS = 3
TARGET_EXTRA_SECONDS = 30.0  # beyond the one epoch a lost pod always costs


def run(backend, name: str, fault: bool) -> dict[str, float]:
    from mnist_lib import manifests

    config = manifests.run_config(name, architecture="mlp", epochs=EPOCHS)
    backend.delete_job(name)
    backend.clear_outputs(config)
    started = time.perf_counter()
    backend.create_job(manifests.indexed_job(name, config, workers=2, namespace=backend.namespace))
    deleted = None
    if fault:
        backend.wait_for_log(name, "epoch 1/", index=0, timeout=900)
        backend.delete_pod(name, index=1)
        deleted = time.perf_counter()
    status = backend.wait_for_job_conditions(name, timeout=1800, polling_interval=0.5, progress=False)
    wall = time.perf_counter() - started
    result = backend.read_result(config)
    backend.delete_job(name)
    history = result["history"]
    measured = {"wall_seconds": round(wall, 1), "test_accuracy": result["test_accuracy"],
                "epoch_seconds": round(statistics.median(h["seconds"] for h in history), 2),
                "failed_pods": status.replicas["Pod"].failed, "resumed_from_epoch": result["resumed_from_epoch"]}
    if deleted is not None:
        measured["after_deletion_seconds"] = round(time.perf_counter() - deleted, 1)
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (median reported)")
    parser.add_argument("--backend", choices=["local", "kubernetes"], default="local")
    parser.add_argument("--namespace", default="bench-lost")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-lost-pod-") as tmp:
        os.environ["MNIST_OUTPUT_DIR"] = tmp  # before the backend maps /outputs
        from mnist_lib import cluster, manifests

        if args.backend == "local":
            from mnist_lib.cluster.local import LocalBackend

            backend = LocalBackend(namespace=args.namespace, state_dir=Path(tmp) / "state")
        else:
            try:
                backend = cluster.get_backend("kubernetes", namespace=args.namespace)
                backend.apply([manifests.namespace(args.namespace), manifests.volume_claim()])
            except cluster.ClusterError as err:
                print(f"skipped: no cluster to measure on ({str(err).splitlines()[0]})")
                return 0
        runs: dict[str, list] = {"undisturbed": [], "deleted_worker": []}
        try:
            for i in range(args.repeats):  # interleaved, so a burst of load hits both alike
                runs["undisturbed"].append(run(backend, f"bench-calm-{i}", fault=False))
                runs["deleted_worker"].append(run(backend, f"bench-lost-{i}", fault=True))
        finally:
            if args.backend == "local":
                backend.shutdown()
            else:
                backend.delete([manifests.namespace(args.namespace)])

    def med(kind: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[kind]), 2)

    lost = med("deleted_worker", "wall_seconds") - med("undisturbed", "wall_seconds")
    epoch = med("undisturbed", "epoch_seconds")
    report = {
        "what": f"2-worker Indexed Job, MLP, 55,000 images, {EPOCHS} epochs; worker 1's pod deleted after epoch 1",
        "backend": args.backend,
        **when_and_where(),
        "repeats": args.repeats,
        "runs": runs,
        "median_wall_seconds": {kind: med(kind, "wall_seconds") for kind in runs},
        "median_epoch_seconds": epoch,
        "lost_seconds": round(lost, 1),
        "accuracy_difference": round(abs(med("deleted_worker", "test_accuracy")
                                         - med("undisturbed", "test_accuracy")), 4),
        "target_lost_seconds_at_most": round(epoch + TARGET_EXTRA_SECONDS, 1),
        "target_met": lost <= epoch + TARGET_EXTRA_SECONDS,
    }
    out = RESULTS / f"lost_pod_{args.backend}.json"
    paths.write_json(out, report)
    print(f"undisturbed {report['median_wall_seconds']['undisturbed']:.1f} s, with a deleted worker "
          f"{report['median_wall_seconds']['deleted_worker']:.1f} s: {lost:.1f} s lost "
          f"(an epoch is {epoch:.1f} s; target <= {report['target_lost_seconds_at_most']} s) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
