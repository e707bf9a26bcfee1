"""Benchmark: how long the course image takes to build, how big it is, how fast it trains.

    .venv/bin/python -m benchmarks.container [--skip-base] [--keep]

Measures, on this machine, with the docker daemon it finds:

- ``base_image_seconds``: scripts/docker-base-image.sh from nothing (root only;
  built under a temporary tag, so the real ``course-base:bookworm`` is untouched);
- ``cold_build_seconds``: ``docker build --no-cache`` (every layer, TensorFlow
  downloaded from PyPI), what a fresh CI machine or a learner's first build pays;
- ``warm_build_seconds``: the same build again, nothing changed (all from cache);
- ``code_change_build_seconds``: a rebuild after editing one file of mnist_lib/
  (only the layers below the code are rebuilt: why dependencies come first);
- ``image_size_bytes`` and the largest layers;
- ``container_start_seconds``: ``docker run --rm <image>`` of a no-op;
- ``container_training_seconds`` vs ``local_training_seconds``: the same tiny
  training (1 epoch, MLP, 2,000 images) in a container and in this .venv.

Writes benchmarks/results/container.json. Not a test: numbers depend on the
machine, the network and whoever else is using the two cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from mnist_lib import container, paths
from mnist_lib.config import TrainConfig

RESULTS = paths.COURSE_ROOT / "benchmarks" / "results" / "container.json"
TAG = "mnist-course:benchmark"
BASE_TAG = "course-base:benchmark"
# Tiny on purpose: the machine's two cores are shared.
TRAINING = dict(epochs=1, train_limit=2000, architecture="mlp", batch_size=64)
# What the Dockerfile copies: enough for a private copy of the build context.
CONTEXT_FILES = ["Dockerfile", ".dockerignore", "requirements.txt", "constraints.txt",
                 "pyproject.toml", "README.md", "mnist_lib", "data"]


def timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    return time.monotonic() - started


def largest_layers(tag: str, top: int = 4) -> list[dict[str, object]]:
    out = subprocess.run(["docker", "history", "--no-trunc", "--human=false", "--format",
                          "{{.Size}}\t{{.CreatedBy}}", tag], capture_output=True, text=True,
                         check=True).stdout
    layers = []
    for line in out.splitlines():
        size, created_by = line.split("\t", 1)
        step = " ".join(created_by.split())[:160] or "(the base image)"
        layers.append({"size_bytes": int(size), "step": step})
    return sorted(layers, key=lambda layer: -layer["size_bytes"])[:top]


def copy_context(target: Path) -> Path:
    """A private copy of the build context, so we can edit a file without touching the checkout."""
    for name in CONTEXT_FILES:
        source = paths.COURSE_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, target / name)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-base", action="store_true", help="do not time the debootstrap base")
    parser.add_argument("--keep", action="store_true", help=f"keep the {TAG} image afterwards")
    options = parser.parse_args(argv)

    ok, status = container.docker_status()
    if not ok:
        print(f"error: {status}", file=sys.stderr)
        return 2
    print(status)
    results: dict[str, object] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "docker_server": container.require_docker(),
                    # Other work on the same cores slows every figure: note how busy it was.
                    "load_average_1min_at_start": round(os.getloadavg()[0], 2)},
        "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.COURSE_ROOT,
                                     capture_output=True, text=True).stdout.strip(),
    }

    if not options.skip_base and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("== debootstrap base image, from nothing")
        started = time.monotonic()
        subprocess.run([str(paths.COURSE_ROOT / "scripts" / "docker-base-image.sh"), "--force", BASE_TAG],
                       check=True)
        results["base_image_seconds"] = round(time.monotonic() - started, 1)
        results["base_image_size_bytes"] = container.image_size(BASE_TAG)
        container.remove_image(BASE_TAG)

    base = container.pick_base_image()
    results["base_image"] = base or container.OFFICIAL_BASE_IMAGE
    try:
        with tempfile.TemporaryDirectory(prefix="course-context-") as tmp:
            context = copy_context(Path(tmp))
            print(f"== cold build (--no-cache) from {results['base_image']}")
            cold = container.build_image(TAG, base, context, progress=None, no_cache=True)
            print(f"   {cold.seconds:.1f}s, {cold.size_gb:.2f} GB")
            print("== warm build (nothing changed)")
            warm = container.build_image(TAG, base, context, progress=None)
            print(f"   {warm.seconds:.1f}s, {warm.cached_steps}/{warm.steps} steps cached")
            print("== rebuild after editing mnist_lib/__init__.py")
            with open(context / "mnist_lib" / "__init__.py", "a") as handle:
                handle.write(f"\n# benchmark edit {time.time()}\n")
            edited = container.build_image(TAG, base, context, progress=None)
            print(f"   {edited.seconds:.1f}s, {edited.cached_steps}/{edited.steps} steps cached")
        results.update(
            cold_build_seconds=round(cold.seconds, 1),
            warm_build_seconds=round(warm.seconds, 1),
            warm_build_cached_steps=f"{warm.cached_steps}/{warm.steps}",
            code_change_build_seconds=round(edited.seconds, 1),
            code_change_cached_steps=f"{edited.cached_steps}/{edited.steps}",
            image_size_bytes=edited.size_bytes,
            largest_layers=largest_layers(TAG),
        )

        print("== container start (no-op)")
        results["container_start_seconds"] = round(
            timed(["docker", "run", "--rm", "--network", "none", "--entrypoint", "true", TAG]), 2)

        with tempfile.TemporaryDirectory(prefix="course-bench-") as tmp:
            out = Path(tmp)
            config = TrainConfig(**TRAINING, model_dir=out / "c" / "ckpt", log_dir=out / "c" / "logs",
                                 export_dir=out / "c" / "export")
            print(f"== training in a container: {TRAINING}")
            run = container.run_training(TAG, config, out / "c", progress=None)
            results["container_training_seconds"] = round(run.seconds, 1)
            print(f"   {run.seconds:.1f}s")
            print("== the same training in this .venv")
            local = TrainConfig(**TRAINING, model_dir=out / "l" / "ckpt", log_dir=out / "l" / "logs",
                                export_dir=out / "l" / "export")
            results["local_training_seconds"] = round(
                timed([sys.executable, "-m", "mnist_lib.train", *local.to_args()]), 1)
            print(f"   {results['local_training_seconds']}s")
        results["training_config"] = TRAINING
    finally:
        if not options.keep:
            container.remove_image(TAG)

    paths.write_json(RESULTS, results)
    print(f"wrote {RESULTS.relative_to(paths.COURSE_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
