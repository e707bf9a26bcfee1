"""Ask a model server for digits: the TF Serving gRPC client, and its command line.

The successor of the 2018 workshop's ``client.py``::

    python -m mnist_lib.predict --host localhost --port 8500 --model mnist --image data/digits/4.png
    python -m mnist_lib.predict --image a.png --image b.jpg --json    # one batch, one JSON line each

It talks to anything that speaks TF Serving's gRPC API: the real
``tensorflow_model_server`` on a cluster, or the course's local stand-in
(:mod:`mnist_lib.serving`). It uses only the official protos and
``PredictionServiceStub`` from ``tensorflow-serving-api``.

Why this module never imports TensorFlow: ``import tensorflow_serving.apis``
normally drags in all of TensorFlow (3-5 s, ~700 MB), only because the generated
protobuf modules live inside the ``tensorflow`` package. A notebook that just
wants to *ask* a server should not pay that, so :func:`_import_serving_protos`
loads those few ``*_pb2`` files without running ``tensorflow/__init__.py``, and
:func:`make_tensor_proto` / :func:`make_ndarray` convert numpy arrays the way
``tf.make_tensor_proto`` / ``tf.make_ndarray`` do.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import grpc
import numpy as np

from mnist_lib.constants import (GRPC_PORT, IMAGE_SIZE, INPUT_NAME, MODEL_NAME, NUM_CLASSES, OUTPUT_CLASSES,
                                 OUTPUT_PROBABILITIES, REST_PORT, SIGNATURE_NAME)
from mnist_lib.images import ImageError, prepare_image
from mnist_lib.waiting import wait_until


def _import_serving_protos() -> dict[str, Any]:
    """Import TF Serving's generated protobuf modules without starting TensorFlow.

    The ``*_pb2`` files import each other as ``tensorflow.core.framework...``,
    and importing any ``tensorflow.X`` first runs ``tensorflow/__init__.py``,
    which loads the whole runtime. Every other ``__init__.py`` on the way is
    empty. So, for the duration of these imports, ``sys.modules["tensorflow"]``
    is a bare package object (found by the normal import machinery, never
    executed); afterwards it is removed, so a later ``import tensorflow`` runs
    the real one, which then finds these same proto modules already loaded.
    """
    names = {
        "types_pb2": "tensorflow.core.framework.types_pb2",
        "tensor_pb2": "tensorflow.core.framework.tensor_pb2",
        "predict_pb2": "tensorflow_serving.apis.predict_pb2",
        "get_model_metadata_pb2": "tensorflow_serving.apis.get_model_metadata_pb2",
        "get_model_status_pb2": "tensorflow_serving.apis.get_model_status_pb2",
        "prediction_service_pb2_grpc": "tensorflow_serving.apis.prediction_service_pb2_grpc",
        "model_service_pb2_grpc": "tensorflow_serving.apis.model_service_pb2_grpc",
    }
    if "tensorflow" in sys.modules:  # TensorFlow is already running: nothing to save.
        return {key: importlib.import_module(name) for key, name in names.items()}
    spec = importlib.util.find_spec("tensorflow")  # locates the package, does not run it
    if spec is None:
        raise ImportError("the TF Serving protos come with the tensorflow-serving-api package: "
                          "pip install -r requirements.txt")
    sys.modules["tensorflow"] = placeholder = importlib.util.module_from_spec(spec)
    try:
        return {key: importlib.import_module(name) for key, name in names.items()}
    finally:
        if sys.modules.get("tensorflow") is placeholder:
            del sys.modules["tensorflow"]


_protos = _import_serving_protos()
types_pb2 = _protos["types_pb2"]
tensor_pb2 = _protos["tensor_pb2"]
predict_pb2 = _protos["predict_pb2"]
get_model_metadata_pb2 = _protos["get_model_metadata_pb2"]
get_model_status_pb2 = _protos["get_model_status_pb2"]
prediction_service_pb2_grpc = _protos["prediction_service_pb2_grpc"]
model_service_pb2_grpc = _protos["model_service_pb2_grpc"]

DEFAULT_HOST = "localhost"
# What this client sends and reads. (dtype name, shape with -1 = any size)
EXPECTED_INPUTS = {INPUT_NAME: ("float32", [-1, IMAGE_SIZE, IMAGE_SIZE])}
EXPECTED_OUTPUTS = {OUTPUT_PROBABILITIES: ("float32", [-1, NUM_CLASSES]), OUTPUT_CLASSES: ("int64", [-1])}
# gRPC refuses messages over 4 MB by default, i.e. batches over ~1,300 images.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def start_server_hint(port: int, model: str) -> str:
    """The command that starts the course's stand-in server where this client looks for one."""
    return (f"start one with: python -m mnist_lib.serve --port {port} --rest_api_port {REST_PORT} "
            f"--model_name {model} --model_base_path outputs/export/{model}")


# ## Tensors: numpy <-> TensorProto, as tf.make_tensor_proto / tf.make_ndarray do
# (The stand-in server, mnist_lib.serving, converts with these too: one table of types for both ends.)

# DataType enum -> (numpy dtype, the repeated field that holds values of that type)
_NUMPY_TYPES: dict[int, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_INT16: (np.dtype("<i2"), "int_val"),
    types_pb2.DT_INT8: (np.dtype("i1"), "int_val"),
    types_pb2.DT_UINT8: (np.dtype("u1"), "int_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    types_pb2.DT_BOOL: (np.dtype("?"), "bool_val"),
}
_PROTO_TYPES = {np_type.newbyteorder("="): enum for enum, (np_type, _) in _NUMPY_TYPES.items()}
# No real tensor is this big; checked before allocating, so a hostile shape can't exhaust memory.
_MAX_ELEMENTS = 1 << 28


def dtype_name(enum_value: int) -> str:
    """``DT_FLOAT`` -> ``"float32"``: numpy's name for a TensorFlow DataType (or its enum name)."""
    if enum_value in _NUMPY_TYPES:
        return _NUMPY_TYPES[enum_value][0].name
    try:
        return types_pb2.DataType.Name(enum_value)
    except ValueError:
        return f"DataType({enum_value})"


def numpy_dtype(enum_value: int) -> np.dtype:
    """``DT_FLOAT`` -> ``dtype('float32')``, in native byte order; ValueError for a type not listed here."""
    if enum_value not in _NUMPY_TYPES:
        raise ValueError(f"unsupported dtype {dtype_name(enum_value)}")
    return _NUMPY_TYPES[enum_value][0].newbyteorder("=")


def shape_of(tensor_shape: Any) -> list[int] | None:
    """A ``TensorShapeProto`` as a list, ``[-1, 28, 28]`` (-1: any size), or None if its rank is unknown."""
    return None if tensor_shape.unknown_rank else [dim.size for dim in tensor_shape.dim]


def make_tensor_proto(array: Any, *, typed_values: bool = False) -> Any:
    """A ``tensorflow.TensorProto`` holding ``array``, like ``tf.make_tensor_proto``.

    The values go into ``tensor_content`` as raw little-endian bytes: the
    compact encoding TF Serving reads fastest. ``typed_values=True`` puts them
    in the repeated field of their type instead (``float_val``, ``int64_val``,
    ...), as TF Serving answers (its ``AsProtoField``), which is why old clients
    read ``result.outputs["scores"].float_val``.
    """
    array = np.asarray(array)
    enum = _PROTO_TYPES.get(array.dtype.newbyteorder("="))
    if enum is None:
        raise TypeError(f"cannot send numpy dtype {array.dtype}: use one of "
                        f"{sorted(t.name for t, _ in _NUMPY_TYPES.values())}")
    np_type, field_name = _NUMPY_TYPES[enum]
    proto = tensor_pb2.TensorProto(dtype=enum)
    proto.tensor_shape.dim.extend(proto.tensor_shape.Dim(size=n) for n in array.shape)
    if typed_values:
        getattr(proto, field_name).extend(array.ravel().tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(array, dtype=np_type).tobytes()
    return proto


def make_ndarray(proto: Any) -> np.ndarray:
    """The numpy array in a ``TensorProto``, like ``tf.make_ndarray``; ValueError if malformed.

    Reads both encodings: ``tensor_content`` bytes (what this client sends) and
    the typed repeated fields such as ``float_val`` (what TF Serving answers).
    """
    if proto.dtype not in _NUMPY_TYPES:
        raise ValueError(f"unsupported dtype {dtype_name(proto.dtype)}")
    np_type, field_name = _NUMPY_TYPES[proto.dtype]
    shape = shape_of(proto.tensor_shape)
    if shape is None:
        raise ValueError("the tensor's shape has unknown rank")
    if any(n < 0 for n in shape):
        raise ValueError(f"shape {shape} has a negative dimension")
    count = 1
    for n in shape:
        count *= n
        if count > _MAX_ELEMENTS:
            raise ValueError(f"shape {shape} is too large")
    if proto.tensor_content:
        if len(proto.tensor_content) != count * np_type.itemsize:
            raise ValueError(f"tensor_content has {len(proto.tensor_content)} bytes, but shape "
                             f"{shape} of {np_type.name} needs {count * np_type.itemsize}")
        values = np.frombuffer(proto.tensor_content, dtype=np_type)
    else:
        values = np.asarray(getattr(proto, field_name), dtype=np_type)
        if values.size == 1 and count != 1:  # one value fills the tensor, as in TensorFlow
            values = np.full(count, values[0], dtype=np_type)
        if values.size != count:
            raise ValueError(f"{field_name} has {values.size} values, but shape {shape} "
                             f"holds {count}")
    return values.reshape(shape).astype(np_type.newbyteorder("="), copy=False)


# ## Errors a learner can act on

class PredictError(Exception):
    """Base class: anything that stopped a prediction, with a message saying what to do."""


class ServerUnavailableError(PredictError):
    """No server answered at the given address."""


class ModelNotFoundError(PredictError):
    """The server runs, but has no such model or version (TF Serving's NOT_FOUND)."""


class SignatureMismatchError(PredictError):
    """The served model's inputs or outputs are not the ones this client sends and reads."""


class InvalidInputError(PredictError, ValueError):
    """The server (or this client, before sending) rejected the images (INVALID_ARGUMENT)."""


@dataclass
class Prediction:
    """One image's answer: the most likely digit and all ten probabilities."""

    digit: int
    probabilities: list[float]
    model_version: int | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """What ``--json`` prints, every field but the version: ``{"digit": N, "probabilities": [...]}``."""
        return {name: value for name, value in asdict(self).items() if name != "model_version"}


# ## The client

class PredictionClient:
    """A TF Serving client for the MNIST model, built on the official ``PredictionServiceStub``.

    ``version=None`` asks for the server's latest version, as TF Serving does.
    Before the first prediction the client reads the model's signature with
    ``GetModelMetadata`` and stops with :class:`SignatureMismatchError` if the
    model does not take ``images`` float32 ``[batch, 28, 28]`` or does not give
    ``probabilities`` and ``classes``: a clearer message than the server's
    complaint about tensor names.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = GRPC_PORT,
                 model: str = MODEL_NAME, version: int | None = None,
                 signature_name: str = SIGNATURE_NAME, timeout: float = 10.0) -> None:
        self.host, self.port, self.model = host, int(port), model
        self.version = None if version is None else int(version)
        self.signature_name = signature_name
        self.timeout = timeout
        self.target = f"{host}:{self.port}"
        self._channel = grpc.insecure_channel(self.target, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._signature_checked = False

    def __repr__(self) -> str:
        version = "latest" if self.version is None else self.version
        return f"PredictionClient({self.target}, model={self.model!r}, version={version})"

    def close(self) -> None:
        """Close the gRPC channel."""
        self._channel.close()

    def __enter__(self) -> "PredictionClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _model_spec(self, message: Any) -> None:
        message.model_spec.name = self.model
        if self.version is not None:
            message.model_spec.version.value = self.version

    def _call(self, method: Any, request: Any) -> Any:
        """Call one RPC, turning gRPC's status codes into errors that say what to do."""
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise self._explain(error) from None

    def _explain(self, error: grpc.RpcError) -> PredictError:
        code, details = error.code(), error.details()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return ServerUnavailableError(
                f"no model server answered at {self.target} ({code.name}: {details}). Is it running? "
                + start_server_hint(self.port, self.model))
        if code == grpc.StatusCode.NOT_FOUND:
            which = "its latest version" if self.version is None else f"version {self.version}"
            return ModelNotFoundError(
                f"the server at {self.target} does not serve model {self.model!r} ({which}): "
                f"{details}. Check --model and --version, and that the server's "
                f"--model_base_path holds version folders like 1/, 2/.")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidInputError(f"the server rejected the request: {details}")
        return PredictError(f"{code.name} from {self.target}: {details}")

    # ### What the server says about the model

    def status(self) -> list[dict[str, Any]]:
        """``GetModelStatus``: one dict per version, e.g. ``{"version": 2, "state": "AVAILABLE", ...}``."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request)
        response = self._call(self.model_stub.GetModelStatus, request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        code_name = get_model_status_pb2.ModelVersionStatus().status.DESCRIPTOR.fields_by_name[
            "error_code"].enum_type.values_by_number
        return [{"version": s.version, "state": state_name(s.state),
                 "error_code": code_name[s.status.error_code].name,
                 "error_message": s.status.error_message}
                for s in response.model_version_status]

    def wait_for_version(self, version: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll ``GetModelStatus`` until ``version`` is AVAILABLE (e.g. after exporting it); return the status.

        A server picks up a new version folder on its next poll of the file system
        (TF Serving: every ``--file_system_poll_wait_seconds``), then loads it.
        Raises :class:`PredictError` after ``timeout`` seconds.
        """
        status: list[dict[str, Any]] = []  # the last answer, for the error

        def available() -> list[dict[str, Any]] | None:
            nonlocal status
            try:
                status = self.status()
            except ModelNotFoundError:  # no version loaded yet
                status = []
            served = any(s["version"] == version and s["state"] == "AVAILABLE" for s in status)
            return status if served else None

        return wait_until(available, timeout, interval=0.25,
                          on_timeout=lambda: PredictError(
                              f"version {version} of {self.model!r} is not AVAILABLE at {self.target} "
                              f"after {timeout:g} s (status: {status}); is it in the server's "
                              "--model_base_path, and does the server serve more than the latest?"))

    def metadata(self) -> dict[str, Any]:
        """``GetModelMetadata``: the served version and each signature's inputs and outputs.

        Returns ``{"model": "mnist", "version": 2, "signatures": {"serving_default":
        {"inputs": {"images": ("float32", [-1, 28, 28])}, "outputs": {...}}}}``.
        """
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._model_spec(request)
        response = self._call(self.stub.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)

        def describe(tensors: Any) -> dict[str, tuple[str, list[int] | None]]:
            return {name: (dtype_name(info.dtype), shape_of(info.tensor_shape))
                    for name, info in sorted(tensors.items())}

        return {
            "model": response.model_spec.name,
            "version": response.model_spec.version.value,
            "signatures": {name: {"inputs": describe(sig.inputs), "outputs": describe(sig.outputs)}
                           for name, sig in sorted(signature_map.signature_def.items())
                           if not name.startswith("__")},  # skip __saved_model_init_op
        }

    def check_signature(self) -> dict[str, Any]:
        """Compare the served signature with what this client sends; return the metadata.

        Raises :class:`SignatureMismatchError` naming every difference.
        """
        metadata = self.metadata()
        where = f"model {self.model!r} version {metadata['version']} at {self.target}"
        signature = metadata["signatures"].get(self.signature_name)
        if signature is None:
            raise SignatureMismatchError(
                f"{where} has no signature {self.signature_name!r}; it has "
                f"{sorted(metadata['signatures'])}. Export it with "
                f"mnist_lib.model.export_for_serving, which writes {SIGNATURE_NAME!r}.")
        problems = []
        for kind, expected, actual in (("input", EXPECTED_INPUTS, signature["inputs"]),
                                       ("output", EXPECTED_OUTPUTS, signature["outputs"])):
            for name, (dtype, shape) in expected.items():
                if name not in actual:
                    problems.append(f"no {kind} {name!r} (it has {sorted(actual)})")
                # -1 (any batch size) must be -1: a model exported for batches of 1 is a mismatch too.
                elif actual[name] != (dtype, shape):
                    problems.append(f"{kind} {name!r} is {actual[name][0]} {actual[name][1]}, "
                                    f"this client expects {dtype} {shape}")
        if problems:
            raise SignatureMismatchError(
                f"{where} does not match this client (signature {self.signature_name!r}): "
                + "; ".join(problems) + ". Export the model with mnist_lib.model.export_for_serving.")
        self._signature_checked = True
        return metadata

    # ### Predictions

    def _predict_arrays(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        if not self._signature_checked:
            self.check_signature()
        request = predict_pb2.PredictRequest()
        self._model_spec(request)
        request.model_spec.signature_name = self.signature_name
        request.inputs[INPUT_NAME].CopyFrom(make_tensor_proto(images))
        response = self._call(self.stub.Predict, request)
        probabilities = make_ndarray(response.outputs[OUTPUT_PROBABILITIES])
        classes = make_ndarray(response.outputs[OUTPUT_CLASSES])
        return classes, probabilities, response.model_spec.version.value

    def predict(self, images: Any) -> list[Prediction]:
        """Predict one image ``[28, 28]`` or a batch ``[n, 28, 28]`` (0..1, white on black).

        One request for the whole batch. For photos or drawings, use
        :meth:`predict_image`, which prepares them the way MNIST was made.
        """
        batch = as_batch(images)
        classes, probabilities, version = self._predict_arrays(batch)
        return [Prediction(int(c), [float(p) for p in row], version)
                for c, row in zip(classes, probabilities)]

    def predict_batch(self, images: Any, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Predict many images in requests of ``batch_size``; return ``(digits, probabilities)`` arrays.

        For accuracy over a test set: ``(digits == labels).mean()``.
        """
        batch = as_batch(images)
        digits, probabilities = [], []
        for start in range(0, len(batch), batch_size):
            classes, probs, _ = self._predict_arrays(batch[start:start + batch_size])
            digits.append(classes)
            probabilities.append(probs)
        return np.concatenate(digits), np.concatenate(probabilities)

    def predict_image(self, image: Any) -> Prediction:
        """Predict any picture of one digit: a path, bytes, a PIL image or an array of any size.

        Prepared by :func:`mnist_lib.images.prepare_image` (greyscale, inverted
        if dark-on-light, cropped, fitted into 20x20, centred by mass in 28x28).
        """
        return self.predict(prepare_image(image))[0]

    def predict_files(self, paths: Sequence[str | Path]) -> list[Prediction]:
        """Prepare each image file and predict them all as one batch (order kept)."""
        return self.predict(np.stack([prepare_image(path) for path in paths]))


def as_batch(images: Any) -> np.ndarray:
    """Check images are MNIST-like (28x28, 0..1) and return a float32 batch ``[n, 28, 28]``.

    Catches the 2018 client's bug early: it sent 0-255 pixels to a model
    trained on 0..1, and the model answered confidently wrong.
    """
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 2:
        batch = batch[np.newaxis]
    if batch.ndim != 3 or batch.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        size = f"{IMAGE_SIZE}, {IMAGE_SIZE}"
        raise InvalidInputError(
            f"expected one image [{size}] or a batch [n, {size}], got shape {list(batch.shape)}; "
            "for pictures of other sizes use predict_image() / mnist_lib.images.prepare_image()")
    if len(batch) == 0:
        raise InvalidInputError("the batch is empty: pass at least one image")
    if not np.isfinite(batch).all():
        raise InvalidInputError("the images contain NaN or infinite values")
    low, high = float(batch.min()), float(batch.max())
    if low < 0.0 or high > 1.0:
        hint = " (0-255 pixels? divide by 255)" if high > 1.0 else ""
        raise InvalidInputError(f"pixel values must be in 0..1, these span {low:g}..{high:g}{hint}")
    return batch


# ## Command line

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lib.predict",
        description="Ask a TF Serving model server which digit is in each image.")
    parser.add_argument("--host", default=DEFAULT_HOST, help="server host (default: %(default)s)")
    parser.add_argument("--port", type=int, default=GRPC_PORT,
                        help="server gRPC port (default: %(default)s)")
    parser.add_argument("--model", default=MODEL_NAME, help="model name (default: %(default)s)")
    parser.add_argument("--version", type=int, default=None,
                        help="model version (default: the latest the server has)")
    parser.add_argument("--image", action="extend", nargs="+", required=True, metavar="PATH",
                        help="PNG/JPEG of one digit, any size or colours; repeat for a batch")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object per image: {"digit": N, "probabilities": [...]}')
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Predict the images and print the answers. Exit 0 on success, 2 bad input, 1 server error."""
    args = _parser().parse_args(argv)
    try:
        batch = np.stack([prepare_image(path) for path in args.image])
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with PredictionClient(args.host, args.port, args.model, args.version,
                              timeout=args.timeout) as client:
            predictions = client.predict(batch)
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path, prediction in zip(args.image, predictions):
        if args.json:
            print(json.dumps(prediction.to_dict()))
            continue
        best = prediction.probabilities[prediction.digit]
        print(f"{path}: {prediction.digit} (probability {best:.3f}, "
              f"model {args.model} version {prediction.model_version})")
        for digit, probability in enumerate(prediction.probabilities):
            marker = "  <-" if digit == prediction.digit else ""
            print(f"  {digit}  {probability:.4f}  {'#' * round(probability * 40)}{marker}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
