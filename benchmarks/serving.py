"""Benchmark: how fast the local model server answers, against calling the model directly.

    .venv/bin/python -m benchmarks.serving [--architectures cnn mlp] [--requests 1000]

For each architecture, an (untrained: same cost) model is exported with the
course's exporter and served by ``python -m mnist_lib.serve`` in its own
process, as it would run beside a notebook. Then, over loopback:

- ``in_process``: the limit, ``model(x)`` and the exported signature called
  directly in this process (single image latency, batch-256 throughput);
- ``grpc_single``: one image per request through :class:`PredictionClient`
  (request building, gRPC, server checks, model, response parsing), p50/p99;
- ``grpc_batch_256``: images per second at 256 images per request, from one
  client thread and from two;
- ``rest_single``: one image per ``:predict`` JSON request (requests.Session), p50/p99;
- ``client_import_seconds``: ``import mnist_lib.predict`` in a fresh interpreter
  (median of 5), next to ``import tensorflow_serving.apis.predict_pb2`` the usual way.

Targets: gRPC p50 <= 1 ms, p99 <= 3 ms; >= 40,000 images/s at batch 256.
Writes benchmarks/results/serving.json and prints a table. Not a test: the
numbers depend on the machine and on whoever else uses its two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mnist_lib import paths
from mnist_lib.cluster.local import free_port

RESULTS = paths.COURSE_ROOT / "benchmarks" / "results" / "serving.json"
TARGETS = {"grpc_p50_ms": 1.0, "grpc_p99_ms": 3.0, "batch_256_images_per_second": 40_000}
BATCH = 256


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3), "requests": len(ms)}


def latencies(call, requests: int, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def throughput(call, batch: int, seconds: float, threads: int = 1) -> float:
    """Images per second with ``threads`` callers each sending batches back to back."""
    call()
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < stop:
            call()
            counts[index] += batch

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return round(sum(counts) / (time.perf_counter() - started))


def import_seconds(statement: str, runs: int) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True, cwd=paths.COURSE_ROOT).stdout.split()[-1])
             for _ in range(runs)]
    return round(statistics.median(times), 3)


def start_server(base_path: Path) -> tuple[subprocess.Popen, int, int]:
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_lib.serve", "--port", str(grpc_port), "--rest_api_port",
         str(rest_port), "--model_name", "mnist", "--model_base_path", str(base_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=paths.COURSE_ROOT)
    for line in process.stdout:
        if line.startswith("Press Ctrl-C"):
            return process, grpc_port, rest_port
    raise RuntimeError(f"the server exited with status {process.wait()}")


def bench_architecture(architecture: str, export_root: Path, requests_count: int,
                       seconds: float) -> dict[str, object]:
    import requests
    import tensorflow as tf

    from mnist_lib.model import build_model, export_for_serving, load_exported
    from mnist_lib.predict import PredictionClient

    rng = np.random.default_rng(0)
    one = rng.random((1, 28, 28), dtype=np.float32)
    batch = rng.random((BATCH, 28, 28), dtype=np.float32)
    model = build_model(architecture)
    path = export_for_serving(model, export_root / architecture, "mnist")
    signature = load_exported(path)
    one_tensor, batch_tensor = tf.constant(one), tf.constant(batch)
    result: dict[str, object] = {"architecture": architecture,
                                 "parameters": int(model.count_params())}

    print(f"== {architecture}: in-process limit")
    result["in_process"] = {
        "model_call_single": percentiles(latencies(lambda: model(one_tensor), requests_count)),
        "signature_call_single": percentiles(latencies(
            lambda: signature(images=one_tensor)["probabilities"].numpy(), requests_count)),
        "model_call_batch_256_images_per_second": throughput(
            lambda: model(batch_tensor).numpy(), BATCH, seconds),
    }

    print(f"== {architecture}: server in its own process (python -m mnist_lib.serve)")
    process, grpc_port, rest_port = start_server(path.parent)
    try:
        with PredictionClient("127.0.0.1", grpc_port) as client:
            client.check_signature()
            result["grpc_single"] = percentiles(latencies(lambda: client.predict(one), requests_count))
            result["grpc_batch_256"] = {
                "images_per_second_1_thread": throughput(lambda: client.predict_batch(batch, BATCH),
                                                         BATCH, seconds),
                "images_per_second_2_threads": throughput(lambda: client.predict_batch(batch, BATCH),
                                                          BATCH, seconds, threads=2),
            }
        url = f"http://127.0.0.1:{rest_port}/v1/models/mnist:predict"
        body = json.dumps({"instances": one.tolist()})
        with requests.Session() as session:
            def rest_call() -> None:
                response = session.post(url, data=body, timeout=10)
                response.raise_for_status()
            result["rest_single"] = percentiles(latencies(rest_call, max(100, requests_count // 3)))
    finally:
        process.terminate()
        process.wait(timeout=30)
    return result


def print_table(results: dict[str, object]) -> None:
    print(f"\n{'':34s}" + "".join(f"{r['architecture']:>22s}" for r in results["models"]))

    def row(label: str, get) -> None:
        print(f"{label:34s}" + "".join(f"{get(r):>22s}" for r in results["models"]))

    row("model(x), 1 image p50 / p99 ms", lambda r: "{p50_ms:.3f} / {p99_ms:.3f}".format(
        **r["in_process"]["model_call_single"]))
    row("signature, 1 image p50 / p99 ms", lambda r: "{p50_ms:.3f} / {p99_ms:.3f}".format(
        **r["in_process"]["signature_call_single"]))
    row("gRPC, 1 image p50 / p99 ms", lambda r: "{p50_ms:.3f} / {p99_ms:.3f}".format(**r["grpc_single"]))
    row("REST, 1 image p50 / p99 ms", lambda r: "{p50_ms:.3f} / {p99_ms:.3f}".format(**r["rest_single"]))
    row("model(x), batch 256, images/s",
        lambda r: f"{r['in_process']['model_call_batch_256_images_per_second']:,}")
    row("gRPC batch 256, 1 thread, img/s", lambda r: f"{r['grpc_batch_256']['images_per_second_1_thread']:,}")
    row("gRPC batch 256, 2 threads, img/s", lambda r: f"{r['grpc_batch_256']['images_per_second_2_threads']:,}")
    print(f"client import: {results['client_import_seconds']} s "
          f"(tensorflow_serving.apis the usual way: {results['tf_serving_apis_import_seconds']} s)")
    print(f"targets: {results['targets']}")
    print(f"met: {results['targets_met']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n")[0])
    parser.add_argument("--architectures", nargs="+", default=["cnn", "mlp"], choices=["cnn", "mlp"])
    parser.add_argument("--requests", type=int, default=1000, help="timed single-image requests")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    results: dict[str, object] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "targets": TARGETS,
    }
    print("== client import time")
    results["client_import_seconds"] = import_seconds("import mnist_lib.predict", runs=5)
    results["tf_serving_apis_import_seconds"] = import_seconds(
        "import tensorflow_serving.apis.predict_pb2", runs=1)
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as root:
        results["models"] = [bench_architecture(a, Path(root), args.requests, args.seconds)
                             for a in args.architectures]
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets_met"] = {
        r["architecture"]: {
            "grpc_p50_ms": r["grpc_single"]["p50_ms"] <= TARGETS["grpc_p50_ms"],
            "grpc_p99_ms": r["grpc_single"]["p99_ms"] <= TARGETS["grpc_p99_ms"],
            "batch_256_images_per_second": max(r["grpc_batch_256"].values())
            >= TARGETS["batch_256_images_per_second"],
        } for r in results["models"]}
    paths.write_json(RESULTS, results)
    print_table(results)
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
