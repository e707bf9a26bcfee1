"""Shared by the kustomize tests: the real kustomize CLI, and objects compared by kind, namespace and name.

kustomize is built by infra/k8s/build.sh (component ``kustomize``: upstream
sigs.k8s.io/kustomize/kustomize/v5 from the Go module proxy, cached). No cluster is needed.
Where it cannot be built (no Go) the tests skip; under CI they fail instead.
(A helper module rather than conftest.py, which belongs to the whole suite.)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable

import pytest
import yaml

from mnist_lib.manifests import to_yaml
from real_cluster import BUILD_SH, GO_STANDARD_PATH, in_ci

Key = tuple[str, str, str]  # kind, namespace ('' if cluster-scoped), name


def unavailable(reason: str) -> None:
    """The house rule of tests/real_cluster.py: skip with the reason, but fail under CI."""
    if in_ci():
        pytest.fail(f"CI is set, so kustomize must be built here: {reason}", pytrace=False)
    pytest.skip(f"no kustomize: {reason} Run `infra/k8s/build.sh kustomize` (needs Go >= 1.26).")


@pytest.fixture(scope="session")
def kustomize() -> Path:
    """The kustomize binary where build.sh caches it; built first if absent (seconds when cached).

    build.sh holds one lock per cache: during `make test`'s background build this waits until
    that build is done, unless the background build made kustomize first (it does).
    """
    listed = subprocess.run(["bash", str(BUILD_SH), "--paths"], capture_output=True, text=True, check=True).stdout
    binary = Path(dict(line.split("=", 1) for line in listed.splitlines())["KUSTOMIZE_BIN"])
    if not binary.is_file():
        if not (shutil.which("go") or GO_STANDARD_PATH.is_file()):
            unavailable("Go is not installed, and kustomize is built from source.")
        done = subprocess.run(["bash", str(BUILD_SH), "kustomize"], capture_output=True, text=True, timeout=3600)
        if done.returncode != 0 or not binary.is_file():
            unavailable(f"`infra/k8s/build.sh kustomize` failed (exit {done.returncode}):\n"
                        + "\n".join((done.stdout + done.stderr).splitlines()[-30:]))
    return binary


def build(kustomize: Path, folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run([str(kustomize), "build", str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, f"kustomize build {folder} failed:\n{done.stderr}"
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def by_key(objects: Iterable[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Objects by kind, namespace and name; compared as parsed YAML, so key order does not count."""
    parsed = [obj for obj in yaml.safe_load_all(to_yaml(list(objects))) if obj]
    keyed = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in parsed}
    assert len(keyed) == len(parsed), "two objects with the same kind, namespace and name"
    return keyed


def assert_same_objects(built: list[dict[str, Any]], expected: list[dict[str, Any]], source: str) -> None:
    """kustomize's build has exactly ``expected``'s objects, field for field; ``source`` names where they come from."""
    built_by, expected_by = by_key(built), by_key(expected)
    assert sorted(built_by) == sorted(expected_by)
    for key, obj in expected_by.items():
        assert built_by[key] == obj, f"{key} differs between kustomize and {source}"
