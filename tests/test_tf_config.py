"""TF_CONFIG as the Kubeflow training operator writes it, and how training reads it."""

from __future__ import annotations

import json

import pytest

from mnist_lib import tf_config as tc


def _env(replicas, task_type, index):
    return {"TF_CONFIG": tc.build_tf_config(replicas, task_type, index,
                                            tc.operator_address("mnist", "team-a"))}


def test_operator_format():
    config = json.loads(tc.build_tf_config({"Chief": 1, "PS": 1, "Worker": 2}, "Worker", 1,
                                           tc.operator_address("mnist", "team-a")))
    assert config == {
        "cluster": {"chief": ["mnist-chief-0.team-a.svc:2222"],
                    "ps": ["mnist-ps-0.team-a.svc:2222"],
                    "worker": ["mnist-worker-0.team-a.svc:2222", "mnist-worker-1.team-a.svc:2222"]},
        "task": {"type": "worker", "index": 1},
        "environment": "cloud",
    }


def test_single_replica_gets_no_tf_config_and_evaluator_is_not_in_cluster():
    assert tc.build_tf_config({"Worker": 1}, "Worker", 0, tc.operator_address("j", "n")) == ""
    config = json.loads(tc.build_tf_config({"Worker": 2, "Evaluator": 1}, "Evaluator", 0,
                                           tc.operator_address("j", "n")))
    assert set(config["cluster"]) == {"worker"}


def test_no_tf_config_means_single_process():
    role = tc.parse_tf_config({})
    assert role.strategy == tc.SINGLE and role.is_chief and role.runs_training_loop


def test_workers_only_is_multi_worker_with_worker_0_as_chief():
    roles = [tc.parse_tf_config(_env({"Worker": 3}, "Worker", i)) for i in range(3)]
    assert {r.strategy for r in roles} == {tc.MULTI_WORKER}
    assert [r.is_chief for r in roles] == [True, False, False]
    assert all(r.runs_training_loop for r in roles) and roles[0].num_workers == 3


def test_parameter_server_roles():
    shape = {"Chief": 1, "PS": 2, "Worker": 2}
    chief = tc.parse_tf_config(_env(shape, "Chief", 0))
    ps = tc.parse_tf_config(_env(shape, "PS", 1))
    worker = tc.parse_tf_config(_env(shape, "Worker", 0))
    assert chief.strategy == ps.strategy == worker.strategy == tc.PARAMETER_SERVER
    assert chief.is_chief and chief.runs_training_loop
    assert not worker.is_chief and not worker.runs_training_loop  # the chief sends it work
    assert not ps.runs_training_loop


@pytest.mark.parametrize("raw, fragment", [
    ("{oops", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"cluster": {"worker": "a:1"}}', "lists of"),
    ('{"cluster": {"boss": ["a:1"]}, "task": {"type": "boss"}}', "unknown roles"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
     "this is worker 2, but the cluster lists 2"),
    ('{"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}',
     "needs a Chief"),
])
def test_malformed_tf_config_is_explained(raw, fragment):
    with pytest.raises(tc.TFConfigError, match=fragment):
        tc.parse_tf_config({"TF_CONFIG": raw})


def test_indexed_job_derives_the_same_cluster_as_the_operator():
    hosts = tc.indexed_job_worker_hosts("mnist", "mnist-workers", 2)
    role = tc.parse_tf_config({tc.WORKER_HOSTS_ENV: hosts, "JOB_COMPLETION_INDEX": "1"})
    operator = tc.parse_tf_config(_env({"Worker": 2}, "Worker", 1))
    assert role.strategy == operator.strategy == tc.MULTI_WORKER
    assert (role.task_type, role.task_index) == (operator.task_type, operator.task_index)
    # no namespace: the pods' DNS search path completes it, so the Job runs in any namespace
    assert role.cluster["worker"] == ["mnist-0.mnist-workers:2222", "mnist-1.mnist-workers:2222"]


def test_name_addresses_keeps_structure_and_shows_wrong_addresses():
    address = tc.operator_address("job", "ns")
    raw = tc.build_tf_config({"Chief": 1, "PS": 1, "Worker": 2}, "Worker", 1, address)
    assert tc.name_addresses(raw, address) == (
        '{"cluster": {"chief": ["<chief 0>"], "ps": ["<ps 0>"], "worker": ["<worker 0>", "<worker 1>"]}, '
        '"task": {"type": "worker", "index": 1}, "environment": "cloud"}')
    # Swapped workers: the wrong addresses stay visible.
    swapped = raw.replace("job-worker-0", "TMP").replace("job-worker-1", "job-worker-0").replace("TMP", "job-worker-1")
    assert "job-worker-1.ns.svc:2222" in tc.name_addresses(swapped, address)
