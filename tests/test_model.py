"""The model and its export in TF Serving's layout, loaded back in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mnist_lib import model as mnist_model


@pytest.mark.parametrize("architecture", ["cnn", "mlp"])
def test_build_model_outputs_probabilities(architecture):
    model = mnist_model.build_model(architecture, hidden_layers=2, width=32)
    out = model(np.random.default_rng(0).random((3, 28, 28), dtype=np.float32))
    assert out.shape == (3, 10)
    np.testing.assert_allclose(np.sum(out, axis=1), 1.0, rtol=1e-5)
    hidden = [layer.name for layer in model.layers if layer.name.startswith("hidden_")]
    assert hidden == ["hidden_1", "hidden_2"]
    assert not model.compiled  # how it learns (optimizer, learning rate) is mnist_lib.train's


def test_hidden_layers_zero_is_a_linear_classifier():
    model = mnist_model.build_model("mlp", hidden_layers=0)
    assert model.count_params() == 28 * 28 * 10 + 10


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="architecture must be"):
        mnist_model.build_model("transformer")


def test_export_layout_versions_and_signature(tmp_path):
    model = mnist_model.build_model("mlp", hidden_layers=1, width=16)
    first = mnist_model.export_for_serving(model, tmp_path, "digits")
    second = mnist_model.export_for_serving(model, tmp_path, "digits")
    assert first == tmp_path / "digits" / "1" and second == tmp_path / "digits" / "2"
    assert (first / "saved_model.pb").is_file() and (first / "variables").is_dir()
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["1", "2"]  # no temp left
    with pytest.raises(FileExistsError, match="immutable"):
        mnist_model.export_for_serving(model, tmp_path, "digits", version=2)

    serve = mnist_model.load_exported(first)
    _, inputs = serve.structured_input_signature
    assert list(inputs) == ["images"] and inputs["images"].shape.as_list() == [None, 28, 28]
    assert set(serve.structured_outputs) == {"probabilities", "classes"}


def test_export_predicts_the_same_in_a_fresh_process(tmp_path):
    """What TF Serving would do: load the folder with no Python code of ours, predict."""
    model = mnist_model.build_model("mlp", hidden_layers=1, width=16)
    batch = np.random.default_rng(1).random((4, 28, 28), dtype=np.float32)
    expected = np.asarray(model(batch))
    path = mnist_model.export_for_serving(model, tmp_path, "mnist")
    np.save(tmp_path / "batch.npy", batch)
    code = f"""
import json, numpy as np, tensorflow as tf
fn = tf.saved_model.load({str(path)!r}).signatures["serving_default"]
out = fn(images=tf.constant(np.load({str(tmp_path / 'batch.npy')!r})))
print(json.dumps({{"p": out["probabilities"].numpy().tolist(), "c": out["classes"].numpy().tolist()}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["p"], expected, rtol=1e-5, atol=1e-6)
    assert result["c"] == list(np.argmax(expected, axis=1))
