"""The model: a small CNN (default) or an MLP, and its export for TF Serving.

Two hyperparameters are the ones the 2018 course tuned and chapter 07 sweeps:
the **learning rate** and the **number of hidden layers** (dense layers between
the features and the 10-way softmax).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
from keras import layers

from mnist_lib import runs
from mnist_lib.config import ARCHITECTURES
# The serving contract, which TF Serving's clients (chapter 06) rely on, is in constants.
from mnist_lib.constants import (IMAGE_SIZE, INPUT_NAME, MODEL_NAME, NUM_CLASSES, OUTPUT_CLASSES,
                                 OUTPUT_PROBABILITIES, SIGNATURE_NAME)


def build_model(architecture: str = "cnn", hidden_layers: int = 1, width: int = 128,
                dropout: float = 0.2) -> keras.Model:
    """Build the classifier. Input ``[batch, 28, 28]`` in 0..1, output softmax.

    ``cnn``: two convolution + pooling blocks extract stroke features, then
    ``hidden_layers`` dense layers of ``width`` units. ``mlp``: the pixels go
    straight into the dense layers. The model is not compiled: the layers are
    the model, while how it learns (optimizer, learning rate, loss) belongs to
    the training loop, :func:`mnist_lib.train.train`. To use ``model.fit``,
    compile it yourself.
    """
    if architecture not in ARCHITECTURES:  # else a typo would silently build an MLP
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE), name=INPUT_NAME)
    if architecture == "cnn":
        x = layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1))(inputs)
        x = layers.Conv2D(32, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Conv2D(64, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Flatten()(x)
    else:
        x = layers.Flatten()(inputs)
    for i in range(hidden_layers):
        x = layers.Dense(width, activation="relu", name=f"hidden_{i + 1}")(x)
        if dropout:
            # Dropout is active only when the model is called with training=True:
            # the 2018 course's batch norm never learnt because it missed that flag.
            x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name=OUTPUT_PROBABILITIES)(x)
    return keras.Model(inputs, outputs, name=f"mnist_{architecture}")


def next_version(model_base_path: Path) -> int:
    """One more than the highest integer version folder in ``model_base_path`` (1 if none)."""
    return max(runs.version_numbers(model_base_path), default=0) + 1


def export_for_serving(model: keras.Model, export_dir: Path | str, model_name: str = MODEL_NAME,
                       version: int | None = None) -> Path:
    """Write ``model`` as ``<export_dir>/<model_name>/<version>/`` for TF Serving; return that path.

    One explicit ``serving_default`` endpoint with fixed names (``images`` in,
    ``probabilities`` and ``classes`` out): Keras' own ``model.export`` names the
    input after the layer's build history, which breaks clients. The version is
    written to a temporary folder and renamed into place, so a running server
    never loads half a model.
    """
    import tensorflow as tf

    base = Path(export_dir) / model_name
    base.mkdir(parents=True, exist_ok=True)
    version = next_version(base) if version is None else int(version)
    target = base / str(version)
    if target.exists():
        raise FileExistsError(f"{target} already exists: TF Serving versions are immutable, "
                              "export with a new version number")

    archive = keras.export.ExportArchive()
    archive.track(model)

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE], tf.float32,
                                                name=INPUT_NAME)])
    def serve(images):
        probabilities = model(images, training=False)
        return {OUTPUT_PROBABILITIES: probabilities,
                OUTPUT_CLASSES: tf.argmax(probabilities, axis=-1)}

    archive.add_endpoint(SIGNATURE_NAME, serve)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=base))
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # SavedModel writing logs the temporary folder at INFO level
    try:
        archive.write_out(str(staging), verbose=False)
        staging.rename(target)
    finally:
        logger.setLevel(level)
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_exported(path: Path | str) -> Any:
    """Load an exported version and return its ``serving_default`` function.

    Call it like the server does: ``fn(images=tf.constant(batch))`` returns a dict
    with ``probabilities`` and ``classes``.
    """
    import tensorflow as tf

    return tf.saved_model.load(str(path)).signatures[SIGNATURE_NAME]
