"""The local model server against the official TF Serving client API (stubs, protos, REST).

Every test talks real gRPC / HTTP on 127.0.0.1 to a real SavedModel; servers
bind free ports and are stopped by their fixtures.
"""

from __future__ import annotations

import json
import random
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mnist_lib import manifests
from mnist_lib.serving import ModelServer
from mnist_lib.serving_config import ModelConfigError, model_server_config, to_text, version_policy
import serving_support
from serving_support import export_tiny

export_dir = serving_support.export_dir  # a fixture: the tests below take it by name

MAX_BATCH = 64


@pytest.fixture(scope="module")
def server(export_dir):
    # Both versions (model_version_policy { all {} }): most tests below ask for version 1.
    with ModelServer(export_dir / "mnist", version_policy="all", max_batch_size=MAX_BATCH) as running:
        yield running
    assert not running.running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_address) as chan:
        yield chan


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


def predict_request(x, name="mnist", version=None, input_name="images", **spec):
    """A PredictRequest built the way TF Serving's own examples do (tf.make_tensor_proto)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(x))
    return request


def reference(export_dir, version, x):
    """What the SavedModel itself answers, loaded independently of the server."""
    fn = tf.saved_model.load(str(export_dir / "mnist" / str(version))).signatures["serving_default"]
    out = fn(images=tf.constant(x))
    return out["probabilities"].numpy(), out["classes"].numpy()


# ## Predict, metadata, status, versions

def test_predict_is_identical_to_calling_the_savedmodel(server, stub, export_dir):
    x = images(5)
    response = stub.Predict(predict_request(x), timeout=10)
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    classes = tf.make_ndarray(response.outputs["classes"])
    expected_p, expected_c = reference(export_dir, 2, x)
    np.testing.assert_array_equal(probabilities, expected_p)
    np.testing.assert_array_equal(classes, expected_c)
    assert probabilities.shape == (5, 10) and probabilities.dtype == np.float32
    assert classes.dtype == np.int64
    # TF Serving answers in the typed fields: what the 2018 client read (.float_val).
    assert len(response.outputs["probabilities"].float_val) == 50
    assert list(response.outputs["classes"].int64_val) == expected_c.tolist()
    assert response.model_spec.name == "mnist"
    assert response.model_spec.version.value == 2  # highest by default
    assert response.model_spec.signature_name == "serving_default"


def test_specific_version_and_output_filter(server, stub, export_dir):
    x = images(3, seed=1)
    one = stub.Predict(predict_request(x, version=1), timeout=10)
    two = stub.Predict(predict_request(x, version=2), timeout=10)
    assert one.model_spec.version.value == 1 and two.model_spec.version.value == 2
    p1, p2 = (tf.make_ndarray(r.outputs["probabilities"]) for r in (one, two))
    np.testing.assert_array_equal(p1, reference(export_dir, 1, x)[0])
    assert not np.allclose(p1, p2)  # two different models really answered

    request = predict_request(x, version=1)
    request.output_filter.append("classes")
    filtered = stub.Predict(request, timeout=10)
    assert list(filtered.outputs) == ["classes"]


def test_metadata_is_the_savedmodels_signature(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mnist"
    response = stub.GetModelMetadata(request, timeout=10)
    assert response.model_spec.version.value == 2
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    signature = signature_map.signature_def["serving_default"]
    images_info = signature.inputs["images"]
    assert images_info.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in images_info.tensor_shape.dim] == [-1, 28, 28]
    assert signature.outputs["classes"].dtype == tf.int64.as_datatype_enum
    assert [d.size for d in signature.outputs["probabilities"].tensor_shape.dim] == [-1, 10]


def test_model_status_lists_available_versions(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "mnist"
    response = model_stub.GetModelStatus(request, timeout=10)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, available), (1, available)]
    request.model_spec.version.value = 1
    response = model_stub.GetModelStatus(request, timeout=10)
    assert [s.version for s in response.model_version_status] == [1]


def test_hot_loads_a_version_written_while_serving(tmp_path):
    """TF Serving's default policy: the new version replaces the old one, which ends (state END)."""
    export_tiny(tmp_path, seed=1, version=1)
    with ModelServer(tmp_path / "mnist", poll_interval=0.1, rest_api_port=None) as server, \
            grpc.insecure_channel(server.grpc_address) as chan:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)
        x = images(2)
        assert stub.Predict(predict_request(x), timeout=10).model_spec.version.value == 1
        export_tiny(tmp_path, seed=3)  # version 2, written by the course's atomic exporter
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # polls like a client would, no private hooks
            response = stub.Predict(predict_request(x), timeout=10)
            if response.model_spec.version.value == 2:
                break
            time.sleep(0.05)
        assert response.model_spec.version.value == 2
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["probabilities"]),
                                      reference(tmp_path, 2, x)[0])
        assert server.versions() == [2]
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "mnist"
        statuses = model_service_pb2_grpc.ModelServiceStub(chan).GetModelStatus(request).model_version_status
        State = get_model_status_pb2.ModelVersionStatus
        assert [(s.version, s.state, s.status.error_code) for s in statuses] == [
            (2, State.AVAILABLE, 0), (1, State.END, 0)]


def _not_served(stub, version):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(predict_request(images(1), version=version), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    return caught.value.details()


def test_by_default_only_the_latest_version_is_served_as_tf_serving_does(export_dir):
    with ModelServer(export_dir / "mnist") as server, grpc.insecure_channel(server.grpc_address) as chan:
        assert server.versions() == [2] and server.version_policy == "the latest version only"
        stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)
        assert stub.Predict(predict_request(images(1)), timeout=10).model_spec.version.value == 2
        # Version 1 is on disk, but not served: TF Serving's own NOT_FOUND.
        assert _not_served(stub, 1) == "Servable not found for request: Specific(mnist, 1)"
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "mnist"
        status.model_spec.version.value = 1
        with pytest.raises(grpc.RpcError, match="Could not find version 1 of model mnist"):
            model_service_pb2_grpc.ModelServiceStub(chan).GetModelStatus(status, timeout=10)
        response = requests.post(f"{server.rest_url}/versions/1:predict",
                                 json={"instances": images(1).tolist()}, timeout=10)
        assert response.status_code == 404
        assert response.json() == {"error": "Servable not found for request: Specific(mnist, 1)"}
        with pytest.raises(TimeoutError, match="the version policy serves the latest version only"):
            server.wait_for_version(1, timeout=0.2)


def _config_file(tmp_path, text, name="models.config"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("policy, served", [
    ("all", [1, 2]),
    ([1], [1]),
    ("latest", [2]),
    (version_policy("latest", num_versions=2), [1, 2]),
])
def test_model_config_file_chooses_the_versions(tmp_path, export_dir, policy, served):
    """The same ModelServerConfig text file TF Serving reads (--model_config_file)."""
    config = _config_file(tmp_path, to_text(model_server_config("mnist", export_dir / "mnist", policy)))
    with ModelServer(model_config_file=config, rest_api_port=None) as server, \
            grpc.insecure_channel(server.grpc_address) as chan:
        assert server.versions() == served
        stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)
        for version in served:
            assert stub.Predict(predict_request(images(1), version=version),
                                timeout=10).model_spec.version.value == version
        for version in {1, 2} - set(served):
            assert _not_served(stub, version) == f"Servable not found for request: Specific(mnist, {version})"
        # A request naming no version gets the highest one served.
        assert stub.Predict(predict_request(images(1)), timeout=10).model_spec.version.value == max(served)


def test_python_api_policies(export_dir):
    with ModelServer(export_dir / "mnist", version_policy=[1], rest_api_port=None) as server:
        assert server.versions() == [1] and server.version_policy == "specific versions [1]"
    for wrong in ("newest", [], ["1"], 3):
        with pytest.raises(ModelConfigError, match="version"):
            ModelServer(export_dir / "mnist", version_policy=wrong)
    with pytest.raises(ValueError, match="not both"):
        ModelServer(export_dir / "mnist", model_config_file=export_dir / "models.config")
    with pytest.raises(ValueError, match="model_base_path"):
        ModelServer()


def test_the_manifests_config_map_is_read_as_tf_serving_would(tmp_path, export_dir):
    """model_server()'s ConfigMap text, with the volume's path replaced by this machine's."""
    config_map = manifests.model_server(model_base_path="/outputs/serving/mnist")[0]
    text = config_map["data"][manifests.SERVING_CONFIG_FILE]
    config = _config_file(tmp_path, text.replace("/outputs/serving/mnist", str(export_dir / "mnist")))
    with ModelServer(model_config_file=config, rest_api_port=None) as server:
        assert server.versions() == [1, 2] and server.version_policy == "all versions"


BASE = 'base_path: "{base}" model_platform: "tensorflow"'
BAD_CONFIGS = {
    "not a proto": ("model_config_list { config { name: 'mnist' ", "not a valid ModelServerConfig"),
    "misspelt field": ("model_config_list { config { name: 'mnist' base_pth: '/x' } }",
                       'at line 1, column 44: Message type "tensorflow.serving.ModelConfig" has no field '
                       'named "base_pth"'),
    "empty": ("", "configures no model"),
    "two models": ("model_config_list { config { name: 'a' " + BASE + " } config { name: 'b' " + BASE + " } }",
                   "lists 2 models ('a', 'b'): the course's stand-in server serves one model"),
    "no name": ("model_config_list { config { " + BASE + " } }", "has no name"),
    "no base path": ("model_config_list { config { name: 'mnist' model_platform: 'tensorflow' } }",
                     "has no base_path"),
    "no platform": ("model_config_list { config { name: 'mnist' base_path: '{base}' } }",
                    'Illegal setting neither ModelServerConfig::model_type (deprecated) nor '
                    'ModelServerConfig::model_platform.'),
    "labels": ("model_config_list { config { name: 'mnist' " + BASE +
               " version_labels { key: 'stable' value: 1 } } }", "does not support labels"),
    "empty specific": ("model_config_list { config { name: 'mnist' " + BASE +
                       " model_version_policy { specific { } } } }", "lists no versions"),
    "custom config": ("custom_model_config { }", "custom_model_config"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_model_config_files_say_what_to_fix(tmp_path, export_dir, case):
    text, message = BAD_CONFIGS[case]
    config = _config_file(tmp_path, text.replace("{base}", str(export_dir / "mnist")))
    with pytest.raises(ModelConfigError) as caught:
        ModelServer(model_config_file=config)
    assert message in str(caught.value)
    assert str(config) in str(caught.value)  # which file
    with pytest.raises(ModelConfigError, match="no such file"):
        ModelServer(model_config_file=tmp_path / "missing.config")


def test_a_changed_config_file_is_applied_while_serving(tmp_path, export_dir):
    """--model_config_file_poll_wait_seconds: edit the file (a ConfigMap update), the versions follow."""
    base = export_dir / "mnist"
    config = _config_file(tmp_path, to_text(model_server_config("mnist", base, "latest")))
    with ModelServer(model_config_file=config, model_config_file_poll_wait_seconds=0.1,
                     poll_interval=0.1, rest_api_port=None) as server:
        assert server.versions() == [2]
        config.write_text(to_text(model_server_config("mnist", base, "all")))
        server.wait_for_version(1, timeout=30)
        assert server.versions() == [1, 2]
        config.write_text("model_config_list { config { name: 'mnist' base_pth: 'oops' } }")
        time.sleep(0.5)  # a broken file is logged, and the server keeps its previous config
        assert server.versions() == [1, 2] and server.version_policy == "all versions"
        config.write_text(to_text(model_server_config("mnist", base, [1])))
        deadline = time.monotonic() + 30
        while server.versions() != [1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.versions() == [1]


def test_ignores_incomplete_and_broken_versions(tmp_path):
    export_tiny(tmp_path, seed=1, version=1)
    (tmp_path / "mnist" / "5").mkdir()  # being copied: no saved_model.pb yet
    (tmp_path / "mnist" / "7").mkdir()
    (tmp_path / "mnist" / "7" / "saved_model.pb").write_bytes(b"not a model")
    (tmp_path / "mnist" / "notes").mkdir()
    with ModelServer(tmp_path / "mnist", version_policy="latest", rest_api_port=None) as latest:
        assert latest.versions() == []  # TF Serving too: the latest (7) is broken, 1 is not aspired
    with ModelServer(tmp_path / "mnist", version_policy="all", rest_api_port=None) as server, \
            grpc.insecure_channel(server.grpc_address) as chan:
        assert server.versions() == [1]
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "mnist"
        statuses = model_service_pb2_grpc.ModelServiceStub(chan).GetModelStatus(request).model_version_status
        broken = {s.version: s for s in statuses}[7]
        assert broken.state == get_model_status_pb2.ModelVersionStatus.END
        assert broken.status.error_code != 0 and "Error" in broken.status.error_message


def test_base_path_mistakes_are_explained(tmp_path, export_dir):
    with pytest.raises(FileNotFoundError, match="folder that contains the version folders"):
        ModelServer(tmp_path / "nowhere").start()
    with pytest.raises(ValueError, match="itself a SavedModel"):
        ModelServer(export_dir / "mnist" / "1").start()


def test_busy_port_is_a_clear_error(server, export_dir):
    with pytest.raises(OSError, match="in use"):
        ModelServer(export_dir / "mnist", port=server.grpc_port, rest_api_port=None).start()
    with pytest.raises(OSError, match="rest_api_port"):
        ModelServer(export_dir / "mnist", rest_api_port=server.rest_port).start()


def test_stop_frees_the_ports(export_dir):
    server = ModelServer(export_dir / "mnist").start()
    grpc_port, rest_port = server.grpc_port, server.rest_port
    session = requests.Session()
    assert session.get(server.rest_url, timeout=10).status_code == 200  # a kept-alive connection
    server.stop()
    again = ModelServer(export_dir / "mnist", port=grpc_port, rest_api_port=rest_port).start()
    again.stop()
    session.close()


# ## Errors: TF Serving's codes and wording, and the server keeps serving

def _double(x):
    return x.astype(np.float64)


ERROR_CASES = {
    "unknown model": (dict(name="nope"), grpc.StatusCode.NOT_FOUND,
                      "Servable not found for request: Latest(nope)"),
    "unknown version": (dict(version=7), grpc.StatusCode.NOT_FOUND,
                        "Servable not found for request: Specific(mnist, 7)"),
    "unknown label": (dict(version_label="stable"), grpc.StatusCode.INVALID_ARGUMENT,
                      "Unrecognized servable version label: stable"),
    "wrong input name": (dict(input_name="image"), grpc.StatusCode.INVALID_ARGUMENT,
                         "input tensor alias not found in signature: image"),
    "wrong dtype": (dict(x=lambda x: x.astype(np.float64)), grpc.StatusCode.INVALID_ARGUMENT,
                    "must be float32 [-1, 28, 28]"),
    "wrong rank": (dict(x=lambda x: x[0]), grpc.StatusCode.INVALID_ARGUMENT, "got shape [28, 28]"),
    "wrong size": (dict(x=lambda x: x[:, :, :27]), grpc.StatusCode.INVALID_ARGUMENT,
                   "got shape [4, 28, 27]"),
    "empty batch": (dict(x=lambda x: x[:0]), grpc.StatusCode.INVALID_ARGUMENT, "empty batch"),
    "NaN": (dict(x=lambda x: np.where(x > 0.5, np.nan, x).astype(np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    "0-255 pixels": (dict(x=lambda x: x * 255), grpc.StatusCode.INVALID_ARGUMENT, "divide them by 255"),
    "batch over the limit": (dict(x=lambda x: images(MAX_BATCH + 1)), grpc.StatusCode.INVALID_ARGUMENT,
                             f"limit of {MAX_BATCH}"),
    "unknown signature": (dict(signature_name="classify"), grpc.StatusCode.FAILED_PRECONDITION,
                          'Serving signature key "classify" not found'),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_predict_errors(stub, case):
    spec, code, message = ERROR_CASES[case]
    spec = dict(spec)
    x = spec.pop("x", lambda x: x)(images(4))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(predict_request(x, **spec), timeout=10)
    assert caught.value.code() == code
    assert message in caught.value.details()
    # ... and the server keeps serving.
    assert stub.Predict(predict_request(images(1)), timeout=10).outputs["classes"].int64_val


def test_missing_and_extra_inputs(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Missing but required: {images}" in caught.value.details()
    request = predict_request(images(1))
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto(images(1)))
    with pytest.raises(grpc.RpcError, match="Sent extra: {extra}"):
        stub.Predict(request, timeout=10)


def test_malformed_tensor_and_output_filter(stub):
    request = predict_request(images(2))
    request.inputs["images"].tensor_content = b"\0" * 12  # not 2*28*28 floats
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid tensor" in caught.value.details()
    request = predict_request(images(2))
    request.output_filter.append("logits")
    with pytest.raises(grpc.RpcError, match="output tensor alias not found in signature: logits"):
        stub.Predict(request, timeout=10)


def test_metadata_and_status_errors(stub, model_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "mnist"
    with pytest.raises(grpc.RpcError, match="at least one metadata_field"):
        stub.GetModelMetadata(request, timeout=10)
    request.metadata_field.append("signature_def")
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError, match=r"Latest\(nope\)"):
        stub.GetModelMetadata(request, timeout=10)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "mnist"
    status.model_spec.version.value = 9
    with pytest.raises(grpc.RpcError) as caught:
        model_stub.GetModelStatus(status, timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "Could not find version 9 of model mnist"


def test_unimplemented_methods_say_so(stub):
    from tensorflow_serving.apis import classification_pb2

    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(classification_pb2.ClassificationRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


# ## REST

def test_rest_status_and_metadata(server):
    status = requests.get(server.rest_url, timeout=10)
    assert status.status_code == 200
    assert status.json() == {"model_version_status": [
        {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in (2, 1)]}
    one = requests.get(f"{server.rest_url}/versions/1", timeout=10).json()
    assert [s["version"] for s in one["model_version_status"]] == ["1"]
    metadata = requests.get(f"{server.rest_url}/versions/1/metadata", timeout=10).json()
    assert metadata["model_spec"]["version"] == "1"
    inputs = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["images"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in inputs["images"]["tensor_shape"]["dim"]] == ["-1", "28", "28"]


def test_rest_predict_row_and_columnar(server, export_dir):
    x = images(3, seed=5)
    expected_p, expected_c = reference(export_dir, 2, x)
    rows = requests.post(f"{server.rest_url}:predict", json={"instances": x.tolist()}, timeout=10)
    assert rows.status_code == 200
    predictions = rows.json()["predictions"]
    assert [p["classes"] for p in predictions] == expected_c.tolist()
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected_p, rtol=1e-6)

    named = requests.post(f"{server.rest_url}:predict",
                          json={"signature_name": "serving_default",
                                "instances": [{"images": image} for image in x.tolist()]},
                          timeout=10).json()
    assert named == rows.json()

    columns = requests.post(f"{server.rest_url}/versions/1:predict",
                            json={"inputs": {"images": x.tolist()}}, timeout=10)
    assert columns.status_code == 200
    outputs = columns.json()["outputs"]
    expected_p1, expected_c1 = reference(export_dir, 1, x)
    assert outputs["classes"] == expected_c1.tolist()
    np.testing.assert_allclose(outputs["probabilities"], expected_p1, rtol=1e-6)


@pytest.mark.parametrize("path, body, status, message", [
    (":predict", b"{not json", 400, "JSON Parse error"),
    (":predict", b"[1, 2]", 400, "JSON object"),
    (":predict", json.dumps({"instances": [[1.0] * 28] * 28}).encode(), 400, "got shape [28, 28]"),
    (":predict", json.dumps({"instances": [[[0.5] * 28] * 27]}).encode(), 400, "got shape [1, 27, 28]"),
    (":predict", json.dumps({"instances": [[[0.5] * 28] * 28, [[0.5] * 3]]}).encode(), 400, "regular array"),
    (":predict", json.dumps({"instances": []}).encode(), 400, "got shape [0]"),
    (":predict", json.dumps({"inputs": {"image": [[[0.5] * 28] * 28]}}).encode(), 400, "alias not found"),
    (":predict", json.dumps({"instances": [], "inputs": []}).encode(), 400, "exactly one of"),
    (":predict", b'{"instances": [[[NaN]]]}', 400, "got shape [1, 1, 1]"),
    ("/versions/7:predict", b'{"instances": []}', 404, "Specific(mnist, 7)"),
    (":classify", b"{}", 501, "use :predict"),
    (":explode", b"{}", 404, "Malformed request"),
])
def test_rest_errors(server, path, body, status, message):
    response = requests.post(f"{server.rest_url}{path}", data=body, timeout=10)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert requests.get(server.rest_url, timeout=10).status_code == 200


def test_rest_unknown_model_and_path(server):
    base = f"http://{server.host}:{server.rest_port}"
    response = requests.get(f"{base}/v1/models/nope", timeout=10)
    assert response.status_code == 404
    assert response.json() == {"error": "Could not find any versions of model nope"}
    assert requests.get(f"{base}/v2/whatever", timeout=10).status_code == 404


# ## Fuzz: many random malformed requests; the server never fails and keeps answering

def _random_tensor(rng: random.Random):
    proto = tf.make_tensor_proto(np.zeros(0, np.float32))
    proto.dtype = rng.choice([0, 1, 2, 3, 4, 7, 9, 10, 14, 19, 99, -5])
    del proto.tensor_shape.dim[:]
    for _ in range(rng.randint(0, 5)):
        proto.tensor_shape.dim.add(size=rng.choice([-1, 0, 1, 2, 27, 28, 29, 10 ** 9, 2 ** 62]))
    proto.tensor_shape.unknown_rank = rng.random() < 0.1
    kind = rng.randint(0, 3)
    if kind == 0:
        proto.tensor_content = rng.randbytes(rng.choice([0, 3, 4, 3136, 6272]))
    elif kind == 1:
        proto.float_val.extend(rng.uniform(-1e30, 1e30) for _ in range(rng.choice([0, 1, 5, 784])))
    elif kind == 2:
        proto.int64_val.extend(rng.randint(-2 ** 63, 2 ** 63 - 1) for _ in range(rng.randint(0, 4)))
    else:
        proto.string_val.append(rng.randbytes(10))
    return proto


def test_fuzz_grpc_and_rest(server, stub, channel):
    rng = random.Random(20260401)
    raw_predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                      request_serializer=None, response_deserializer=None)
    allowed = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
               grpc.StatusCode.FAILED_PRECONDITION}
    seen = {}
    deadline = time.monotonic() + 30
    for i in range(300):
        if time.monotonic() > deadline:
            break
        if i % 10 == 9:  # bytes that are not even a PredictRequest
            with pytest.raises(grpc.RpcError) as caught:
                raw_predict(rng.randbytes(rng.randint(1, 200)), timeout=10)
            assert caught.value.code() in allowed | {grpc.StatusCode.INTERNAL}  # grpc's parse error
            continue
        request = predict_pb2.PredictRequest()
        request.model_spec.name = rng.choice(["mnist", "mnist", "", "x" * 300])
        if rng.random() < 0.3:
            request.model_spec.version.value = rng.choice([-1, 0, 1, 2, 3, 2 ** 62])
        if rng.random() < 0.1:
            request.model_spec.signature_name = rng.choice(["", "serving_default", "__saved_model_init_op"])
        for _ in range(rng.choice([0, 1, 1, 1, 2])):
            request.inputs[rng.choice(["images", "images", "x", ""])].CopyFrom(_random_tensor(rng))
        if rng.random() < 0.1:
            request.output_filter.append(rng.choice(["classes", "nope", "classes"]))
        try:
            stub.Predict(request, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            assert code in allowed, (code, error.details())
        seen[code] = seen.get(code, 0) + 1
    assert sum(seen.values()) >= 50
    assert grpc.StatusCode.INVALID_ARGUMENT in seen

    session = requests.Session()
    bodies = [rng.randbytes(rng.randint(0, 300)) for _ in range(40)] + [
        json.dumps(rng.choice([{"instances": rng.random()}, {"inputs": [[["a"]]]},
                               {"instances": [[[rng.random()] * 28] * 28] * rng.randint(0, 3)},
                               {"inputs": {"images": None}}, {"signature_name": 5, "instances": []},
                               {"instances": [{"images": 1}, {"other": 2}]}, []])).encode()
        for _ in range(40)]
    for body in bodies:
        path = rng.choice([":predict", "/versions/1:predict", "/labels/x:predict", "/metadata", ""])
        response = session.post(f"{server.rest_url}{path}", data=body, timeout=10)
        assert response.status_code < 500, response.text
        if response.status_code != 200:
            assert "error" in response.json()
    session.close()

    # Still serving, still right.
    x = images(2)
    np.testing.assert_array_equal(
        tf.make_ndarray(stub.Predict(predict_request(x), timeout=10).outputs["probabilities"]),
        server.servable().signatures["serving_default"].function(images=tf.constant(x))[
            "probabilities"].numpy())
