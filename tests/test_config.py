"""Hyperparameters and paths are checked before TensorFlow starts, with useful messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mnist_lib.config import ConfigError, TrainConfig, config_from_args


@pytest.mark.parametrize("args, fragment", [
    (["--learning-rate", "0"], "--learning-rate must be a number in (0, 1]"),
    (["--learning-rate", "-0.01"], "--learning-rate"),
    (["--learning-rate", "nan"], "--learning-rate"),
    (["--learning-rate", "5"], "--learning-rate"),
    (["--hidden-layers", "9"], "--hidden-layers must be an integer from 0 to 8"),
    (["--hidden-layers", "-1"], "--hidden-layers"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--width", "0"], "--width"),
    (["--architecture", "resnet"], "--architecture must be one of cnn, mlp"),
    (["--model-name", "My Model"], "--model-name 'My Model' is not valid"),
])
def test_invalid_values_name_the_flag(args, fragment, tmp_path):
    with pytest.raises(ConfigError) as info:
        config_from_args(args + ["--model-dir", str(tmp_path / "m")], environ={})
    assert fragment in str(info.value)


def test_unwritable_folder_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="--export-dir .* cannot be created"):
        config_from_args(["--export-dir", str(blocker / "export")], environ={})


def test_environment_fills_in_and_flags_win(tmp_path):
    env = {"MNIST_LEARNING_RATE": "0.005", "MNIST_HIDDEN_LAYERS": "3",
           "MNIST_MODEL_DIR": str(tmp_path / "ck")}
    config = config_from_args(["--hidden-layers", "2"], environ=env)
    assert config.learning_rate == 0.005 and config.hidden_layers == 2
    assert config.model_dir == tmp_path / "ck"


def test_bad_environment_value_is_named():
    with pytest.raises(ConfigError, match="MNIST_EPOCHS='three'"):
        config_from_args([], environ={"MNIST_EPOCHS": "three"})


def test_to_args_round_trips(tmp_path):
    config = TrainConfig(learning_rate=0.003, hidden_layers=3, architecture="mlp",
                         model_dir=tmp_path / "m", log_dir=tmp_path / "l", export_dir=tmp_path / "e")
    again = config_from_args(config.to_args(), environ={})
    assert again == config


def test_cli_fails_fast_without_importing_tensorflow(tmp_path):
    code = ("import sys; from mnist_lib.train import main; "
            "rc = main(['--learning-rate', '-1']); "
            "print(rc, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["2", "False"]
    assert "error: --learning-rate must be" in done.stderr


def test_cli_rejects_non_numbers_with_usage():
    done = subprocess.run([sys.executable, "-m", "mnist_lib.train", "--epochs", "abc"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "--epochs must be a whole number, got 'abc'" in done.stderr
    assert "Traceback" not in done.stderr


def test_malformed_tf_config_is_bad_input():
    done = subprocess.run([sys.executable, "-m", "mnist_lib.train"], capture_output=True, text=True,
                          env={**__import__("os").environ, "TF_CONFIG": "{not json"})
    assert done.returncode == 2 and "TF_CONFIG is not valid JSON" in done.stderr
