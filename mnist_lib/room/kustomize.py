"""The room's objects as a kustomize tree (``manifests/room/``), for instructors who prefer kubectl.

``python -m mnist_lib.room up`` applies :func:`~mnist_lib.room.objects.room_objects` and writes
each attendee a kubeconfig with a token. ``kubectl apply -k manifests/room/overlays/<name>``
applies the same objects for one attendee, but makes no kubeconfig: kustomize only renders
files, and a token is asked of the API server after the ServiceAccount exists.

The tree, rendered from :mod:`mnist_lib.room.objects` (``python -m mnist_lib.room.kustomize --write``):

- ``cluster-reader/``: the room's ClusterRole, applied once per room. It is not in the overlays:
  ``kubectl delete -k`` of one attendee must not delete what every attendee binds to, and the
  overlay's attendee label does not belong on it.
- ``base/``: every object of a placeholder attendee (:data:`PLACEHOLDER`).
- ``overlays/attendee-1/``: one attendee's copy of the base, made with kustomize's own
  transformers: ``namespace:`` moves the namespaced objects, renames the Namespace object and
  (the ServiceAccount being in the build) the bindings' subjects; ``labels:`` sets the attendee
  label; ``replacements:`` derive the Namespace's instance label and the ClusterRoleBinding's
  name from the new namespace. So an attendee's overlay names the attendee in two lines only.

``tests/test_room_kustomize.py`` builds the overlay with a real kustomize and checks that it
gives exactly :func:`~mnist_lib.room.objects.attendee_objects` of that attendee.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Sequence

from mnist_lib.manifests import MANIFESTS_DIR, RUN_LABEL, ManifestFile, kustomization, render_command
from mnist_lib.room.objects import (ATTENDEE_LABEL, CLUSTER_READER_SUFFIX, DEFAULT_ROOM, Attendee, RoomError,
                                    attendee_objects, cluster_reader)

ROOM_DIR = MANIFESTS_DIR / "room"
PLACEHOLDER = Attendee(DEFAULT_ROOM, "placeholder")  # the base's attendee: its namespace says "do not apply me"
EXAMPLE = Attendee(DEFAULT_ROOM, "attendee-1")       # the one overlay in the repository


def overlay(who: Attendee) -> dict[str, Any]:
    """The kustomization that turns the base's placeholder into ``who``.

    Replacements run after ``namespace:`` (kustomize's fixed order), so their source, the
    Namespace's name, is already the attendee's. The ClusterRoleBinding is named
    ``<namespace>-cluster-reader``: split at ``-cluster-reader``, its first part is replaced.
    """
    if who.room != PLACEHOLDER.room:
        raise RoomError(f"the base is for room {PLACEHOLDER.room!r}, not {who.room!r}: "
                        "use `python -m mnist_lib.room up --room ...` for another room")
    instance = f"metadata.labels.[{RUN_LABEL}]"
    return kustomization(
        resources=["../../base"],
        namespace=who.namespace,
        labels=[{"pairs": {ATTENDEE_LABEL: who.name}}],
        replacements=[{
            "source": {"kind": "Namespace", "fieldPath": "metadata.name"},
            "targets": [
                {"select": {"kind": "Namespace"}, "fieldPaths": [instance]},
                {"select": {"kind": "ClusterRoleBinding"}, "fieldPaths": ["metadata.name", instance],
                 "options": {"delimiter": f"-{CLUSTER_READER_SUFFIX}", "index": 0}},
            ],
        }],
    )


_File = functools.partial(ManifestFile, module="mnist_lib.room.kustomize")
_OVERLAY = f"overlays/{EXAMPLE.name}"
_ROOM = f"Room {DEFAULT_ROOM}'s ClusterRole"
FILES = (
    _File("cluster-reader/kustomization.yaml", f"{_ROOM}: reading nodes and StorageClasses.",
             "Apply once per room: kubectl apply -k manifests/room/cluster-reader",
             lambda: [kustomization(resources=["cluster-reader.yaml"])]),
    _File("cluster-reader/cluster-reader.yaml", f"{_ROOM} (see kustomization.yaml).", "",
             lambda: [cluster_reader(DEFAULT_ROOM)]),
    _File("base/kustomization.yaml", "One attendee's objects, for a placeholder attendee: the overlays' base.",
             "Do not apply it: apply an overlay (manifests/room/README.md).",
             lambda: [kustomization(resources=["attendee.yaml"])]),
    _File("base/attendee.yaml", f"Everything attendee {PLACEHOLDER.name!r} of room {DEFAULT_ROOM} gets "
             f"(namespace {PLACEHOLDER.namespace}).", "The overlays replace the placeholder by an attendee.",
             lambda: attendee_objects(PLACEHOLDER)),
    _File(f"{_OVERLAY}/kustomization.yaml",
             f"Attendee {EXAMPLE.name} of room {DEFAULT_ROOM}: namespace {EXAMPLE.namespace}.",
             f"Apply: kubectl apply -k manifests/room/{_OVERLAY}  (after manifests/room/cluster-reader)\n"
             f"Another attendee: copy this folder to overlays/<name> and replace {EXAMPLE.name} by <name>\n"
             "(in `namespace:` and `labels:`); the replacements derive the rest from the namespace.",
             lambda: [overlay(EXAMPLE)]),
)


def render_all() -> dict[str, str]:
    """Every generated file of manifests/room/, as text: {path under manifests/room: contents}."""
    return {f.filename: f.render() for f in FILES}


def main(argv: Sequence[str] | None = None) -> int:
    return render_command(argv, "mnist_lib.room.kustomize",
                          "the room's kustomize tree (manifests/room/)", render_all,
                          ROOM_DIR)


if __name__ == "__main__":
    sys.exit(main())
