"""The client (``PredictionClient``), its command line, and the server's command line."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
import tensorflow as tf
from PIL import Image

from mnist_lib import paths
from mnist_lib.data import load_numpy
from mnist_lib.predict import (
    InvalidInputError,
    ModelNotFoundError,
    PredictionClient,
    ServerUnavailableError,
    SignatureMismatchError,
    make_ndarray,
    make_tensor_proto,
)
from mnist_lib.serving import ModelServer
from conftest import free_port
import serving_support

export_dir = serving_support.export_dir  # a fixture: the tests below take it by name

PYTHON = sys.executable


@pytest.fixture(scope="module")
def server(export_dir):
    with ModelServer(export_dir / "mnist", version_policy="all") as running:  # v1 too, for pinned clients
        yield running


@pytest.fixture(scope="module")
def client(server):
    with PredictionClient("127.0.0.1", server.grpc_port) as c:
        yield c


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Three MNIST test digits saved as a user might have them: bigger, dark on light."""
    folder = tmp_path_factory.mktemp("images")
    digits, _ = load_numpy("test", limit=3)
    files = []
    for i, digit in enumerate(digits):
        path = folder / f"digit{i}.png"
        Image.fromarray(255 - digit).resize((84, 84), Image.Resampling.BILINEAR).save(path)
        files.append(path)
    return files


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=paths.COURSE_ROOT)


# ## Import cost

def test_client_import_leaves_tensorflow_out():
    code = (
        "import json, sys, time\n"
        "start = time.perf_counter()\n"
        "import mnist_lib.predict\n"
        "seconds = time.perf_counter() - start\n"
        "loaded = sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.python'))\n"
        "import tensorflow as tf\n"  # the real TensorFlow still imports and works afterwards
        "from mnist_lib.predict import make_ndarray\n"
        "ok = make_ndarray(tf.make_tensor_proto([[1.5, 2.0]])).tolist() == [[1.5, 2.0]]\n"
        "print(json.dumps({'seconds': seconds, 'loaded': loaded, 'ok': ok}))\n")
    result = run("-c", code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"import mnist_lib.predict: {report['seconds']:.3f} s")
    assert report["loaded"] == []
    assert report["ok"]


@pytest.mark.parametrize("typed_values", [False, True], ids=["tensor_content", "typed fields"])
def test_tensor_protos_read_back_as_tensorflow_reads_them(typed_values):
    # The client sends tensor_content; the stand-in server answers in float_val, int64_val, ...
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3) / 7, np.array([3, -1], np.int64),
                  np.array([[True], [False]])):
        proto = make_tensor_proto(array, typed_values=typed_values)
        assert bool(proto.tensor_content) != typed_values
        np.testing.assert_array_equal(tf.make_ndarray(proto), array)
        np.testing.assert_array_equal(make_ndarray(proto), array)
        assert make_ndarray(proto).dtype == array.dtype


# ## PredictionClient

def test_client_predicts_like_the_model(client, server):
    x = load_numpy("test", limit=20)[0] / np.float32(255)
    metadata = client.check_signature()
    assert metadata["version"] == 2
    assert metadata["signatures"]["serving_default"]["inputs"] == {"images": ("float32", [-1, 28, 28])}
    predictions = client.predict(x)
    expected = server.servable(2).signatures["serving_default"].function(images=tf.constant(x))
    assert [p.digit for p in predictions] == expected["classes"].numpy().tolist()
    np.testing.assert_array_equal([p.probabilities for p in predictions],
                                  expected["probabilities"].numpy())
    assert {p.model_version for p in predictions} == {2}
    digits, probabilities = client.predict_batch(x, batch_size=7)  # 3 requests
    assert digits.tolist() == [p.digit for p in predictions]
    assert probabilities.shape == (20, 10)
    single = client.predict(x[0])[0]  # one image [28, 28] works too
    # (equal up to rounding: matrix kernels sum in another order for a batch of 1)
    assert single.digit == predictions[0].digit
    np.testing.assert_allclose(single.probabilities, predictions[0].probabilities, rtol=1e-5)


def test_client_status_and_pinned_version(client, server):
    assert [(s["version"], s["state"], s["error_code"]) for s in client.status()] == [
        (2, "AVAILABLE", "OK"), (1, "AVAILABLE", "OK")]
    with server.client(version=1) as pinned:
        assert pinned.predict_batch(np.zeros((1, 28, 28), np.float32))[0].shape == (1,)
        assert pinned.predict(np.zeros((28, 28), np.float32))[0].model_version == 1


def test_client_predicts_image_files(client, image_files):
    one = client.predict_image(image_files[0])
    batch = client.predict_files(image_files)
    assert len(batch) == 3 and batch[0].digit == one.digit
    np.testing.assert_allclose(batch[0].probabilities, one.probabilities, rtol=1e-5)
    assert abs(sum(one.probabilities) - 1) < 1e-5


def test_client_errors_say_what_to_do(server):
    port = free_port()
    with PredictionClient("127.0.0.1", port, timeout=5) as nobody:
        with pytest.raises(ServerUnavailableError, match=f"127.0.0.1:{port}.*python -m mnist_lib.serve"):
            nobody.predict(np.zeros((28, 28), np.float32))
    with PredictionClient("127.0.0.1", server.grpc_port, model="fashion") as wrong:
        with pytest.raises(ModelNotFoundError, match=r"'fashion'.*Latest\(fashion\)"):
            wrong.predict(np.zeros((28, 28), np.float32))
    with PredictionClient("127.0.0.1", server.grpc_port, version=9) as missing:
        with pytest.raises(ModelNotFoundError, match="Could not find version 9 of model mnist"):
            missing.status()
    with PredictionClient("127.0.0.1", server.grpc_port) as client:
        with pytest.raises(InvalidInputError, match="divide by 255"):
            client.predict(np.full((28, 28), 255.0))
        with pytest.raises(InvalidInputError, match="prepare_image"):
            client.predict(np.zeros((32, 32)))


def test_signature_mismatch_is_explained(tmp_path):
    """A model exported with other names (as Keras' own model.export may do)."""

    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="input_layer")])
        def serve(self, input_layer):
            return {"output_0": tf.zeros([tf.shape(input_layer)[0], 10])}

    module = Other()
    tf.saved_model.save(module, str(tmp_path / "other" / "1"), signatures={"serving_default": module.serve})
    with ModelServer(tmp_path / "other", model_name="other", rest_api_port=None) as server, \
            PredictionClient("127.0.0.1", server.grpc_port, model="other") as client:
        with pytest.raises(SignatureMismatchError) as caught:
            client.predict(np.zeros((28, 28), np.float32))
    message = str(caught.value)
    assert "no input 'images' (it has ['input_layer'])" in message
    assert "no output 'probabilities'" in message and "export_for_serving" in message


# ## python -m mnist_lib.predict

def test_predict_cli_json_batch(server, client, image_files):
    result = run("-m", "mnist_lib.predict", "--host", "127.0.0.1", "--port", str(server.grpc_port),
                 "--model", "mnist", "--json", *sum((["--image", str(p)] for p in image_files), []))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    expected = client.predict_files(image_files)
    assert lines == [p.to_dict() for p in expected]
    assert all(set(line) == {"digit", "probabilities"} and len(line["probabilities"]) == 10
               for line in lines)


def test_predict_cli_human_output(server, client, image_files):
    result = run("-m", "mnist_lib.predict", "--host", "localhost", "--port", str(server.grpc_port),
                 "--version", "1", "--image", str(image_files[0]))
    assert result.returncode == 0, result.stderr
    with PredictionClient("127.0.0.1", server.grpc_port, version=1) as pinned:
        digit = pinned.predict_image(image_files[0]).digit
    assert result.stdout.startswith(f"{image_files[0]}: {digit} (probability")
    assert "version 1" in result.stdout
    assert re.search(rf"^  {digit}  [01]\.\d{{4}}.*<-$", result.stdout, re.MULTILINE)


def test_predict_cli_errors(server, image_files, tmp_path):
    port = free_port()
    nobody = run("-m", "mnist_lib.predict", "--port", str(port), "--image", str(image_files[0]))
    assert nobody.returncode == 1
    assert f"localhost:{port}" in nobody.stderr and "python -m mnist_lib.serve" in nobody.stderr

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    for bad, message in ((broken, "not a PNG/JPEG"), (tmp_path / "missing.png", "no such file")):
        result = run("-m", "mnist_lib.predict", "--port", str(server.grpc_port), "--image", str(bad))
        assert result.returncode == 2
        assert result.stderr.startswith("error: cannot read image") and message in result.stderr

    missing = run("-m", "mnist_lib.predict", "--port", str(server.grpc_port), "--model", "nope",
                  "--image", str(image_files[0]))
    assert missing.returncode == 1 and "Servable not found for request: Latest(nope)" in missing.stderr


# ## python -m mnist_lib.serve

def test_serve_cli_serves_and_stops_cleanly(export_dir):
    process = subprocess.Popen(
        # --port 0: any free port; --rest_api_port 0 would turn REST off, as in TF Serving
        [PYTHON, "-m", "mnist_lib.serve", "--port", "0", "--rest_api_port", str(free_port()), "--model_name",
         "mnist", "--model_base_path", str(export_dir / "mnist")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=paths.COURSE_ROOT)
    try:
        grpc_address = rest_url = None
        deadline = time.monotonic() + 120
        while rest_url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.strip().startswith("gRPC:"):
                grpc_address = line.split()[-1]
            if line.strip().startswith("REST:"):
                rest_url = line.split()[-1]
        assert grpc_address and rest_url, process.stderr.read() if process.poll() is not None else ""
        host, port = grpc_address.rsplit(":", 1)
        assert host == "127.0.0.1"
        with PredictionClient(host, int(port)) as client:
            assert client.predict(np.zeros((28, 28), np.float32))[0].model_version == 2
        assert requests.get(rest_url, timeout=10).json()["model_version_status"][0]["version"] == "2"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "Stopped." in process.stdout.read()
        with socket.socket() as sock:  # the port is free again
            sock.bind(("127.0.0.1", int(port)))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_cli_bad_base_path(tmp_path):
    result = run("-m", "mnist_lib.serve", "--model_base_path", str(tmp_path / "nowhere"),
                 "--port", "0")
    assert result.returncode == 2
    assert "error: model_base_path" in result.stderr and "does not exist" in result.stderr


def test_serve_cli_explains_a_bad_model_config_file_without_a_traceback(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'mnist' base_pth: '/outputs/x' } }")
    started = time.monotonic()
    result = run("-m", "mnist_lib.serve", "--port", "0", "--model_config_file", str(config))
    assert result.returncode == 2
    assert f"error: {config} is not a valid ModelServerConfig" in result.stderr
    assert 'no field named "base_pth"' in result.stderr and "model_version_policy { all {} }" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30  # refused before importing TensorFlow
    two = tmp_path / "two.config"
    two.write_text("model_config_list { config { name: 'a' base_path: '/m/a' model_platform: 'tensorflow' } "
                   "config { name: 'b' base_path: '/m/b' model_platform: 'tensorflow' } }")
    result = run("-m", "mnist_lib.serve", "--port", "0", "--model_config_file", str(two))
    assert result.returncode == 2 and "lists 2 models ('a', 'b')" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("-m", "mnist_lib.serve", "--port", "0")
    assert result.returncode == 2 and "--model_base_path" in result.stderr and "--model_config_file" in result.stderr
