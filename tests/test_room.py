"""The instructor's room as data: names, objects, the budget, kubeconfigs (no cluster needed).

What the room does on a cluster (up, check, status, down, an attendee running the chapters
with their kubeconfig) is tests/test_room_real_cluster.py.
"""

from __future__ import annotations

import base64
import json
import time
from decimal import Decimal

import pytest
from kubernetes import client
from kubernetes.utils import parse_quantity

from mnist_lib import manifests, settings
from mnist_lib.room import kubeconfigs
from mnist_lib.room.__main__ import main
from mnist_lib.room.objects import (LIMIT_RANGE, QUOTA, ROOM_LABEL, Attendee, RoomError, attendees,
                                    room_objects)


def test_attendees_are_numbered_or_named():
    assert [a.namespace for a in attendees("ws", count=2)] == ["ws-attendee-1", "ws-attendee-2"]
    named = attendees("ws", names=["Ada", "", "# a comment", "grace-h"])
    assert [a.name for a in named] == ["ada", "grace-h"]


@pytest.mark.parametrize("kwargs, says", [
    ({"count": 0}, "at least one attendee"),
    ({"names": ["ada", "ada"]}, "appear twice: ada"),
    ({"names": ["ada lovelace"]}, "cannot make the namespace"),
    ({"names": ["# nobody"]}, "lists nobody"),
])
def test_bad_attendees_are_refused_with_the_reason(kwargs, says):
    with pytest.raises(RoomError, match=says):
        attendees("ws", **kwargs)


def test_a_bad_room_name_is_refused():
    with pytest.raises(RoomError, match="not a valid Kubernetes name"):
        attendees("Mnist_Room", count=1)


def test_every_object_is_labelled_with_its_room_and_lives_in_the_attendees_namespace():
    objects = room_objects(attendees("ws", count=2))
    assert all(o["metadata"]["labels"][ROOM_LABEL] == "ws" for o in objects)
    kinds = [o["kind"] for o in objects]
    assert kinds.count("ClusterRole") == 1 and kinds.count("Namespace") == 2 and kinds.count("ClusterRoleBinding") == 2
    for o in objects:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] in ("ws-attendee-1", "ws-attendee-2")
    # the bindings name the attendee's own ServiceAccount, in the attendee's own namespace
    bindings = [o for o in objects if o["kind"].endswith("RoleBinding")]
    assert {(b["subjects"][0]["namespace"], b["metadata"]["labels"]["mnist-course.dev/attendee"]) for b in bindings} \
        == {("ws-attendee-1", "attendee-1"), ("ws-attendee-2", "attendee-2")}


def _requests(containers: list[dict], what: str) -> Decimal:
    return sum((parse_quantity(c["resources"].get(what, {}).get("cpu", "0")) for c in containers), Decimal(0))


def _containers(objects: list[dict]) -> list[dict]:
    found = []
    for obj in objects:
        if obj["kind"] == "TFJob":
            for spec in obj["spec"]["tfReplicaSpecs"].values():
                found += spec["template"]["spec"]["containers"] * spec["replicas"]
        elif obj["kind"] == "Deployment":
            found += obj["spec"]["template"]["spec"]["containers"]
        elif obj["kind"] == "Pod":
            found += obj["spec"]["containers"]
    return found


def test_the_budget_holds_chapter_04s_largest_job_beside_tensorboard_the_server_and_the_volume_helper():
    """The quota must admit everything an attendee has running at once, or a chapter stalls on it."""
    config = manifests.run_config("ch04-parameter-server")
    busiest = [manifests.tfjob("ch04-parameter-server", config, workers=2, parameter_servers=1),
               *manifests.tensorboard(), *manifests.model_server(), manifests.volume_helper(), *manifests.jupyterlab()]
    containers = _containers(busiest)
    assert len(containers) >= 8
    assert _requests(containers, "requests") <= parse_quantity(QUOTA["requests.cpu"])
    assert _requests(containers, "limits") <= parse_quantity(QUOTA["limits.cpu"])
    memory = sum(parse_quantity(c["resources"]["requests"]["memory"]) for c in containers)
    assert memory <= parse_quantity(QUOTA["requests.memory"])
    # and no course container asks for more than the LimitRange allows one container
    for c in containers:
        assert parse_quantity(c["resources"]["limits"]["cpu"]) <= parse_quantity(LIMIT_RANGE["max"]["cpu"])
        assert parse_quantity(c["resources"]["limits"]["memory"]) <= parse_quantity(LIMIT_RANGE["max"]["memory"])


def _jwt(exp: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"e30.{payload}.signature"


def test_a_token_is_renewed_only_when_less_than_half_of_the_workshop_is_left():
    assert kubeconfigs.still_valid(_jwt(time.time() + 5 * 3600), hours=8)
    assert not kubeconfigs.still_valid(_jwt(time.time() + 3 * 3600), hours=8)
    assert not kubeconfigs.still_valid("not-a-jwt", hours=8)


def test_the_kubeconfig_names_the_attendees_namespace_and_the_course_reads_it(tmp_path, monkeypatch):
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    configuration = client.Configuration(host="https://203.0.113.7:6443")
    configuration.ssl_ca_cert = str(ca)
    who = Attendee("ws", "ada")
    path = kubeconfigs.write(tmp_path / "room", who, kubeconfigs.kubeconfig(configuration, who, _jwt(0)))
    assert path.stat().st_mode & 0o077 == 0  # a credential: its owner's only
    monkeypatch.delenv(settings.NAMESPACE_ENV, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert settings.namespace() == "ws-ada"
    assert kubeconfigs.existing_token(tmp_path / "room", who) == _jwt(0)
    zipped = kubeconfigs.archive(tmp_path / "room", "ws")
    assert zipped.name == "ws-kubeconfigs.zip" and zipped.stat().st_size > 0


def test_the_command_line_refuses_bad_input_before_any_cluster(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    assert main(["plan", "--attendees", "2", "--room", "Bad Room"]) == 2
    assert "room name 'Bad Room' is not a valid Kubernetes name" in capsys.readouterr().err  # before any cluster
    assert main(["status"]) == 2
    assert "no Kubernetes cluster is configured" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["up"])  # --attendees or --names is required
    names = tmp_path / "names.txt"
    names.write_text("ada\nGrace Hopper\n")
    assert main(["up", "--names", str(names)]) == 2
    assert "attendee name 'grace hopper' cannot make the namespace" in capsys.readouterr().err
    assert main(["up", "--names", str(tmp_path / "missing.txt")]) == 2
    assert "cannot read the names file" in capsys.readouterr().err



def test_the_live_status_table_shows_who_waits_and_why():
    from mnist_lib.room.admin import AttendeeStatus
    from mnist_lib.room.widget import status_html

    rows = [AttendeeStatus("ada", "ws-ada", ["03", "04"], 2, 0, [], "1", "2500m"),
            AttendeeStatus("bob", "ws-bob", [], 0, 1, ["ch04-ps-worker-0: <no node has room>"], "0", "2500m")]
    table = status_html(rows, "room ws")
    assert table.count("<tr>") == 3 and "03 04" in table and "1 / 2500m" in table
    assert "color:#b00'>ch04-ps-worker-0: &lt;no node has room&gt;" in table  # escaped, in red


def test_an_attendees_jupyterlab_runs_as_the_attendee_with_its_own_output_folder(monkeypatch):
    from mnist_lib.room.objects import jupyter_objects

    monkeypatch.setenv(settings.SERVING_IMAGE_ENV, "mnist-course:latest")
    secret, deployment, service = jupyter_objects(Attendee("ws", "ada"), token="t0ken")
    assert secret["kind"] == "Secret" and secret["stringData"] == {"token": "t0ken"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "learner" and deployment["metadata"]["namespace"] == "ws-ada"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert env["MNIST_OUTPUT_DIR"] != manifests.OUTPUT_MOUNT  # its own folder, not the pods' volume
    assert env["MNIST_SERVING_IMAGE"] == "mnist-course:latest"  # the instructor's settings, passed on
    assert env["JUPYTER_TOKEN"] == {"secretKeyRef": {"name": "jupyter-token", "key": "token"}}
    assert service["spec"]["ports"][0]["port"] == 8888
    assert all(o["metadata"]["labels"][ROOM_LABEL] == "ws" for o in (secret, deployment, service))


def test_every_room_object_passes_the_kubernetes_schema():
    """Strict: an unknown or misspelt field fails here, not on the morning of the workshop."""
    import kubernetes_validate

    from mnist_lib.room.objects import jupyter_objects, node_probe, prepull_daemonset

    who = Attendee("ws", "ada")
    objects = [*room_objects([who]), *jupyter_objects(who, "t"), node_probe("node-1", "mnist-course:latest"),
               prepull_daemonset("mnist-course:latest")]
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
