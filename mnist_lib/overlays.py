"""Overlays of the kustomize base manifests/: the course's objects elsewhere, with kubectl alone.

``kubectl apply -k overlays/<name>`` applies the base's objects (:data:`~mnist_lib.manifests.BASE_FILES`)
with other settings than the files' defaults: the three a cluster most often needs changed,
``MNIST_NAMESPACE``, ``MNIST_IMAGE`` and ``MNIST_STORAGE_CLASS``, each made by one of kustomize's own
transformers, so an overlay is a few lines anyone can copy and edit. The overlays are beside
manifests/, not in it: kustomize refuses an overlay inside its base's folder ("cycle detected").

- ``overlays/kind/``: a kind laptop. The files' defaults are already kind's, so it is the base alone.
- ``overlays/attendee/``: an attendee's own cluster after the workshop: another namespace, the image
  they pushed to a registry, the cluster's StorageClass.

Rendered by ``python -m mnist_lib.overlays --write``. ``tests/test_manifests_kustomize.py`` builds each
overlay with a real kustomize and checks that it gives what :func:`~mnist_lib.manifests.course_files`
builds with the overlay's settings.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

import yaml

from mnist_lib import paths
from mnist_lib.checks import check_dns_label, check_image
from mnist_lib.constants import DEFAULT_NAMESPACE
from mnist_lib.manifests import (RUN_LABEL, VOLUME_CLAIM, ManifestError, TextFile, generated_yaml, kustomization,
                                 render_command)
from mnist_lib.settings import DEFAULT_IMAGE

OVERLAYS_DIR = paths.COURSE_ROOT / "overlays"


@dataclass(frozen=True)
class Overlay:
    """One overlay of manifests/: the base in ``namespace``, running ``image``, its claim of ``storage_class``.

    The settings MNIST_NAMESPACE, MNIST_IMAGE and MNIST_STORAGE_CLASS, as kustomize applies them to
    files; a value left at its default (the files') adds nothing to the kustomization.
    """

    name: str
    title: str
    usage: str
    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_IMAGE
    storage_class: str | None = None

    def render(self) -> str:
        return generated_yaml("mnist_lib.overlays", self.title, self.usage, [overlay_kustomization(self)])


def _name_and_tag(image: str) -> tuple[str, str]:
    """``registry.example.com/you/mnist-course:1`` as kustomize's ``images:`` takes it: name and tag."""
    name, colon, tag = check_image("image", image, DEFAULT_IMAGE, ManifestError).rpartition(":")
    if not colon or "/" in tag or "@" in image:  # no tag (a colon before a "/" is a registry's port), or a digest
        raise ManifestError(f"image {image!r}: give an overlay a tagged image, e.g. "
                            "'registry.example.com/you/mnist-course:1'")
    return name, tag


def overlay_kustomization(overlay: Overlay) -> dict[str, Any]:
    """The kustomization that moves the base to ``overlay``'s settings, with kustomize's own transformers.

    ``namespace:`` sets every object's namespace and renames the Namespace object, but not the
    Namespace's instance label: a replacement copies the new name there (replacements run after
    ``namespace:``, kustomize's fixed order). No other field names the namespace (the Indexed Job's
    workers find each other by short DNS names), and the base has no RoleBinding whose subjects
    would need moving too. ``images:`` renames the course image in every container; the model
    server's official image stays, as in :func:`~mnist_lib.manifests.course_files`. A JSON patch
    sets the claim's StorageClass.
    """
    fields: dict[str, Any] = {"resources": ["../../manifests"]}
    if overlay.namespace != DEFAULT_NAMESPACE:
        fields["namespace"] = check_dns_label("namespace", overlay.namespace, ManifestError)
    if overlay.image != DEFAULT_IMAGE:
        name, tag = _name_and_tag(overlay.image)
        fields["images"] = [{"name": _name_and_tag(DEFAULT_IMAGE)[0], "newName": name, "newTag": tag}]
    if overlay.storage_class is not None:
        storage_class = check_dns_label("storage class", overlay.storage_class, ManifestError)
        patch = [{"op": "add", "path": "/spec/storageClassName", "value": storage_class}]
        fields["patches"] = [{"target": {"kind": "PersistentVolumeClaim", "name": VOLUME_CLAIM},
                              "patch": TextFile(yaml.safe_dump(patch, sort_keys=False))}]
    if "namespace" in fields:
        fields["replacements"] = [{"source": {"kind": "Namespace", "fieldPath": "metadata.name"},
                                   "targets": [{"select": {"kind": "Namespace"},
                                                "fieldPaths": [f"metadata.labels.[{RUN_LABEL}]"]}]}]
    return kustomization(**fields)


KIND = Overlay(
    "kind", "A kind laptop: the base as it is, whose defaults are kind's.",
    "Namespace mnist, the image `kind load` put on the node (mnist-course:latest, pulled only if absent)\n"
    "and the default StorageClass (kind's local-path): nothing to change, so nothing but the base.\n"
    "A folder of its own for your laptop's changes.\n"
    "Apply: kubectl apply -k overlays/kind")
ATTENDEE = Overlay(
    "attendee", "An attendee's own cluster after the workshop: a namespace, a pushed image, a StorageClass.",
    "Apply: kubectl apply -k overlays/attendee\n"
    "Yours: copy this folder and edit the copy (manifests/kustomization.yaml says how).\n"
    "Not in a workshop room: there `room up` made your namespace and claim, and you may not make a Namespace.",
    namespace="mnist-ada", image="registry.example.com/ada/mnist-course:1", storage_class="nfs-client")
OVERLAYS = (KIND, ATTENDEE)


def render_all() -> dict[str, str]:
    """Every file of overlays/, as text: {path under overlays/: contents}."""
    return {f"{o.name}/kustomization.yaml": o.render() for o in OVERLAYS}


def main(argv: Sequence[str] | None = None) -> int:
    return render_command(argv, "mnist_lib.overlays", "the overlays of the kustomize base manifests/ (overlays/)",
                          render_all, OVERLAYS_DIR)


if __name__ == "__main__":
    sys.exit(main())
