"""The instructor's room on the real test cluster: up, isolation, quota, tokens, check, status, down.

The room of three is the session fixture ``workshop_room`` (tests/real_cluster.py), made with
``python -m mnist_lib.room up``. Attendee 1 has already run chapters 01 and 03-07 with its
kubeconfig when these tests run (tests/test_notebooks_on_kubernetes.py). Every command is run
as the instructor runs it, a subprocess with the admin kubeconfig; every attendee action goes
through the course's backend with that attendee's kubeconfig, as a learner's notebook does.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml
from real_cluster import RealCluster, WorkshopRoom, record

from mnist_lib import cluster, manifests
from mnist_lib.room import admin
from mnist_lib.room.objects import ROOM_LABEL, Attendee

pytestmark = pytest.mark.real_cluster

SMALL = {"architecture": "mlp", "epochs": 1, "train_limit": 5000}


def as_attendee(room: WorkshopRoom, attendee: str, namespace: str | None = None):
    return admin.attendee_backend(room.folder, Attendee(room.name, attendee), namespace)


def room_writes(real_cluster: RealCluster, room: WorkshopRoom) -> dict[str, str]:
    """Every object of the room, by kind/namespace/name, with the time `room up` last changed it.

    That is the time of its field manager's entry in managedFields: a server-side apply that
    changes nothing leaves it. (Not the resourceVersion: the quota controller writes each
    ResourceQuota's status as pods come and go.)"""
    from kubernetes import client

    api = real_cluster.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    selector = f"{ROOM_LABEL}={room.name}"
    writes = {}
    for kind, listed in (("Namespace", core.list_namespace(label_selector=selector)),
                         ("ServiceAccount", core.list_service_account_for_all_namespaces(label_selector=selector)),
                         ("Role", rbac.list_role_for_all_namespaces(label_selector=selector)),
                         ("RoleBinding", rbac.list_role_binding_for_all_namespaces(label_selector=selector)),
                         ("ClusterRoleBinding", rbac.list_cluster_role_binding(label_selector=selector)),
                         ("ResourceQuota", core.list_resource_quota_for_all_namespaces(label_selector=selector)),
                         ("LimitRange", core.list_limit_range_for_all_namespaces(label_selector=selector))):
        for item in listed.items:
            if item.metadata.namespace == f"{room.name}-check":
                continue  # `room check`'s own namespace, on its way out
            ours = [m.time for m in item.metadata.managed_fields or [] if m.manager == admin.FIELD_MANAGER]
            writes[f"{kind}/{item.metadata.namespace}/{item.metadata.name}"] = str(max(ours)) if ours else "?"
    return writes


def test_plan_refuses_a_room_the_cluster_cannot_hold(workshop_room: WorkshopRoom) -> None:
    done = workshop_room.command("plan", "--attendees", "30")
    assert done.returncode == 1
    assert "REFUSED: too small: 30 attendees each running chapter 03's one training pod need 15 CPU" in done.stdout
    assert "at most" in done.stdout  # and how many would fit
    assert workshop_room.command("plan", "--attendees", "3").returncode == 0


def test_up_twice_changes_nothing_and_a_longer_list_adds_only_the_newcomer(
        real_cluster: RealCluster, workshop_room: WorkshopRoom) -> None:
    assert sorted(p.name for p in workshop_room.folder.glob("*.kubeconfig")) == [
        f"{a}.kubeconfig" for a in workshop_room.attendees]
    before = room_writes(real_cluster, workshop_room)
    assert len(before) == 3 * 7  # seven labelled objects of these kinds per attendee
    again = workshop_room.command("up", "--attendees", "3", "--hours", "4", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["renewed"] == []  # the tokens still last
    assert room_writes(real_cluster, workshop_room) == before
    started = time.monotonic()
    more = workshop_room.command("up", "--attendees", "4", "--hours", "4", "--json")
    record("room_add_one_attendee_s", round(time.monotonic() - started, 1))
    assert more.returncode == 0 and json.loads(more.stdout)["renewed"] == ["attendee-4"]
    after = room_writes(real_cluster, workshop_room)
    assert {k: v for k, v in after.items() if "attendee-4" not in k} == before
    assert len(after) == 4 * 7
    config = yaml.safe_load(workshop_room.kubeconfig("attendee-4").read_text())
    assert config["contexts"][0]["context"]["namespace"] == "mnist-room-attendee-4"


def test_two_attendees_train_at_the_same_time_each_in_their_own_namespace(workshop_room: WorkshopRoom) -> None:
    results: dict[str, object] = {}

    # Each kubeconfig is loaded here, one after the other: the kubernetes client writes a kubeconfig's CA to
    # a temporary file, and two threads loading at once can read it half-written ("no certificate found").
    backends = {a: as_attendee(workshop_room, a) for a in ("attendee-2", "attendee-3")}

    def train(attendee: str) -> None:
        try:
            kube = backends[attendee]
            kube.prepare_namespace()  # what the course's get_backend does first: allowed for an attendee
            config = manifests.run_config("ch03-room", **SMALL)
            kube.delete_job("ch03-room")
            kube.create_job(manifests.training_job("ch03-room", config))
            results[attendee] = kube.wait_for_job_conditions("ch03-room", timeout=300, progress=False)
        except Exception as err:  # reported below, with the attendee's name
            results[attendee] = err

    started = time.monotonic()
    threads = [threading.Thread(target=train, args=(a,)) for a in ("attendee-2", "attendee-3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record("room_two_jobs_at_once_s", round(time.monotonic() - started, 1))
    for attendee, outcome in results.items():
        assert isinstance(outcome, cluster.JobStatus) and outcome.succeeded, f"{attendee}: {outcome}"
        assert outcome.namespace == workshop_room.namespace(attendee)


def test_an_attendee_is_forbidden_next_door_and_told_why(workshop_room: WorkshopRoom) -> None:
    next_door = as_attendee(workshop_room, "attendee-1", namespace=workshop_room.namespace("attendee-2"))
    with pytest.raises(cluster.ForbiddenError) as err:
        next_door.get_job_logs("ch03-room", kind="Job")
    says = str(err.value)
    assert "RBAC forbids you to list Pod" in says and "mnist-room-attendee-2" in says
    assert "system:serviceaccount:mnist-room-attendee-1:learner" in says  # who was refused, in the API's words
    assert "kubectl auth can-i" in says


def test_a_job_over_the_quota_names_the_quota_and_its_limits(workshop_room: WorkshopRoom) -> None:
    kube = as_attendee(workshop_room, "attendee-3")
    greedy = {"requests": {"cpu": "3", "memory": "1Gi"}, "limits": {"cpu": "3", "memory": "2Gi"}}
    job = manifests.training_job("room-greedy", manifests.run_config("room-greedy", **SMALL), resources=greedy)
    kube.create_job(job)
    started = time.monotonic()
    try:
        with pytest.raises(cluster.QuotaError) as err:
            kube.wait_for_job_conditions("room-greedy", timeout=120, progress=False)
    finally:
        kube.delete_job("room-greedy")
    assert time.monotonic() - started < 30
    says = str(err.value)
    assert "the ResourceQuota attendee-budget of namespace mnist-room-attendee-3 refuses" in says
    assert "one pod alone asks for more than the quota allows" in says and "requests.cpu: a pod asks for 3" in says


def test_a_token_the_api_server_no_longer_accepts_is_explained(workshop_room: WorkshopRoom, tmp_path) -> None:
    """An expired token and a tampered one get the same answer from the API server: 401.
    (A token lasts at least 10 minutes, so the test breaks the signature instead of waiting.)"""
    config = yaml.safe_load(workshop_room.kubeconfig("attendee-2").read_text())
    config["users"][0]["user"]["token"] = config["users"][0]["user"]["token"][:-4] + "AAAA"
    (tmp_path / "attendee-2.kubeconfig").write_text(yaml.safe_dump(config))
    stale = admin.attendee_backend(tmp_path, Attendee(workshop_room.name, "attendee-2"))
    with pytest.raises(cluster.ForbiddenError) as err:
        stale.get_job("ch03-room", kind="Job")
    assert "401 Unauthorized" in str(err.value) and "ask the instructor for a new kubeconfig" in str(err.value)


def test_check_passes_on_the_healthy_room(workshop_room: WorkshopRoom) -> None:
    started = time.monotonic()
    done = workshop_room.command("check", "--json")
    record("room_check_s", round(time.monotonic() - started, 1))
    checks = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout
    names = [c["name"] for c in checks]
    assert names[:3] == ["API server", "training operator", "storage class"]
    assert any(n.startswith("node ") for n in names)
    assert {c["result"] for c in checks} == {"OK"}
    assert "is forbidden to read mnist-room-attendee-2" in json.dumps(checks)


def test_the_prepull_daemonset_holds_the_image_on_every_node(real_cluster: RealCluster) -> None:
    """docs/instructor.md's pre-pull: the DaemonSet's pod runs on every node (the image is there)."""
    from kubernetes import client

    from mnist_lib import settings
    from mnist_lib.room.objects import prepull_daemonset
    from mnist_lib.waiting import wait_until

    namespace = "mnist-room-prepull"
    kube = real_cluster.backend(namespace)
    kube.apply([manifests.namespace(namespace), prepull_daemonset(settings.image(), namespace)])
    apps = client.AppsV1Api(real_cluster.api_client())
    try:
        def all_ready():
            status = apps.read_namespaced_daemon_set_status("mnist-course-prepull", namespace).status
            return status.desired_number_scheduled and status.number_ready == status.desired_number_scheduled

        wait_until(all_ready, 120, interval=1.0)
    finally:
        kube.delete([manifests.namespace(namespace)])


def test_status_has_a_line_per_attendee(real_cluster: RealCluster, workshop_room: WorkshopRoom) -> None:
    done = workshop_room.command("status", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["attendee"]: r for r in json.loads(done.stdout)}
    assert sorted(rows) == ["attendee-1", "attendee-2", "attendee-3", "attendee-4"]
    assert "03" in rows["attendee-2"]["chapters"] and "03" in rows["attendee-3"]["chapters"]
    assert rows["attendee-4"]["chapters"] == [] and rows["attendee-4"]["cpu_hard"] == "2500m"
    table = workshop_room.command("status").stdout
    assert table.splitlines()[0].split()[:3] == ["attendee", "chapters", "running"]
    from mnist_lib.room.widget import RoomStatus  # the same, live, for the instructor's JupyterLab

    live = RoomStatus(workshop_room.name, admin.Cluster(real_cluster.api_client()))
    assert [r.attendee for r in live.refresh()] == sorted(rows) and "attendee-3" in live.value


def test_an_attendees_jupyterlab_in_the_cluster_runs_chapter_03_in_chromium(
        real_cluster: RealCluster, workshop_room: WorkshopRoom, tmp_path) -> None:
    """`room up --jupyter`: the attendee needs only a browser. The lab's kernel is the attendee's
    ServiceAccount (the pod's own token and namespace), its output folder is not the volume."""
    import subprocess

    from test_browser import (ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, DRIVER_DIR, RUN_TIMEOUT, devtools_url,
                              missing_tool, start, stop)

    reason = missing_tool()
    if reason:
        pytest.fail(f"the in-cluster JupyterLab test needs Chromium: {reason}")
    started = time.monotonic()
    done = workshop_room.command("up", "--attendees", "4", "--hours", "4", "--jupyter", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    record("room_up_jupyter_s", {"4": round(time.monotonic() - started, 1)})
    kube = admin.Cluster(real_cluster.api_client())
    url, forward = admin.jupyter_forward(kube, Attendee(workshop_room.name, "attendee-1"))
    ARTIFACTS.mkdir(exist_ok=True)
    profile = tmp_path / "chromium-profile"
    chrome = start([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                   ARTIFACTS / "chapter03-in-cluster-chromium.log")
    try:
        cdp = devtools_url(profile, chrome, ARTIFACTS / "chapter03-in-cluster-chromium.log")
        notebook = url.replace("/lab?", "/lab/tree/03_run_a_job.ipynb?")
        started = time.monotonic()
        driver = subprocess.run(["node", "run_notebook.mjs", "--cdp", cdp, "--artifacts", str(ARTIFACTS),
                                 "--url", notebook, "--sweep", "no", "--name", "chapter03-in-cluster",
                                 "--timeout-seconds", str(RUN_TIMEOUT)],
                                cwd=DRIVER_DIR, capture_output=True, text=True, timeout=RUN_TIMEOUT + 300)
        record("room_jupyter_chapter03_s", round(time.monotonic() - started, 1))
    finally:
        stop(chrome)
        forward.close()
    lines = driver.stdout.strip().splitlines()
    assert lines, f"the driver printed nothing; stderr:\n{driver.stderr[-3000:]}"
    report = json.loads(lines[-1])
    assert driver.returncode == 0 and not report["errors"], report["errors"]
    assert report["executed"] == report["codeCells"] > 10, report["steps"]
    assert "Job ch03-job: Succeeded (Pod: 1 succeeded)" in report["outputs"]
    assert "test accuracy above 95%: True" in report["outputs"]
    assert "mnist-room-attendee-1" in report["outputs"]  # chapter 03 prints where it runs: the pod's namespace


def test_down_leaves_nothing(real_cluster: RealCluster, workshop_room: WorkshopRoom) -> None:
    started = time.monotonic()
    done = workshop_room.command("down", "--json")
    record("room_down_s", {"4": round(time.monotonic() - started, 1)})
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["left"] == [], done.stdout
    assert len(report["namespaces"]) == 4 and len(report["cluster_objects"]) == 5  # 4 bindings + the ClusterRole
    assert room_writes(real_cluster, workshop_room) == {}
    kube = admin.Cluster(real_cluster.api_client())
    assert admin.leftovers(kube, workshop_room.name, report["namespaces"]) == []
    assert not list(workshop_room.folder.glob("*.kubeconfig"))


def test_check_names_the_missing_operator(cluster_without_operator: RealCluster, tmp_path) -> None:
    """Before the operator is installed (this test runs first, see order_last): the check says so."""
    import os
    import subprocess
    import sys

    env = {**os.environ, **cluster_without_operator.env}
    done = subprocess.run([sys.executable, "-m", "mnist_lib.room", "check", "--json", "--kubeconfig-dir",
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert done.returncode == 1
    assert checks["training operator"]["result"] == "FAIL"
    assert "install it" in checks["training operator"]["todo"]
    assert checks["API server"]["result"] == "OK" and checks["attendee access"]["result"] == "SKIP"
