"""manifests/ as a kustomize base, and overlays/: kustomize gives what mnist_lib.manifests builds.

Each overlay is built by the real kustomize CLI (tests/kustomize_support.py) and compared, object for
object and field for field, with the same files built by the Python with the overlay's settings
(MNIST_NAMESPACE, MNIST_IMAGE, MNIST_STORAGE_CLASS set here as a learner would set them).
No cluster is needed.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import kustomize_support
from kustomize_support import build
from mnist_lib import manifests as m
from mnist_lib import overlays as o
from mnist_lib import settings

kustomize = kustomize_support.kustomize  # a fixture: the tests below take it by name

STANDARD_API_VERSIONS = ("v1", "apps/v1", "batch/v1")  # kinds every cluster knows, no CRD needed


def python_objects(monkeypatch: pytest.MonkeyPatch, overlay: o.Overlay) -> list[dict[str, Any]]:
    """The base's files as mnist_lib.manifests builds them where the settings are ``overlay``'s."""
    monkeypatch.setenv(settings.NAMESPACE_ENV, overlay.namespace)
    monkeypatch.setenv(settings.IMAGE_ENV, overlay.image)
    if overlay.storage_class is None:
        monkeypatch.delenv(settings.STORAGE_CLASS_ENV, raising=False)
    else:
        monkeypatch.setenv(settings.STORAGE_CLASS_ENV, overlay.storage_class)
    for other in (settings.ACCESS_MODE_ENV, settings.PULL_SECRETS_ENV, settings.SERVING_IMAGE_ENV):
        monkeypatch.delenv(other, raising=False)  # at the files' defaults
    files = m.course_files(settings.namespace(), settings.image())
    return [obj for f in files if f.filename in m.BASE_FILES for obj in f.build()]


def assert_same_objects(built: list[dict], expected: list[dict]) -> None:
    kustomize_support.assert_same_objects(built, expected, "mnist_lib.manifests with the overlay's settings")


def course_copy(tmp_path: Path) -> Path:
    """manifests/ and overlays/ in a folder of their own, side by side as in the course."""
    shutil.copytree(m.MANIFESTS_DIR, tmp_path / "manifests")
    shutil.copytree(o.OVERLAYS_DIR, tmp_path / "overlays")
    return tmp_path


# -- the kustomize build is the Python's objects ----------------------------------------

@pytest.mark.parametrize("overlay", o.OVERLAYS, ids=lambda overlay: overlay.name)
def test_each_overlay_is_the_python_rendering_with_its_settings(kustomize, monkeypatch, overlay):
    built = build(kustomize, o.OVERLAYS_DIR / overlay.name)
    assert_same_objects(built, python_objects(monkeypatch, overlay))


def test_the_attendee_overlay_changes_every_setting_and_the_kind_one_none(kustomize):
    """So the test above compares something: the attendee's objects are all moved, kind's are the files."""
    committed = [obj for name in m.BASE_FILES
                 for obj in yaml.safe_load_all((m.MANIFESTS_DIR / name).read_text()) if obj]
    assert_same_objects(build(kustomize, m.MANIFESTS_DIR), committed)
    assert_same_objects(build(kustomize, o.OVERLAYS_DIR / "kind"), committed)
    attendee = build(kustomize, o.OVERLAYS_DIR / "attendee")
    assert {obj["metadata"].get("namespace", obj["metadata"]["name"]) for obj in attendee} == {"mnist-ada"}
    claim = next(obj for obj in attendee if obj["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == "nfs-client"
    images = {c["image"] for obj in attendee if obj["kind"] in ("Job", "Deployment")
              for c in obj["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.example.com/ada/mnist-course:1", m.SERVING_IMAGE}


@pytest.mark.parametrize("changed, fields", [
    ({"namespace": "team-a"}, {"namespace", "replacements"}),
    ({"image": "localhost:5000/mnist-course:dev"}, {"images"}),
    ({"storage_class": "standard"}, {"patches"}),
], ids=["namespace", "image", "storage_class"])
def test_one_setting_alone_is_one_transformer(kustomize, monkeypatch, tmp_path, changed, fields):
    """An overlay that changes one setting keeps the others at the files' defaults, and says only the one."""
    overlay = dataclasses.replace(o.KIND, name="one", **changed)
    assert set(o.overlay_kustomization(overlay)) - {"apiVersion", "kind", "resources"} == fields
    folder = course_copy(tmp_path) / "overlays" / "one"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(overlay.render())
    assert_same_objects(build(kustomize, folder), python_objects(monkeypatch, overlay))


def test_a_copied_overlay_is_yours(kustomize, monkeypatch, tmp_path):
    """What manifests/kustomization.yaml tells a learner: copy the attendee's folder, change its values."""
    overlays = course_copy(tmp_path) / "overlays"
    shutil.copytree(overlays / "attendee", overlays / "bob")
    mine = overlays / "bob" / "kustomization.yaml"
    text = mine.read_text()
    for old, new in (("mnist-ada", "bob"), ("registry.example.com/ada/mnist-course", "ghcr.io/bob/mnist-course"),
                     ("newTag: '1'", "newTag: v2"), ("nfs-client", "fast-ssd")):
        assert old in text, old
        text = text.replace(old, new)
    mine.write_text(text)
    bob = dataclasses.replace(o.ATTENDEE, namespace="bob", image="ghcr.io/bob/mnist-course:v2",
                              storage_class="fast-ssd")
    assert_same_objects(build(kustomize, mine.parent), python_objects(monkeypatch, bob))


# -- what is in the base ---------------------------------------------------------------------

def test_the_base_is_every_file_of_standard_kinds():
    """The rule BASE_FILES says: in the base exactly the files a cluster without CRDs can apply."""
    standard = [f.filename for f in m.FILES if all(obj["apiVersion"] in STANDARD_API_VERSIONS for obj in f.build())]
    assert list(m.BASE_FILES) == standard


def test_an_overlay_needs_a_tagged_image():
    for image in ("registry.example.com/ada/mnist-course", "localhost:5000/mnist-course",
                  "mnist-course@sha256:" + "0" * 64):
        with pytest.raises(m.ManifestError, match="tagged image"):
            o.overlay_kustomization(dataclasses.replace(o.ATTENDEE, image=image))


# -- the committed files are what the library builds ------------------------------------------

def test_committed_overlays_are_the_library_output():
    for name, text in o.render_all().items():
        path = o.OVERLAYS_DIR / name
        assert path.exists(), f"{path} missing: run python -m mnist_lib.overlays --write"
        assert path.read_text() == text, f"{path} is stale: run python -m mnist_lib.overlays --write"
    committed = {str(p.relative_to(o.OVERLAYS_DIR)) for p in o.OVERLAYS_DIR.rglob("*") if p.is_file()}
    assert committed == set(o.render_all()), "a file under overlays/ that the Python does not make"
    # The base is manifests' own file, rendered (and checked) with the others by python -m mnist_lib.manifests.
    assert (m.MANIFESTS_DIR / m.BASE.filename).read_text() == m.render_all()[m.BASE.filename]


def test_each_file_says_it_is_generated_and_how_to_apply_it():
    for name, text in o.render_all().items():
        header = text.split("---", 1)[0]
        assert "Generated from mnist_lib/overlays.py" in header, name
        assert f"# Apply: kubectl apply -k overlays/{Path(name).parent}" in header, name
    assert "# Apply: kubectl apply -k overlays/attendee" in m.BASE.render().split("---", 1)[0]


def test_check_mode_reports_a_stale_overlay(tmp_path, capsys):
    assert o.main(["--write", "--dir", str(tmp_path)]) == 0
    assert o.main(["--check", "--dir", str(tmp_path)]) == 0
    attendee = tmp_path / "attendee" / "kustomization.yaml"
    attendee.write_text(attendee.read_text().replace("namespace: mnist-ada", "namespace: elsewhere"))
    capsys.readouterr()
    assert o.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "-namespace: elsewhere" in capsys.readouterr().out


def test_an_overlay_cannot_be_inside_its_base(kustomize, tmp_path):
    """Why overlays/ is beside manifests/: kustomize refuses a base folder that holds the overlay."""
    inside = course_copy(tmp_path) / "manifests" / "overlays" / "kind"
    inside.mkdir(parents=True)
    (inside / "kustomization.yaml").write_text(m.to_yaml(m.kustomization(resources=["../.."])))
    done = subprocess.run([str(kustomize), "build", str(inside)], capture_output=True, text=True)
    assert done.returncode != 0 and "cycle detected" in done.stderr
