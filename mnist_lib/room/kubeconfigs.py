"""An attendee's kubeconfig: the cluster's address, its CA, a time-bound token, the attendee's namespace.

Since Kubernetes 1.24 a ServiceAccount gets no long-lived token Secret; a token comes
from the TokenRequest API (``kubectl create token``), valid for the hours asked. The
kubeconfig's context names the attendee's namespace, and the course reads it from there
(:func:`mnist_lib.settings.namespace`): an attendee sets ``KUBECONFIG`` and nothing else.
"""

from __future__ import annotations

import base64
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from mnist_lib.room.objects import LEARNER, Attendee


def request_token(core: client.CoreV1Api, who: Attendee, hours: float) -> str:
    """A token of the attendee's ServiceAccount, valid for ``hours`` (TokenRequest)."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=int(hours * 3600)))
    answer = core.create_namespaced_service_account_token(LEARNER, who.namespace, request)
    return answer.status.token


def token_expiry(token: str) -> float:
    """When a ServiceAccount token expires (its JWT ``exp``, seconds since the epoch); 0 if unreadable.

    The payload is read, not verified: the API server verifies; this only decides whether to renew."""
    try:
        payload = token.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0


def kubeconfig(configuration: client.Configuration, who: Attendee, token: str) -> dict[str, Any]:
    """The kubeconfig of one attendee, for the API server ``configuration`` points at."""
    cluster: dict[str, Any] = {"server": configuration.host}
    if configuration.ssl_ca_cert:
        cluster["certificate-authority-data"] = base64.b64encode(Path(configuration.ssl_ca_cert).read_bytes()).decode()
    elif not configuration.verify_ssl:
        cluster["insecure-skip-tls-verify"] = True
    context = f"{who.room}-{who.name}"
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": who.room, "cluster": cluster}],
        "users": [{"name": context, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": who.room, "user": context, "namespace": who.namespace}}],
        "current-context": context,
    }


def path_of(folder: Path, who: Attendee) -> Path:
    return folder / f"{who.name}.kubeconfig"


def existing_token(folder: Path, who: Attendee) -> str:
    """The token in an attendee's kubeconfig written earlier ('' if none)."""
    try:
        config = yaml.safe_load(path_of(folder, who).read_text()) or {}
        return str(config["users"][0]["user"]["token"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return ""


def still_valid(token: str, hours: float) -> bool:
    """Keep a token that lasts at least half of the workshop asked for: `room up` twice changes nothing."""
    return token_expiry(token) - time.time() >= hours * 3600 / 2


def write(folder: Path, who: Attendee, config: dict[str, Any]) -> Path:
    """Write one kubeconfig, readable by its owner only (it holds a credential)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = path_of(folder, who)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def archive_path(folder: Path, room: str) -> Path:
    return folder / f"{room}-kubeconfigs.zip"


def archive(folder: Path, room: str) -> Path:
    """All the room's kubeconfigs in one zip, to hand out (a chat, a USB stick)."""
    target = archive_path(folder, room)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(folder.glob("*.kubeconfig")):
            zipped.write(path, path.name)
    target.chmod(0o600)
    return target
