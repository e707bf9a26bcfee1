"""manifests/room/: the kustomize rendering of a room gives exactly the objects of ``room up``.

The overlays are built by the real kustomize CLI (infra/k8s/build.sh, component ``kustomize``:
upstream sigs.k8s.io/kustomize/kustomize/v5 built from the Go module proxy, cached). No cluster
is needed. Where it cannot be built (no Go) the tests skip; under CI they fail instead.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable

import pytest
import yaml

from mnist_lib.manifests import to_yaml
from mnist_lib.room import kustomize as k
from mnist_lib.room.objects import Attendee, attendee_objects, cluster_reader
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


def assert_same_objects(built: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    built_by, expected_by = by_key(built), by_key(expected)
    assert sorted(built_by) == sorted(expected_by)
    for key, obj in expected_by.items():
        assert built_by[key] == obj, f"{key} differs between kustomize and mnist_lib.room.objects"


# -- the kustomize build is the Python's objects ----------------------------------------

def test_the_example_overlay_is_that_attendees_objects(kustomize):
    built = build(kustomize, k.ROOM_DIR / "overlays" / k.EXAMPLE.name)
    assert_same_objects(built, attendee_objects(k.EXAMPLE))


def test_the_room_clusterrole_is_built_once_beside_the_overlays(kustomize):
    built = build(kustomize, k.ROOM_DIR / "cluster-reader")
    assert_same_objects(built, [cluster_reader(k.EXAMPLE.room)])


def test_a_copied_overlay_is_another_attendee(kustomize, tmp_path):
    """What manifests/room/README.md tells an instructor: copy the folder, replace the name."""
    tree = tmp_path / "room"
    shutil.copytree(k.ROOM_DIR, tree)
    example = tree / "overlays" / k.EXAMPLE.name / "kustomization.yaml"
    ada = tree / "overlays" / "ada" / "kustomization.yaml"
    ada.parent.mkdir()
    ada.write_text(example.read_text().replace(k.EXAMPLE.name, "ada"))
    assert_same_objects(build(kustomize, ada.parent), attendee_objects(Attendee(k.EXAMPLE.room, "ada")))


# -- the committed tree is what the library builds ---------------------------------------

def test_committed_tree_is_the_library_output():
    for name, text in k.render_all().items():
        path = k.ROOM_DIR / name
        assert path.exists(), f"{path} missing: run python -m mnist_lib.room.kustomize --write"
        assert path.read_text() == text, f"{path} is stale: run python -m mnist_lib.room.kustomize --write"
    committed = {str(p.relative_to(k.ROOM_DIR)) for p in k.ROOM_DIR.rglob("*.yaml")}
    assert committed == {f.path for f in k.FILES}, "a YAML file under manifests/room/ that the Python does not make"


def test_each_file_says_it_is_generated():
    for name, text in k.render_all().items():
        assert "Generated from mnist_lib/room/kustomize.py" in text.split("---", 1)[0], name


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    assert k.main(["--write", "--dir", str(tmp_path)]) == 0
    assert k.main(["--check", "--dir", str(tmp_path)]) == 0
    overlay = tmp_path / "overlays" / k.EXAMPLE.name / "kustomization.yaml"
    overlay.write_text(overlay.read_text().replace("namespace: mnist-room-attendee-1", "namespace: elsewhere"))
    capsys.readouterr()
    assert k.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "-namespace: elsewhere" in capsys.readouterr().out


def test_an_overlay_for_another_room_is_refused():
    with pytest.raises(ValueError, match="room up --room"):
        k.overlay(Attendee("other-room", "ada"))
