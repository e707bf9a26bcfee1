"""Tests for mnist_lib.manifests: the objects a cluster would receive, checked offline.

Built-in kinds are checked by kubernetes-validate against the real OpenAPI schemas
of Kubernetes (strict: unknown fields fail). The custom resources (TFJob, Katib
Experiment) and kind's config are checked against the schemas in tests/data, and
their pod templates against Kubernetes' own PodTemplateSpec.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mnist_lib import manifests as m
from mnist_lib.config import ConfigError
from mnist_lib.sweep_spec import SearchSpace, SweepSpec
from mnist_lib.tf_config import (
    MULTI_WORKER, WORKER, build_tf_config, operator_address, parse_tf_config,
)

DATA = Path(__file__).parent / "data"
VERSIONS = ("1.30", kubernetes_validate.latest_version())
CUSTOM_API_VERSIONS = ("kubeflow.org/v1", "kubeflow.org/v1beta1", "kind.x-k8s.io/v1alpha4")


def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((DATA / name).read_text()))


TFJOB_SCHEMA = schema("tfjob-v1.schema.json")
EXPERIMENT_SCHEMA = schema("katib-experiment-v1beta1.schema.json")
KIND_SCHEMA = schema("kind-cluster-v1alpha4.schema.json")


def committed_objects() -> list[dict]:
    """Every object of the committed files, in the library's file order."""
    return [obj for f in m.FILES
            for obj in yaml.safe_load_all((m.MANIFESTS_DIR / f.filename).read_text()) if obj]


def all_objects() -> list[dict]:
    """Every object of every manifests/ file, as the library builds it."""
    return [obj for f in m.FILES for obj in f.build()]


def by_kind(kind: str) -> list[dict]:
    return [o for o in all_objects() if o["kind"] == kind]


def pod_templates(obj: dict) -> dict[str, dict]:
    """{replica: pod template} of a Job, Deployment, TFJob or Experiment (its trial TFJob)."""
    if obj["kind"] == "Experiment":
        return pod_templates(obj["spec"]["trialTemplate"]["trialSpec"])
    if obj["kind"] == "TFJob":
        return {role: r["template"] for role, r in obj["spec"]["tfReplicaSpecs"].items()}
    if obj["kind"] in ("Job", "Deployment"):
        return {obj["kind"]: obj["spec"]["template"]}
    return {}


def job_objects() -> list[dict]:
    return [o for o in all_objects() if o["kind"] in ("Job", "TFJob", "Experiment")]


def validate_builtin(obj: dict, version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def validate_pod_template(template: dict, version: str) -> None:
    """A TFJob's pod template, checked as what it is: a core/v1 PodTemplateSpec."""
    validate_builtin({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                      "template": template}, version)


# -- the committed files are what the library builds --------------------------------

def test_committed_files_are_the_library_output():
    for filename, text in m.render_all().items():
        path = m.MANIFESTS_DIR / filename
        assert path.exists(), f"{path} missing: run python -m mnist_lib.manifests --write"
        assert path.read_text() == text, f"{path} is stale: run python -m mnist_lib.manifests --write"
    assert committed_objects() == all_objects()
    # FILES are the objects' files; the kustomize base (kustomization.yaml) is rendered beside them, not an object.
    assert {p.name for p in m.MANIFESTS_DIR.glob("*.yaml")} == {f.filename for f in m.FILES} | {m.BASE.filename}


def test_each_file_says_it_is_generated_and_how_to_use_it():
    for filename, text in m.render_all().items():
        header = text.split("---", 1)[0]
        assert "Generated from mnist_lib/manifests.py" in header, filename
        assert re.search(r"^# (Apply|Create): ", header, re.M), filename


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    assert m.main(["--write", "--dir", str(tmp_path)]) == 0
    assert m.main(["--check", "--dir", str(tmp_path)]) == 0
    job = tmp_path / "job.yaml"
    job.write_text(job.read_text().replace("--epochs\n        - '3'", "--epochs\n        - '30'"))
    capsys.readouterr()
    assert m.main(["--check", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "job.yaml" in out and "-        - '30'" in out and "+        - '3'" in out


def test_yaml_reads_top_down():
    text = m.to_yaml([{"spec": {}, "metadata": {"name": "x"}, "kind": "Namespace", "apiVersion": "v1"}])
    assert text.splitlines()[:4] == ["---", "apiVersion: v1", "kind: Namespace", "metadata:"]


# -- strict schema validation ------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_builtin_objects_pass_strict_validation(version):
    builtin = [o for o in all_objects() if o["apiVersion"] not in CUSTOM_API_VERSIONS]
    kinds = {o["kind"] for o in builtin}
    assert kinds == {"Namespace", "PersistentVolumeClaim", "Job", "Service", "Deployment", "ConfigMap"}
    for obj in builtin:
        validate_builtin(obj, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_tfjob_and_trial_pod_templates_are_valid_pod_templates(version):
    checked = 0
    for obj in by_kind("TFJob") + by_kind("Experiment"):
        for template in pod_templates(obj).values():
            validate_pod_template(template, version)
            checked += 1
    assert checked == 1 + 3 + 1  # multi-worker: Worker; PS job: Chief, PS, Worker; Katib trial: Worker


def test_tfjobs_follow_the_tfjob_v1_api():
    tfjobs = by_kind("TFJob") + [e["spec"]["trialTemplate"]["trialSpec"] for e in by_kind("Experiment")]
    assert len(tfjobs) == 3
    for obj, policy in zip(tfjobs, ["ExitCode", "ExitCode", "OnFailure"]):  # (Katib's trial: OnFailure)
        TFJOB_SCHEMA.validate(obj)
        for role, replica in obj["spec"]["tfReplicaSpecs"].items():
            container = replica["template"]["spec"]["containers"][0]
            assert container["name"] == "tensorflow", role  # the operator looks for this name
            assert {"name": "tfjob-port", "containerPort": 2222} in container["ports"], role
            assert replica["restartPolicy"] == policy
        assert obj["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"
        assert obj["spec"]["runPolicy"]["backoffLimit"] >= 1
        assert obj["spec"]["runPolicy"]["ttlSecondsAfterFinished"] > 0


def test_training_jobs_retry_lost_pods_but_not_bad_input():
    """Both Jobs: a new pod for a failure that running again can fix, the job failed at once for 1 or 2."""
    config = m.run_config("policy")
    jobs = [m.training_job("policy", config), m.indexed_job("policy", config)[1]]
    for job in jobs:
        spec = job["spec"]
        assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
        rules = spec["podFailurePolicy"]["rules"]
        assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
        assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [1, 2]
        assert rules[1]["onExitCodes"]["containerName"] == spec["template"]["spec"]["containers"][0]["name"]
    indexed = jobs[1]["spec"]
    assert indexed["backoffLimitPerIndex"] == m.RETRIES_PER_WORKER and indexed["maxFailedIndexes"] == 0
    assert indexed["podReplacementPolicy"] == "Failed" and "backoffLimit" not in indexed
    with pytest.raises(m.ManifestError, match="retries_per_worker"):
        m.indexed_job("policy", config, retries_per_worker=-1)


def test_parameter_servers_add_a_chief():
    config = m.run_config("ps-run")
    assert set(m.tfjob("ps-run", config)["spec"]["tfReplicaSpecs"]) == {"Worker"}
    replicas = m.tfjob("ps-run", config, workers=3, parameter_servers=2)["spec"]["tfReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Chief": 1, "PS": 2, "Worker": 3}


def test_katib_experiment_passes_katib_rules():
    """The Experiment schema, plus the rules of Katib's validating webhook that apply."""
    experiment = by_kind("Experiment")[0]
    EXPERIMENT_SCHEMA.validate(experiment)
    spec = experiment["spec"]
    template = spec["trialTemplate"]
    assert spec["objective"] == {**spec["objective"], "type": "maximize",
                                 "objectiveMetricName": "validation/epoch_accuracy"}
    assert spec["objective"]["objectiveMetricName"] not in spec["objective"]["additionalMetricNames"]
    assert spec["algorithm"]["algorithmName"] in ("random", "grid")
    assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    source = spec["metricsCollectorSpec"]["source"]["fileSystemPath"]
    assert spec["metricsCollectorSpec"]["collector"]["kind"] == "TensorFlowEvent"
    assert source["kind"] == "Directory" and source["path"].startswith("/")
    assert spec["parallelTrialCount"] <= spec["maxTrialCount"]
    assert spec["maxFailedTrialCount"] <= spec["maxTrialCount"]
    for p in spec["parameters"]:  # discrete lists take no min/max/step
        assert p["parameterType"] == "discrete" and p["feasibleSpace"]["list"]
        assert set(p["feasibleSpace"]) == {"list"}
    assert template["primaryContainerName"] == "tensorflow"
    assert template["successCondition"] and template["failureCondition"]
    # The trial TFJob: no name or namespace (Katib sets them), every trial parameter
    # used, and nothing else left to substitute.
    trial = template["trialSpec"]
    assert "name" not in trial["metadata"] and "namespace" not in trial["metadata"]
    names = [p["name"] for p in template["trialParameters"]]
    refs = [p["reference"] for p in template["trialParameters"]]
    assert len(set(names)) == len(names) and len(set(refs)) == len(refs)
    experiment_parameters = {p["name"] for p in spec["parameters"]}
    assert all(r in experiment_parameters or r == "${trialSpec.Name}" for r in refs)
    text = json.dumps(trial)
    for name in names:
        assert "${trialParameters.%s}" % name in text
        text = text.replace("${trialParameters.%s}" % name, "test-value")
    assert "${" not in text
    # The metrics are read in the primary pod, which must be the one writing them.
    primary = template["primaryPodLabels"]
    assert primary == {"training.kubeflow.org/replica-type": "worker",
                       "training.kubeflow.org/replica-index": "0"}
    args = pod_templates(trial)["Worker"]["spec"]["containers"][0]["args"]
    assert args[args.index("--log-dir") + 1] == source["path"]


def test_katib_objective_matches_what_training_writes():
    """Katib's TFEvent collector reads <run>/<tag>: training writes <log-dir>/validation/epoch_accuracy."""
    run, tag = m.OBJECTIVE.split("/")
    assert (run, tag) == ("validation", "epoch_accuracy")


def test_katib_with_parameter_servers_collects_from_the_chief():
    experiment = m.katib_experiment(SweepSpec("ps-sweep", search="random", max_trials=4), parameter_servers=1)
    EXPERIMENT_SCHEMA.validate(experiment)
    TFJOB_SCHEMA.validate(experiment["spec"]["trialTemplate"]["trialSpec"])
    assert experiment["spec"]["trialTemplate"]["primaryPodLabels"] == {
        "training.kubeflow.org/replica-type": "chief"}
    assert experiment["spec"]["maxTrialCount"] == 4


def test_kind_config_fields():
    config = by_kind("Cluster")[0]
    KIND_SCHEMA.validate(config)
    KIND_SCHEMA.validate(m.kind_cluster(workers=2))
    assert [n["role"] for n in m.kind_cluster(workers=2)["nodes"]] == ["control-plane", "worker", "worker"]


# -- the validators themselves catch mistakes ------------------------------------------

def test_strict_validation_catches_a_misspelt_field():
    job = copy.deepcopy(by_kind("Job")[0])
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolcy"] = container.pop("imagePullPolicy")
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        validate_builtin(job, VERSIONS[-1])


def test_pod_template_check_catches_a_misspelt_field_in_a_tfjob():
    template = copy.deepcopy(pod_templates(by_kind("TFJob")[0])["Worker"])
    template["spec"]["containers"][0]["volumeMount"] = template["spec"]["containers"][0].pop("volumeMounts")
    with pytest.raises(kubernetes_validate.ValidationError, match="volumeMount"):
        validate_pod_template(template, VERSIONS[0])


@pytest.mark.parametrize("path, value", [
    (("spec", "tfReplicaSpecs", "worker"), None),                      # replica type is case-sensitive
    (("spec", "runPolicy", "cleanPodPolicy"), "Completed"),            # not a policy
    (("spec", "tfReplicaSpecs", "Worker", "restartPolicy"), "Sometimes"),
    (("spec", "runPolicy", "ttlSecondsAfterFinish"), 60),              # misspelt
    (("spec", "tfReplicaSpec"), {}),                                   # misspelt
])
def test_tfjob_schema_catches_mistakes(path, value):
    obj = copy.deepcopy(by_kind("TFJob")[0])
    if path[-1] == "worker":
        obj["spec"]["tfReplicaSpecs"]["worker"] = obj["spec"]["tfReplicaSpecs"].pop("Worker")
    else:
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        TFJOB_SCHEMA.validate(obj)


def test_experiment_and_kind_schemas_catch_misspelt_fields():
    experiment = copy.deepcopy(by_kind("Experiment")[0])
    experiment["spec"]["trialTemplate"]["primaryContainer"] = "tensorflow"
    with pytest.raises(jsonschema.ValidationError, match="primaryContainer"):
        EXPERIMENT_SCHEMA.validate(experiment)
    config = m.kind_cluster()
    config["nodes"][0]["extraMount"] = []
    with pytest.raises(jsonschema.ValidationError, match="extraMount"):
        KIND_SCHEMA.validate(config)


# -- hyperparameters reach every replica (the 2018 bug) -----------------------------------

def distributed_objects() -> list[dict]:
    return by_kind("TFJob") + by_kind("Experiment") + [
        o for o in by_kind("Job") if o["spec"].get("completionMode") == "Indexed"]


def test_every_replica_gets_the_same_hyperparameters():
    assert len(distributed_objects()) == 4
    for obj in distributed_objects():
        templates = pod_templates(obj)
        args = {role: t["spec"]["containers"][0]["args"] for role, t in templates.items()}
        first = next(iter(args.values()))
        assert all(a == first for a in args.values()), f"{obj['metadata']}: replicas differ: {args}"
        for flag in ("--learning-rate", "--hidden-layers", "--epochs", "--batch-size", "--model-dir",
                     "--log-dir", "--export-dir"):
            assert flag in first, f"{flag} missing in {obj['kind']}"


def test_args_are_the_config_flags_and_dirs_are_the_runs_own():
    config = m.run_config("lr-sweep-3", learning_rate=0.005, hidden_layers=3, epochs=2)
    job = m.tfjob("lr-sweep-3", config, workers=3, parameter_servers=1)
    for role, template in pod_templates(job).items():
        args = template["spec"]["containers"][0]["args"]
        assert args == config.to_args(), role
        assert args[args.index("--learning-rate") + 1] == "0.005"
        assert args[args.index("--hidden-layers") + 1] == "3"
        assert args[args.index("--model-dir") + 1] == "/outputs/lr-sweep-3/checkpoints"
        assert args[args.index("--export-dir") + 1] == "/outputs/lr-sweep-3/export"


def test_katib_trials_substitute_hyperparameters_in_every_replica():
    experiment = m.katib_experiment(SweepSpec("sweep"), parameter_servers=1)
    for role, template in pod_templates(experiment).items():
        args = template["spec"]["containers"][0]["args"]
        assert args[args.index("--learning-rate") + 1] == "${trialParameters.learningRate}", role
        assert args[args.index("--hidden-layers") + 1] == "${trialParameters.hiddenLayers}", role
        # each trial exports to its own folder, so the best one can be served
        assert args[args.index("--export-dir") + 1] == "/outputs/${trialParameters.trialName}/export"


# -- security, istio, resources, labels, the shared volume --------------------------------

def all_pod_templates() -> list[tuple[str, dict]]:
    return [(f"{o['kind']} {o['metadata'].get('name')} {role}", t)
            for o in all_objects() for role, t in pod_templates(o).items()]


def test_every_pod_is_restricted_and_non_root():
    templates = all_pod_templates()
    assert len(templates) == 9  # 7 training pod templates, TensorBoard, serving
    for where, template in templates:
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 1000, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in template["spec"]["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where


def test_job_pods_opt_out_of_istio():
    for obj in job_objects():
        for role, template in pod_templates(obj).items():
            assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false", \
                f"{obj['kind']} {role}"


def test_every_container_has_requests_and_limits():
    for where, template in all_pod_templates():
        for container in template["spec"]["containers"]:
            resources = container["resources"]
            assert set(resources) == {"requests", "limits"}, where
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, where
            assert container["imagePullPolicy"] == "IfNotPresent", where


def test_every_pod_mounts_the_shared_volume_at_outputs():
    for where, template in all_pod_templates():
        volumes = template["spec"]["volumes"]
        assert {"name": "outputs", "persistentVolumeClaim": {"claimName": m.VOLUME_CLAIM}} in volumes, where
        for container in template["spec"]["containers"]:
            assert {"name": "outputs", "mountPath": "/outputs"}.items() <= container["volumeMounts"][0].items()


def test_every_object_and_pod_has_the_labels_a_backend_selects_on():
    for obj in all_objects():
        if obj["kind"] == "Cluster":
            continue
        labels = obj["metadata"]["labels"]
        assert labels[m.NAME_LABEL] == "mnist" and labels[m.PART_OF_LABEL] == "scaling-ml-course", obj["kind"]
        assert labels[m.RUN_LABEL], obj["kind"]
        for template in pod_templates(obj).values():
            assert labels[m.RUN_LABEL] == template["metadata"]["labels"][m.RUN_LABEL]
    for obj in by_kind("Service") + by_kind("Deployment"):
        selector = obj["spec"].get("selector", {})
        selector = selector.get("matchLabels", selector)
        pods = [t for o in all_objects() for t in pod_templates(o).values()
                if selector.items() <= t["metadata"]["labels"].items()]
        assert len(pods) == 1, f"{obj['kind']} {obj['metadata']['name']} selects {len(pods)} pod templates"


def test_serving_and_tensorboard():
    config_map, deployment, service = m.model_server()
    assert [config_map["kind"], deployment["kind"], service["kind"]] == ["ConfigMap", "Deployment", "Service"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == m.SERVING_IMAGE == "tensorflow/serving:2.20.0"
    assert container["command"] == ["tensorflow_model_server"]
    # The model config file, not --model_name/--model_base_path (TF Serving ignores those beside it).
    assert container["args"] == ["--port=8500", "--rest_api_port=8501",
                                 "--model_config_file=/etc/tensorflow-serving/models.config",
                                 "--model_config_file_poll_wait_seconds=30"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/models/mnist", "port": "http"}
    assert [p["port"] for p in service["spec"]["ports"]] == [8500, 8501]
    course = m.model_server(image=m.DEFAULT_IMAGE)[1]["spec"]["template"]["spec"]["containers"][0]
    assert course["command"] == ["python", "-m", "mnist_lib.serve"]
    assert course["args"] == container["args"] + ["--host=0.0.0.0"]  # reachable from the Service
    for image in ("docker.io/tensorflow/serving:2.20.0-gpu", "localhost:5000/tensorflow/serving",
                  "tensorflow/serving@sha256:" + "0" * 64):
        assert m.model_server(image=image)[1]["spec"]["template"]["spec"]["containers"][0]["command"] == \
            ["tensorflow_model_server"], image
    tb = m.tensorboard()[0]["spec"]["template"]["spec"]["containers"][0]
    assert tb["command"][:3] == ["tensorboard", "--logdir", "/outputs"]
    assert tb["volumeMounts"][0]["readOnly"] is True


def test_model_server_config_map_is_tf_servings_model_config_mounted_where_the_server_reads_it():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config_map, deployment, _ = m.model_server(model_base_path="/outputs/serving/mnist")
    assert config_map["metadata"]["name"] == "mnist-serving-config"  # from the Deployment's name
    assert config_map["metadata"]["labels"] == m.labels("mnist-serving-config", "serving")
    text = config_map["data"]["models.config"]
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())  # the official proto
    assert text == text_format.MessageToString(config)  # exactly the official text format
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("mnist", "/outputs/serving/mnist", "tensorflow")
    assert model.model_version_policy.WhichOneof("policy_choice") == "all"  # default: a client may ask for v1
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "serving-config", "configMap": {"name": "mnist-serving-config"}} in pod["volumes"]
    mount = next(v for v in pod["containers"][0]["volumeMounts"] if v["name"] == "serving-config")
    assert mount == {"name": "serving-config", "mountPath": "/etc/tensorflow-serving", "readOnly": True}
    assert "subPath" not in mount  # a subPath mount would never see the ConfigMap change
    flag = next(a for a in pod["containers"][0]["args"] if a.startswith("--model_config_file="))
    assert flag == f"--model_config_file={mount['mountPath']}/{next(iter(config_map['data']))}"
    # The other policies TF Serving knows:
    for policy, expected in (("latest", "latest"), ([2, 1], "specific")):
        text = m.model_server(version_policy=policy)[0]["data"]["models.config"]
        chosen = text_format.Parse(text, model_server_config_pb2.ModelServerConfig()) \
            .model_config_list.config[0].model_version_policy
        assert chosen.WhichOneof("policy_choice") == expected
    assert list(chosen.specific.versions) == [1, 2]
    # The rendered file shows the config as a readable block, as a learner would write it.
    assert "  models.config: |\n    model_config_list {\n" in m.render_all()["serving.yaml"]


# -- bad input gets a clear message at the boundary ---------------------------------------

@pytest.mark.parametrize("name, message", [
    ("MNIST", "not a valid Kubernetes name"),
    ("mnist_job", "not a valid Kubernetes name"),
    ("1-mnist", "not a valid Kubernetes name"),
    ("mnist-", "not a valid Kubernetes name"),
    ("", "not a valid Kubernetes name"),
    ("m" * 56, "too long: it becomes the pod hostname 'm{56}-worker-1'"),
])
def test_invalid_job_names_are_rejected(name, message):
    with pytest.raises(m.ManifestError, match=message):
        m.tfjob(name, m.run_config("ok"))


def test_longest_valid_names_are_accepted():
    m.tfjob("m" * 54, m.run_config("ok"))                  # m..m-worker-1: 63 characters
    m.indexed_job("m" * 61, m.run_config("ok"))            # m..m-1: 63 characters
    with pytest.raises(m.ManifestError, match="Shorten it by 1"):
        m.indexed_job("m" * 62, m.run_config("ok"))


@pytest.mark.parametrize("call, error, message", [
    (lambda: m.run_config("run", learning_rate=5), ConfigError, "--learning-rate"),
    (lambda: m.run_config("run", hidden_layers=-1), ConfigError, "--hidden-layers"),
    (lambda: m.run_config("run", lr=0.1), m.ManifestError, "unknown hyperparameter.*'lr'"),
    (lambda: m.run_config("Run"), m.ManifestError, "run name 'Run'"),
    (lambda: m.tfjob("a", m.run_config("a"), workers=0), m.ManifestError, "workers must be"),
    (lambda: m.tfjob("a", m.run_config("a"), parameter_servers=-1), m.ManifestError, "parameter_servers"),
    (lambda: m.training_job("a", m.run_config("a"), image="mnist course"), m.ManifestError, "image"),
    (lambda: m.training_job("a", m.run_config("a"), backoff_limit=-1), m.ManifestError, "backoff_limit"),
    (lambda: m.training_job("a", m.run_config("a"), namespace="My_NS"), m.ManifestError, "namespace"),
    (lambda: m.training_job("a", m.TrainConfig()), m.ManifestError, "not under /outputs"),
    (lambda: m.tensorboard(log_dir="/tmp/logs"), m.ManifestError, "not under /outputs"),
    (lambda: m.model_server(model_name="MNIST"), m.ManifestError, "model_name"),
    (lambda: m.model_server(version_policy="newest"), m.ManifestError, "version_policy"),
    (lambda: m.model_server(version_policy=[]), m.ManifestError, "version numbers"),
    (lambda: m.model_server(model_base_path="/models/mnist"), m.ManifestError, "not under /outputs"),
    (lambda: m.model_server("s" * 57), m.ManifestError, "too long"),  # s..s-config: 64 characters
    (lambda: m.volume_claim(size="5 GB"), m.ManifestError, "storage size"),
    (lambda: m.katib_experiment(SweepSpec(fixed={"batch_size": 0})), ConfigError, "--batch-size"),
    (lambda: m.katib_experiment(SweepSpec(space=SearchSpace(widths=(64, 128)))), m.ManifestError, "width"),
    (lambda: m.katib_experiment(SweepSpec("s" * 46)), m.ManifestError, "too long"),
])
def test_invalid_values_are_rejected_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


# -- the operator-free path gives each pod the TF_CONFIG the operator would ----------------

def test_indexed_job_tf_config_matches_the_operators():
    name, workers = "mnist-indexed", 3
    service, job = m.indexed_job(name, m.run_config(name), workers=workers, namespace="team-a")
    assert service["spec"]["clusterIP"] == "None"
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == workers
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    operator = operator_address(name, "team-a")
    for index in range(workers):
        # Kubernetes sets JOB_COMPLETION_INDEX in each pod of an Indexed Job.
        ours = parse_tf_config({**env, "JOB_COMPLETION_INDEX": str(index)})
        theirs = parse_tf_config({"TF_CONFIG": build_tf_config({"Worker": workers}, "worker", index, operator)})
        assert (ours.strategy, ours.task_type, ours.task_index) == \
               (theirs.strategy, theirs.task_type, theirs.task_index) == (MULTI_WORKER, WORKER, index)
        assert ours.is_chief == theirs.is_chief == (index == 0)
        assert {k: len(v) for k, v in ours.cluster.items()} == {k: len(v) for k, v in theirs.cluster.items()}
        # Same port, and each host is this pod's stable DNS name <job>-<index>.<service>, which the
        # namespace's DNS search path completes to <job>-<index>.<service>.<ns>.svc
        for i, (host, their_host) in enumerate(zip(ours.cluster["worker"], theirs.cluster["worker"])):
            assert host == f"{name}-{i}.{name}:2222"
            assert host.rsplit(":", 1)[1] == their_host.rsplit(":", 1)[1]


def test_serving_image_override(monkeypatch):
    """MNIST_SERVING_IMAGE replaces the official image (and so the command); the rendered file stays official."""
    monkeypatch.setenv("MNIST_SERVING_IMAGE", "mnist-course:latest")
    container = m.model_server()[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "mnist-course:latest"
    assert container["command"] == m.COURSE_SERVER
    assert "image: tensorflow/serving:2.20.0" in m.render_all()["serving.yaml"]
    monkeypatch.setenv("MNIST_SERVING_IMAGE", "")
    assert m.serving_image() == m.SERVING_IMAGE
