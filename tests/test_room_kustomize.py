"""manifests/room/: the kustomize rendering of a room gives exactly the objects of ``room up``.

The overlays are built by the real kustomize CLI (tests/kustomize_support.py). No cluster is needed.
"""

from __future__ import annotations

import shutil

import pytest

import kustomize_support
from kustomize_support import build
from mnist_lib.room import kustomize as k
from mnist_lib.room.objects import Attendee, attendee_objects, cluster_reader

kustomize = kustomize_support.kustomize  # a fixture: the tests below take it by name


def assert_same_objects(built: list[dict], expected: list[dict]) -> None:
    kustomize_support.assert_same_objects(built, expected, "mnist_lib.room.objects")


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
    assert committed == {f.filename for f in k.FILES}, "a YAML file under manifests/room/ that the Python does not make"


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
