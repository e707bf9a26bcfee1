"""MNIST from the files the course ships: checked, then loaded as numpy or tf.data.

The four original IDX files (gzip) live in ``data/mnist``. Nothing is downloaded:
workshop Wi-Fi is not to be trusted, and a cluster pod should not fetch its data
at start-up (the 2018 course had every replica download MNIST).

Splits used throughout the course:

- ``train``: the first 55,000 training images,
- ``validation``: the last 5,000 training images (what hyperparameters are chosen on),
- ``test``: the 10,000 test images (reported once, at the end).

Run ``python -m mnist_lib.data`` to check the files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import struct
import sys
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnist_lib import paths
from mnist_lib.constants import IMAGE_SIZE

if TYPE_CHECKING:  # TensorFlow is imported only when a tf.data pipeline is built.
    import tensorflow as tf

TRAIN_SIZE = 55_000
VALIDATION_SIZE = 5_000
SPLITS = ("train", "validation", "test")

_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
_IMAGES_HEADER, _LABELS_HEADER = 16, 8


@dataclass(frozen=True)
class IdxFile:
    name: str  # file name in the data folder (gzip-compressed)
    sha256: str  # of the *decompressed* bytes: gzip output differs between compressors
    magic: int
    count: int

    @property
    def header_bytes(self) -> int:
        return _IMAGES_HEADER if self.magic == _IMAGES_MAGIC else _LABELS_HEADER

    @property
    def record_bytes(self) -> int:
        return IMAGE_SIZE * IMAGE_SIZE if self.magic == _IMAGES_MAGIC else 1

    @property
    def size(self) -> int:
        return self.header_bytes + self.count * self.record_bytes


FILES = {
    "train-images": IdxFile("train-images-idx3-ubyte.gz",
                            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                            _IMAGES_MAGIC, 60_000),
    "train-labels": IdxFile("train-labels-idx1-ubyte.gz",
                            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                            _LABELS_MAGIC, 60_000),
    "test-images": IdxFile("t10k-images-idx3-ubyte.gz",
                           "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                           _IMAGES_MAGIC, 10_000),
    "test-labels": IdxFile("t10k-labels-idx1-ubyte.gz",
                           "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                           _LABELS_MAGIC, 10_000),
}

RESTORE_HINT = (
    "Restore the course's copy with `git checkout -- data/mnist` (or `git lfs pull` if you "
    "cloned without it), or, with internet access, rebuild it with "
    "`python -m mnist_lib.data --download`."
)


class MnistDataError(RuntimeError):
    """An MNIST file is missing, truncated or corrupt. The message says which and how to fix it."""


def _problem(path: Path, what: str) -> MnistDataError:
    return MnistDataError(f"MNIST file {path}: {what}. {RESTORE_HINT}")


def _read_verified(path: Path, spec: IdxFile) -> bytes:
    """Decompress ``path`` and check header, size and SHA-256; return the raw IDX bytes."""
    if not path.exists():
        raise _problem(path, "is missing")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise _problem(path, f"is not a readable gzip file ({err}); it is probably truncated") from None
    if len(raw) < spec.header_bytes:
        raise _problem(path, f"has only {len(raw)} bytes after decompression")
    magic, count = struct.unpack(">ii", raw[:8])
    if magic != spec.magic:
        raise _problem(path, f"has magic number {magic}, expected {spec.magic}: it is not this IDX file")
    if count != spec.count or len(raw) != spec.size:
        raise _problem(path, f"holds {len(raw)} bytes for {count} items, expected "
                             f"{spec.size} bytes for {spec.count}: it is truncated or altered")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise _problem(path, f"has SHA-256 {digest[:16]}..., expected {spec.sha256[:16]}...: "
                             "its content is corrupt")
    return raw


@lru_cache(maxsize=None)
def _verified_bytes(path: Path, mtime_ns: int, size: int, key: str) -> bytes:
    # Keyed on mtime and size so that a file replaced while Python runs is checked again.
    return _read_verified(path, FILES[key])


def read_idx(key: str, data_dir: Path | None = None) -> bytes:
    """The verified, decompressed bytes of one IDX file (``"train-images"``, ...)."""
    path = Path(data_dir or paths.data_dir()) / FILES[key].name
    if not path.exists():
        raise _problem(path, "is missing")
    stat = path.stat()
    return _verified_bytes(path, stat.st_mtime_ns, stat.st_size, key)


def verify_mnist(data_dir: Path | None = None) -> dict[str, str]:
    """Check all four files; return ``{file name: sha256}``. Raises :class:`MnistDataError`."""
    result = {}
    for key, spec in FILES.items():
        read_idx(key, data_dir)
        result[spec.name] = spec.sha256
    return result


def _split_range(split: str) -> tuple[str, int, int]:
    """(file prefix, first index, count) of a split."""
    if split == "train":
        return "train", 0, TRAIN_SIZE
    if split == "validation":
        return "train", TRAIN_SIZE, VALIDATION_SIZE
    if split == "test":
        return "test", 0, FILES["test-images"].count
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def load_numpy(split: str, limit: int | None = None,
               data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, ``[N, 28, 28]``, 0..255) and labels (uint8, ``[N]``) of a split.

    For plots and quick checks. Training reads the files through :func:`make_dataset`.
    """
    prefix, start, count = _split_range(split)
    if limit:
        count = min(count, int(limit))
    images = np.frombuffer(read_idx(f"{prefix}-images", data_dir), np.uint8, offset=_IMAGES_HEADER)
    labels = np.frombuffer(read_idx(f"{prefix}-labels", data_dir), np.uint8, offset=_LABELS_HEADER)
    images = images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)[start:start + count]
    return images.copy(), labels[start:start + count].copy()


def make_dataset(split: str, batch_size: int, *, shuffle: bool = False, seed: int = 42,
                 limit: int | None = None, repeat: bool = False, drop_remainder: bool = False,
                 data_dir: Path | None = None, verify: bool = True) -> "tf.data.Dataset":
    """A tf.data pipeline of ``(images float32 [B, 28, 28] in 0..1, labels int64 [B])``.

    It reads the gzip IDX files with TensorFlow ops (``FixedLengthRecordDataset``),
    not numpy: under parameter-server training this function runs *on the worker
    processes*, which must read the data themselves. ``verify`` checks the
    checksums first (in Python, once per process).
    """
    import tensorflow as tf

    data_dir = Path(data_dir or paths.data_dir())
    prefix, start, count = _split_range(split)
    if limit:
        count = min(count, int(limit))
    if verify:
        read_idx(f"{prefix}-images", data_dir)
        read_idx(f"{prefix}-labels", data_dir)

    def records(key: str) -> tf.data.Dataset:
        spec = FILES[key]
        return tf.data.FixedLengthRecordDataset(
            str(data_dir / spec.name), spec.record_bytes,
            header_bytes=spec.header_bytes, compression_type="GZIP",
        ).skip(start).take(count)

    ds = tf.data.Dataset.zip(records(f"{prefix}-images"), records(f"{prefix}-labels"))
    ds = ds.cache()  # raw bytes in memory after the first pass: decompress once
    if shuffle:
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def decode(image_bytes, label_bytes):
        # decode_raw on a batch of strings decodes the whole batch in one op.
        images = tf.io.decode_raw(image_bytes, tf.uint8)
        images = tf.cast(tf.reshape(images, [-1, IMAGE_SIZE, IMAGE_SIZE]), tf.float32) / 255.0
        labels = tf.cast(tf.reshape(tf.io.decode_raw(label_bytes, tf.uint8), [-1]), tf.int64)
        return images, labels

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def download_mnist(data_dir: Path | None = None) -> Path:
    """Rebuild the four IDX files from Keras' copy of MNIST (needs internet).

    Optional: the course ships the files, and nothing calls this on its own.
    The IDX bytes written are the original ones, so the checksums still hold.
    """
    import keras

    data_dir = Path(data_dir or paths.data_dir())
    missing = [spec.name for spec in FILES.values() if not (data_dir / spec.name).exists()]
    if not missing:
        print(f"All MNIST files are present in {data_dir}; nothing to download.")
        return data_dir
    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    arrays = {"train-images": x_train, "train-labels": y_train,
              "test-images": x_test, "test-labels": y_test}
    data_dir.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        spec = FILES[key]
        header = struct.pack(">ii", spec.magic, len(array))
        if spec.magic == _IMAGES_MAGIC:
            header += struct.pack(">ii", IMAGE_SIZE, IMAGE_SIZE)
        with gzip.open(data_dir / spec.name, "wb") as f:
            f.write(header + array.astype(np.uint8).tobytes())
    verify_mnist(data_dir)
    return data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_lib.data",
                                     description="Check (or, with --download, rebuild) the MNIST files.")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--download", action="store_true",
                        help="download missing files through Keras (needs internet)")
    args = parser.parse_args(argv)
    try:
        if args.download:
            download_mnist(args.data_dir)
        for name, digest in verify_mnist(args.data_dir).items():
            print(f"ok  {name}  sha256 {digest[:16]}...")
    except MnistDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
