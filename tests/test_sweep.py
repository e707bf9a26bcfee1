"""Hyperparameter sweeps: real trials on the local backend, checked like the 2018 sweep was not.

Trials are tiny (MLP, 3,000 images, 2-3 epochs): the machine has two cores.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jsonschema
import psutil
import pytest

from conftest import assert_no_processes_left

from mnist_lib import cluster, paths
from mnist_lib.cluster.local import LocalBackend
from mnist_lib.sweep import (FINISHED, MedianStop, SearchSpace, Sweep, SweepError, SweepSpec, Trial, TrialStatus,
                             load_sweep, promote)

TINY = {"architecture": "mlp", "train_limit": 3000, "batch_size": 100}
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A fresh MNIST_OUTPUT_DIR for the module: where the trials' /outputs lands."""
    root = tmp_path_factory.mktemp("sweep-outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNIST_OUTPUT_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def backend(outputs):
    b = LocalBackend(state_dir=outputs / ".state")
    yield b
    b.shutdown()
    assert_no_processes_left(b)




def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# -- the search space and the rules (no training) -------------------------------------------

def test_grid_is_log_spaced_and_random_is_seeded():
    space = SearchSpace(learning_rate=(1e-4, 1e-2), hidden_layers=(1, 3), learning_rate_values=3)
    assert space.learning_rates() == [1e-4, 1e-3, 1e-2]
    grid = space.grid()
    assert len(grid) == 9 and len({(p["learning_rate"], p["hidden_layers"]) for p in grid}) == 9
    draws = space.sample(20, seed=7)
    assert draws == space.sample(20, seed=7) != space.sample(20, seed=8)
    assert all(1e-4 <= p["learning_rate"] <= 1e-2 and 1 <= p["hidden_layers"] <= 3 for p in draws)
    # Log-uniform: about half of the draws below the geometric middle (1e-3), not ~10%.
    assert 5 <= sum(p["learning_rate"] < 1e-3 for p in draws) <= 15
    assert all(type(p["hidden_layers"]) is int and type(p["learning_rate"]) is float for p in draws)


@pytest.mark.parametrize("make, message", [
    (lambda: SearchSpace(learning_rate=(0.1, 0.001)), "0 < low <= high <= 1"),
    (lambda: SearchSpace(learning_rate=(0, 0.1)), "0 < low"),
    (lambda: SearchSpace(hidden_layers=(2, 9)), "hidden_layers"),
    (lambda: SearchSpace(hidden_layers=(1.5, 2)), "whole numbers"),
    (lambda: SearchSpace(widths=(64, 64)), "distinct"),
    (lambda: Sweep("Bad_Name"), "not a valid Kubernetes name"),
    (lambda: Sweep("s" * 50), "too long"),
    (lambda: Sweep("ok", search="bayes"), "search must be"),
    (lambda: Sweep("ok", parallel=0), "parallel"),
    (lambda: Sweep("ok", job_kind="Deployment"), "job_kind"),
    (lambda: Sweep("ok", max_trials=4), "grid has 9 points"),
    (lambda: Sweep("ok", fixed={"learning_rate": 0.1}), "searched"),
    (lambda: Sweep("ok", fixed={"epochz": 3}), "unknown hyperparameter"),
    # Values that would inject into a manifest (the 2018 sed templating) are refused.
    (lambda: Sweep("ok", trials=[{"learning_rate": "0.01\n        - --epochs=1000"}]), "--learning-rate"),
    (lambda: Sweep("ok", trials=[{"hidden_layers": "2; rm -rf /outputs"}]), "--hidden-layers"),
    (lambda: Sweep("ok", fixed={"model_name": "mnist\nkind: Pod"}), "--model-name"),
    (lambda: Sweep("ok", fixed={"architecture": "${trialParameters.x}"}), "--architecture"),
])
def test_bad_input_is_refused_before_anything_runs(make, message, outputs):
    with pytest.raises(SweepError, match=None) as caught:
        make()
    assert message in str(caught.value)
    assert not list(outputs.glob("ok-*")), "nothing may be written for a refused sweep"


def test_a_spec_and_the_short_form_make_the_same_sweep():
    space = SearchSpace(hidden_layers=(1, 2))
    spec = SweepSpec("same", space, job_kind="Job", retries=2, fixed=TINY)
    by_spec, short = Sweep(spec), Sweep("same", space, job_kind="Job", retries=2, fixed=TINY)
    assert by_spec.spec == short.spec == Sweep(name="same", space=space, job_kind="Job", retries=2, fixed=TINY).spec
    assert [t.params for t in by_spec.trials] == [t.params for t in short.trials] == spec.points()
    # The spec's retries become each trial's backoffLimit, built in by the manifest builder.
    assert {t.manifest["spec"]["backoffLimit"] for t in by_spec.trials} == {2}
    tfjob = Sweep(dataclasses.replace(spec, job_kind="TFJob", retries=0)).trials[0].manifest
    assert tfjob["spec"]["runPolicy"]["backoffLimit"] == 0
    with pytest.raises(SweepError, match="not both"):
        Sweep(spec, parallel=3)


def test_trial_statuses_keep_their_saved_words():
    """sweep.json and the plots hold these strings: they are Katib's words (Stopped for its Killed)."""
    assert list(TrialStatus) == ["Pending", "Running", "Succeeded", "Failed", "EarlyStopped", "Stopped"]
    assert FINISHED == {"Succeeded", "Failed", "EarlyStopped", "Stopped"}


def test_median_stop_rule():
    rule = MedianStop(min_trials=2, start_step=1)
    good = [[(1, 0.85), (2, 0.90)], [(1, 0.88), (2, 0.91)]]
    assert rule.reason_to_stop([(1, 0.10)], good[:1]) is None  # one completed trial is not enough
    assert "below the median 0.865" in rule.reason_to_stop([(1, 0.10)], good)
    assert rule.reason_to_stop([(1, 0.87)], good) is None      # above the median: keep going
    assert rule.reason_to_stop([(1, 0.92), (2, 0.80)], good) is None  # its *best* counts
    assert MedianStop(start_step=2).reason_to_stop([(1, 0.10)], good) is None


# -- real sweeps ------------------------------------------------------------------------------

@pytest.mark.slow
def test_tfjob_sweep_every_replica_gets_its_trial_and_a_failure_is_contained(backend, outputs, tmp_path):
    """4 TFJob trials of 2 workers; one is made to fail (no MNIST files where it looks)."""
    empty_data = tmp_path / "no-mnist-here"
    empty_data.mkdir()

    def break_trial_1(trial, job):
        if trial.name.endswith("-01"):
            for spec in job["spec"]["tfReplicaSpecs"].values():
                spec["template"]["spec"]["containers"][0]["env"].append(
                    {"name": "MNIST_DATA_DIR", "value": str(empty_data)})
        return job

    space = SearchSpace(learning_rate=(1e-3, 3e-3), learning_rate_values=2, hidden_layers=(1, 2), epochs=2)
    sweep = Sweep("tf-sweep", space, job_kind="TFJob", workers=2, parallel=2, fixed=TINY,
                  early_stopping=False, retries=0, backend=backend, customize_job=break_trial_1,
                  poll_interval=0.5)
    # What is submitted: a TFJob per trial, every replica with the trial's own values and folders.
    exports = set()
    for trial in sweep.trials:
        assert trial.manifest["kind"] == "TFJob" and trial.manifest["metadata"]["name"] == trial.name
        replicas = trial.manifest["spec"]["tfReplicaSpecs"]
        assert replicas["Worker"]["replicas"] == 2
        for spec in replicas.values():
            args = spec["template"]["spec"]["containers"][0]["args"]
            assert float(flag(args, "--learning-rate")) == trial.params["learning_rate"]
            assert int(flag(args, "--hidden-layers")) == trial.params["hidden_layers"]
            assert flag(args, "--export-dir") == f"/outputs/{trial.name}/export"
            assert flag(args, "--model-dir") == f"/outputs/{trial.name}/checkpoints"
            exports.add(flag(args, "--export-dir"))
    assert len(exports) == 4

    result = sweep.run()

    statuses = {t.name[-2:]: t.status for t in result.trials}
    assert statuses == {"00": "Succeeded", "01": "Failed", "02": "Succeeded", "03": "Succeeded"}, result.table()
    failed = result.trials[1]
    assert "failed" in failed.message and "no-mnist-here" in failed.logs, failed.logs
    for trial in result.trials:
        if trial.status != TrialStatus.SUCCEEDED:
            continue
        # Its own exported model, and a full curve read from its own event files.
        # (as pods name it: on the volume, which is `outputs` on the local backend)
        assert trial.export_path == f"/outputs/{trial.name}/export/mnist/1"
        assert (paths.on_this_machine(trial.export_path) / "saved_model.pb").is_file()
        assert [s for s, _ in trial.curve] == [1, 2] and trial.val_accuracy > 0.7
        assert trial.test_accuracy > 0.7
        # At run time too: each worker's log says it trained *this* trial's model.
        lr, layers = trial.params["learning_rate"], trial.params["hidden_layers"]
        for worker in (0, 1):
            text = (backend.state_dir / "logs" / backend.namespace / trial.name / f"worker-{worker}.log").read_text()
            assert f"[worker {worker}] Training MLP with {layers} hidden layer" in text, text[-1500:]
            assert f"learning rate {lr:g}," in text
    assert len({t.export_path for t in result.trials if t.export_path}) == 3
    assert result.best().status == TrialStatus.SUCCEEDED

    # Saved as it went, and reloadable.
    again = load_sweep(result.path)
    assert [(t.name, t.status, t.curve, t.params) for t in again.trials] == \
        [(t.name, t.status, t.curve, t.params) for t in result.trials]
    assert load_sweep("tf-sweep").name == sweep.name  # by name: its latest run
    assert backend.processes() == []


@pytest.fixture(scope="module")
def early_stopping_sweep(backend):
    """Seeded: two good learning rates, then 0.5, which makes Adam diverge."""
    sweep = Sweep("es-sweep", SearchSpace(epochs=3), job_kind="Job", parallel=1, fixed={**TINY, "seed": 1},
                  trials=[{"learning_rate": 0.001}, {"learning_rate": 0.003}, {"learning_rate": 0.5}],
                  backend=backend, poll_interval=0.5)
    return sweep.run()


@pytest.mark.slow
def test_median_stop_stops_the_diverging_trial(early_stopping_sweep, outputs):
    result = early_stopping_sweep
    good, better, bad = result.trials
    assert (good.status, better.status, bad.status) == ("Succeeded", "Succeeded", "EarlyStopped"), result.table()
    assert bad.epochs_done < 3 and bad.best_accuracy < 0.5
    assert "below the median" in bad.message
    assert not (outputs / bad.name / "export").exists() or not any((outputs / bad.name / "export").rglob("*.pb"))
    saved = result.time_saved_by_early_stopping()
    assert 0 < saved < good.seconds + better.seconds
    print(f"\nearly stopping: {bad.name} stopped after {bad.epochs_done} epoch(s), "
          f"{bad.seconds:.0f} s; saved ~{saved:.0f} s of a {result.wall_seconds:.0f} s sweep")


@pytest.mark.slow
def test_promote_best_model_and_serve_it(early_stopping_sweep, outputs):
    from mnist_lib.predict import PredictionClient
    from mnist_lib.serving import ModelServer

    result = early_stopping_sweep
    best = result.best()
    assert best.val_accuracy == max(t.val_accuracy for t in result.trials if t.status == TrialStatus.SUCCEEDED)
    with pytest.raises(SweepError, match="EarlyStopped"):
        promote(result.trials[2])

    base = outputs / "serving" / "mnist"
    base.mkdir(parents=True)
    with ModelServer(base, poll_interval=0.2) as server:  # started before any version exists
        first = promote(best)
        assert str(first) == "/outputs/serving/mnist/1" and (base / "1" / "saved_model.pb").is_file()
        server.wait_for_version(1, timeout=30)
        second = promote(best)  # promoting again makes a new version, never overwrites
        assert str(second) == "/outputs/serving/mnist/2"
        server.wait_for_version(2, timeout=30)
        assert not [p for p in base.iterdir() if p.name.startswith(".")], "staging folder left behind"
        client = PredictionClient(port=server.grpc_port, host="127.0.0.1")
        try:
            answer = client.predict_image(paths.digits_dir() / "4.png")
        finally:
            client.close()
        assert answer.model_version == 2
        assert answer.digit == 4, answer


@pytest.mark.slow
def test_stop_stops_and_cleans_up_every_trial(backend):
    sweep = Sweep("stop-sweep", SearchSpace(epochs=20), job_kind="Job", parallel=2, backend=backend,
                  fixed={**TINY, "train_limit": 20000},
                  trials=[{"learning_rate": 0.001}, {"learning_rate": 0.002}, {"learning_rate": 0.003}],
                  poll_interval=0.3).start()
    deadline = time.monotonic() + 120
    while sum(t.status == TrialStatus.RUNNING for t in sweep.trials) < 2 or len(backend.processes()) < 2:
        assert time.monotonic() < deadline, sweep.result().table()
        time.sleep(0.2)
    pids = backend.processes()
    result = sweep.stop()
    assert not sweep.running
    assert [t.status for t in result.trials] == [TrialStatus.STOPPED] * 3
    assert "never started" in result.trials[2].message
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert backend.processes() == []
    for trial in result.trials[:2]:
        with pytest.raises(cluster.NotFoundError):
            backend.get_job(trial.name)
    assert json.loads(Path(result.path).read_text())["trials"][0]["status"] == TrialStatus.STOPPED


def test_katib_equivalent_is_the_library_manifest():
    schema = jsonschema.Draft202012Validator(json.loads((DATA / "katib-experiment-v1beta1.schema.json").read_text()))
    sweep = Sweep("ch07-sweep", SearchSpace(learning_rate=(1e-4, 1e-2), hidden_layers=(1, 2)), fixed=TINY)
    experiment = sweep.katib_experiment()
    schema.validate(experiment)
    spec = experiment["spec"]
    values = {p["name"]: p["feasibleSpace"]["list"] for p in spec["parameters"]}
    assert values == {"learning_rate": ["0.0001", "0.001", "0.01"], "hidden_layers": ["1", "2"]}
    assert spec["maxTrialCount"] == len(sweep.trials) == 6
    assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    assert spec["metricsCollectorSpec"]["collector"]["kind"] == "TensorFlowEvent"


def test_trial_round_trips_through_json():
    trial = Trial("s-0000-00", {"learning_rate": 0.001, "hidden_layers": 2}, status=TrialStatus.SUCCEEDED,
                  curve=[(1, 0.5), (2, 0.75)])
    again = Trial.from_dict(json.loads(json.dumps(trial.to_dict())))
    assert again == trial and again.label == "lr 0.001, 2 layers" and again.status != TrialStatus.PENDING
