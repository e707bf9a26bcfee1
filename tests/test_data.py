"""The shipped MNIST files: checksums, clear errors on damage, loaders that agree."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mnist_lib import data


@pytest.fixture
def data_copy(tmp_path):
    """A private copy of data/mnist that a test may damage."""
    target = tmp_path / "mnist"
    shutil.copytree(data.paths.data_dir(), target)
    return target


def test_shipped_files_verify():
    digests = data.verify_mnist()
    assert set(digests) == {spec.name for spec in data.FILES.values()}


def test_numpy_splits_have_the_documented_sizes_and_labels():
    x_train, y_train = data.load_numpy("train")
    x_val, y_val = data.load_numpy("validation")
    x_test, y_test = data.load_numpy("test")
    assert x_train.shape == (55_000, 28, 28) and x_val.shape == (5_000, 28, 28)
    assert x_test.shape == (10_000, 28, 28) and x_train.dtype == np.uint8
    # The first labels published with MNIST (see ../shared/mnist/README.md).
    assert list(y_train[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert list(y_test[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert set(np.unique(y_val)) == set(range(10))
    assert x_test.max() == 255 and x_test.min() == 0
    assert len(data.load_numpy("test", limit=7)[0]) == 7


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_numpy("training")


def _expect_error(data_dir, file_name, *fragments):
    with pytest.raises(data.MnistDataError) as info:
        data.verify_mnist(data_dir)
    message = str(info.value)
    assert file_name in message
    assert "git checkout -- data/mnist" in message  # says how to restore
    for fragment in fragments:
        assert fragment in message


def test_missing_file_is_named(data_copy):
    (data_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    _expect_error(data_copy, "t10k-labels-idx1-ubyte.gz", "is missing")


def test_truncated_gzip_is_named(data_copy):
    path = data_copy / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    _expect_error(data_copy, "train-labels-idx1-ubyte.gz", "truncated")


def test_one_flipped_byte_fails_the_checksum(data_copy):
    path = data_copy / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[5000] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(raw)))
    _expect_error(data_copy, "t10k-images-idx3-ubyte.gz", "SHA-256", "corrupt")


def test_swapped_files_are_caught_by_magic_number(data_copy):
    shutil.copy(data_copy / "t10k-labels-idx1-ubyte.gz", data_copy / "t10k-images-idx3-ubyte.gz")
    _expect_error(data_copy, "t10k-images-idx3-ubyte.gz", "magic number")


def test_cli_reports_damage_without_traceback(data_copy):
    (data_copy / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    done = subprocess.run([sys.executable, "-m", "mnist_lib.data", "--data-dir", str(data_copy)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: MNIST file") and "Traceback" not in done.stderr


def test_tf_pipeline_matches_numpy_loader():
    images, labels = next(iter(data.make_dataset("validation", 64)))
    x_val, y_val = data.load_numpy("validation", limit=64)
    assert images.shape == (64, 28, 28) and images.dtype.name == "float32"
    assert labels.dtype.name == "int64"
    np.testing.assert_allclose(images.numpy(), x_val / 255.0, atol=1e-7)
    np.testing.assert_array_equal(labels.numpy(), y_val)


def test_tf_pipeline_shuffles_reproducibly_and_covers_the_split():
    def labels(seed):
        ds = data.make_dataset("train", 500, shuffle=True, seed=seed, limit=2000)
        return np.concatenate([y.numpy() for _, y in ds])

    first, again, other = labels(1), labels(1), labels(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    _, y = data.load_numpy("train", limit=2000)
    np.testing.assert_array_equal(np.sort(first), np.sort(y))  # same images, new order
