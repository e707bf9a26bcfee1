"""A local model server that speaks TF Serving's gRPC and REST APIs.

On a cluster the course serves models with the real TF Serving
(``tensorflow/serving`` image). Its binary, ``tensorflow_model_server``, is not
on PyPI or in Debian, so on a laptop this module stands in for it: the same
protocol (the official ``tensorflow-serving-api`` protos), the same folder
layout, the same error messages, so the same client works against both.

- gRPC ``PredictionService``: ``Predict``, ``GetModelMetadata``; ``ModelService``:
  ``GetModelStatus``. (Classify, Regress and MultiInference answer UNIMPLEMENTED.)
- REST: ``GET /v1/models/<name>[/versions/<n>]``, ``GET .../metadata``,
  ``POST /v1/models/<name>[/versions/<n>]:predict`` with ``instances`` or ``inputs``.
- Models: ``<model_base_path>/<version>/saved_model.pb``. Which versions are
  served is TF Serving's ``model_version_policy``: by default only the latest
  (``latest { num_versions: 1 }``), so asking for an older one gets TF Serving's
  NOT_FOUND; ``version_policy="all"``, a list of versions, or a model config file
  (``--model_config_file``, a ``ModelServerConfig``: :mod:`mnist_lib.serving_config`)
  serves more. The highest served version answers requests that name none. A
  version folder written while the server runs is picked up within
  ``poll_interval`` seconds (TF Serving's ``--file_system_poll_wait_seconds``).

In a notebook::

    with ModelServer("outputs/export/mnist") as server:                 # latest only
        print(server.grpc_address, server.rest_url, server.versions())
    with ModelServer("outputs/export/mnist", version_policy="all") as server:
        ...
    with ModelServer(model_config_file="models.config") as server:      # as TF Serving reads it
        ...

From a shell: ``python -m mnist_lib.serve`` (see :mod:`mnist_lib.serve`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mnist_lib import serving_config
from mnist_lib.constants import MODEL_NAME, SIGNATURE_NAME
from mnist_lib.predict import (MAX_MESSAGE_BYTES, PredictionClient, dtype_name, make_ndarray,
                               make_tensor_proto, numpy_dtype, shape_of)
from mnist_lib.runs import version_numbers
from mnist_lib.serving_config import (DEFAULT_LISTEN_HOST, DEFAULT_MAX_BATCH_SIZE, DEFAULT_POLL_SECONDS,
                                      ModelConfigError, VersionPolicy)
from mnist_lib.waiting import wait_until

log = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"  # what makes a version folder loadable


class ServingError(Exception):
    """A request the server refuses, with the gRPC status code TF Serving would use."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


# ## One loaded version

@dataclass(frozen=True)
class _TensorInfo:
    dtype: int  # DataType enum, e.g. DT_FLOAT
    shape: list[int] | None  # -1 = any size; None = unknown rank

    @property
    def numpy_dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype)

    def describe(self) -> str:
        return f"{dtype_name(self.dtype)} {self.shape if self.shape is not None else '[any shape]'}"


@dataclass(frozen=True)
class _Signature:
    function: Any  # the ConcreteFunction: traced once at export, never retraced here
    inputs: dict[str, _TensorInfo]
    outputs: dict[str, _TensorInfo]


class Servable:
    """One version of the model, loaded: its signatures and the SignatureDefs behind them."""

    def __init__(self, version: int, path: Path) -> None:
        self.version = version
        self.path = path
        self.loaded = tf.saved_model.load(str(path))  # keeps the variables alive
        # The SignatureDefs exactly as written, which is what TF Serving's
        # GetModelMetadata returns (including __saved_model_init_op).
        saved_model = saved_model_pb2.SavedModel()
        saved_model.ParseFromString((path / SAVED_MODEL_FILE).read_bytes())
        self.signature_defs = saved_model.meta_graphs[0].signature_def
        self.signatures: dict[str, _Signature] = {}
        for name, function in self.loaded.signatures.items():
            definition = self.signature_defs[name]
            self.signatures[name] = _Signature(
                function,
                {k: _tensor_info(v) for k, v in definition.inputs.items()},
                {k: _tensor_info(v) for k, v in definition.outputs.items()})

    def signature(self, name: str) -> _Signature:
        name = name or SIGNATURE_NAME
        if name not in self.signatures:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{name}" not found. '
                               f"This model has: {', '.join(sorted(self.signatures))}.")
        return self.signatures[name]


def _tensor_info(info: Any) -> _TensorInfo:
    return _TensorInfo(info.dtype, shape_of(info.tensor_shape))


def _version_folders(base: Path) -> dict[int, Path]:
    """Version folders ready to load: the numbered folders that hold a saved_model.pb.

    Other names (such as the exporter's ``.3-tmpXYZ`` staging folder) are
    skipped, as TF Serving skips them.
    """
    try:
        folders = {version: base / str(version) for version in version_numbers(base)}
    except OSError:  # unreadable, or removed while we looked: no versions this time
        return {}
    return {version: path for version, path in folders.items() if (path / SAVED_MODEL_FILE).is_file()}


# ## The server's model logic, shared by gRPC and REST

class _ModelCore:
    """Which versions are loaded, and how a request becomes a model call.

    Transport-free: it raises :class:`ServingError`, which gRPC turns into a
    status code and REST into an HTTP status with ``{"error": ...}``.
    """

    def __init__(self, model: Any, max_batch_size: int, value_range: tuple[float, float] | None) -> None:
        self.max_batch_size = max_batch_size
        self.value_range = value_range
        # All replaced whole, never mutated: request threads read them without a lock.
        self.servables: dict[int, Servable] = {}
        self.failed: dict[int, tuple[float, str]] = {}  # version -> (mtime tried, error)
        self.unloaded: set[int] = set()  # served once, then unloaded: state END, as in TF Serving
        self._load_lock = threading.Lock()
        self.configure(model)

    def configure(self, model: Any) -> None:
        """Serve the model a (checked) ``ModelConfig`` describes; the next poll() applies it."""
        with self._load_lock:
            base_path = Path(model.base_path).expanduser().resolve()
            if (model.name, base_path) != (getattr(self, "model_name", None), getattr(self, "base_path", None)):
                self.failed, self.unloaded = {}, set()  # another model: its history starts afresh
            self.model_name: str = model.name
            self.base_path = base_path
            self.policy = model.model_version_policy  # a ServableVersionPolicy

    @property
    def policy_description(self) -> str:
        return serving_config.describe_policy(self.policy)

    # ### Version loading (the "file system storage path source" of TF Serving)

    def poll(self) -> None:
        """Load the versions the policy wants, unload the others. Safe to call from any thread."""
        with self._load_lock:
            found = _version_folders(self.base_path)
            wanted = serving_config.select_versions(self.policy, found)  # newest first
            # (a servable loaded from another base path, before a config change, is not kept)
            servables = {v: s for v, s in self.servables.items() if found.get(v) == s.path}
            failed = {v: f for v, f in self.failed.items() if v in found}
            for version in wanted:  # newest first: it is the one clients want
                if version in servables:
                    continue
                mtime = (found[version] / SAVED_MODEL_FILE).stat().st_mtime
                if failed.get(version, (None,))[0] == mtime:
                    continue  # already failed on these very files; retry when they change
                try:
                    servables[version] = Servable(version, found[version])
                except Exception as error:  # a broken export must not stop the server
                    failed[version] = (mtime, f"{type(error).__name__}: {error}")
                    log.error("could not load %s version %d from %s: %s",
                              self.model_name, version, found[version], error)
                    continue
                failed.pop(version, None)
                self.servables = dict(servables)  # serve it now, not after the older ones load
                self.unloaded = self.unloaded - {version}
                log.info("loaded %s version %d from %s", self.model_name, version, found[version])
            kept = {v: s for v, s in servables.items() if v in wanted}
            if not kept and servables and wanted:
                # No wanted version could load (yet): keep serving the newest loaded one rather
                # than nothing (TF Serving's AvailabilityPreservingPolicy).
                newest = max(servables)
                kept = {newest: servables[newest]}
            gone = set(self.servables) - set(kept)
            for version in sorted(gone):
                log.info("unloaded %s version %d (the version policy serves %s)", self.model_name,
                         version, self.policy_description)
            self.servables, self.failed = kept, failed
            self.unloaded = (self.unloaded | gone) - set(kept)

    def resolve(self, name: str, version: int | None, label: str = "") -> Servable:
        """The servable for a request, or TF Serving's NOT_FOUND."""
        if label:
            raise _invalid(f"Unrecognized servable version label: {label}")
        servables = self.servables
        if name == self.model_name:
            if version is None and servables:
                return servables[max(servables)]
            if version is not None and version in servables:
                return servables[version]
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Servable not found for request: {request}")

    # ### Predict

    def run(self, servable: Servable, signature_name: str, inputs: dict[str, np.ndarray],
            output_filter: list[str]) -> dict[str, np.ndarray]:
        """Check the inputs against the signature, call the model, return the outputs asked for."""
        signature = servable.signature(signature_name)
        self._check_input_names(signature, list(inputs))
        outputs = list(output_filter) or list(signature.outputs)
        for alias in outputs:
            if alias not in signature.outputs:
                raise _invalid(f"output tensor alias not found in signature: {alias} Outputs "
                               f"expected to be in the set {{{','.join(sorted(signature.outputs))}}}.")
        if len(set(outputs)) != len(outputs):
            raise _invalid(f"duplicate output tensor alias in {outputs}")
        tensors = {name: self._check_input(name, array, signature.inputs[name])
                   for name, array in inputs.items()}
        try:
            result = signature.function(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            raise _invalid(f"the model refused the input: {error}") from None
        return {alias: result[alias].numpy() for alias in outputs}

    @staticmethod
    def _check_input_names(signature: _Signature, names: list[str]) -> None:
        expected, sent = set(signature.inputs), set(names)
        if len(sent) != len(expected):
            raise _invalid(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        unknown = sorted(sent - expected)
        if unknown:
            raise _invalid(f"input tensor alias not found in signature: {unknown[0]}. Inputs "
                           f"expected to be in the set {{{','.join(sorted(expected))}}}.")

    def _check_input(self, name: str, array: np.ndarray, info: _TensorInfo) -> tf.Tensor:
        """Refuse, with a message saying what was expected, anything the model should not see."""
        expected = f"input {name!r} must be {info.describe()} (-1: any size)"
        if array.dtype != info.numpy_dtype:
            raise _invalid(f"{expected}, got dtype {array.dtype.name}")
        if info.shape is not None and (
                array.ndim != len(info.shape)
                or any(e != -1 and a != e for a, e in zip(array.shape, info.shape))):
            raise _invalid(f"{expected}, got shape {list(array.shape)}")
        if array.ndim == 0 or array.shape[0] == 0:
            raise _invalid(f"input {name!r} is an empty batch: send at least one example")
        if array.shape[0] > self.max_batch_size:
            raise _invalid(f"input {name!r} has a batch of {array.shape[0]}, over this server's "
                           f"limit of {self.max_batch_size}: split it into smaller requests")
        if array.dtype.kind == "f":
            if not np.isfinite(array).all():
                raise _invalid(f"input {name!r} contains NaN or infinite values")
            if self.value_range is not None:
                low, high = float(array.min()), float(array.max())
                lo, hi = self.value_range
                if low < lo or high > hi:
                    hint = " (0-255 pixels? divide them by 255)" if high > 1.5 else ""
                    raise _invalid(f"input {name!r} values must be in {lo:g}..{hi:g}, these span "
                                   f"{low:g}..{high:g}{hint}")
        return tf.constant(array)

    def predict(self, request: Any) -> Any:
        """gRPC ``Predict``: a ``PredictRequest`` in, a ``PredictResponse`` out."""
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        servable = self.resolve(spec.name, version, spec.version_label)
        signature = servable.signature(spec.signature_name)
        self._check_input_names(signature, list(request.inputs))
        inputs = {}
        for name, proto in request.inputs.items():
            expected = signature.inputs[name]
            if proto.dtype != expected.dtype:
                raise _invalid(f"input {name!r} must be {expected.describe()} (-1: any size), "
                               f"got dtype {dtype_name(proto.dtype)}")
            try:
                inputs[name] = make_ndarray(proto)
            except ValueError as error:
                raise _invalid(f"input {name!r} is not a valid tensor: {error}") from None
        outputs = self.run(servable, spec.signature_name, inputs, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = spec.signature_name or SIGNATURE_NAME
        for alias, array in outputs.items():  # in float_val, int64_val, ..., as TF Serving answers
            response.outputs[alias].CopyFrom(make_tensor_proto(array, typed_values=True))
        return response

    # ### Metadata and status

    def metadata(self, request: Any) -> Any:
        """gRPC ``GetModelMetadata``: the SignatureDefs of the requested version."""
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field_name in request.metadata_field:
            if field_name != "signature_def":
                raise _invalid(f"Metadata field {field_name} is not supported")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        servable = self.resolve(spec.name, version, spec.version_label)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, definition in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(definition)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def status(self, request: Any) -> Any:
        """ModelService ``GetModelStatus``: loaded versions are AVAILABLE, failed ones END."""
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        spec = request.model_spec
        states: dict[int, tuple[int, str]] = {}
        if spec.name == self.model_name:
            State = get_model_status_pb2.ModelVersionStatus.State
            states = {v: (State.END, "") for v in self.unloaded}
            states.update({v: (State.END, error) for v, (_, error) in self.failed.items()})
            states.update({v: (State.AVAILABLE, "") for v in self.servables})
        if spec.HasField("version"):
            version = spec.version.value
            if version not in states:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {version} of model {spec.name}")
            states = {version: states[version]}
        elif not states:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find any versions of model {spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in sorted(states, reverse=True):
            state, error = states[version]
            status = response.model_version_status.add(version=version, state=state)
            status.status.SetInParent()  # TF Serving always sends it: {"error_code": "OK", ...}
            if error:
                status.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                status.status.error_message = error
        return response


# ## gRPC: thin adapters from the generated servicers to the core

class _PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: _ModelCore) -> None:
        self.core = core

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (gRPC's name)
        return _answer(context, self.core.predict, request)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, self.core.metadata, request)


class _ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: _ModelCore) -> None:
        self.core = core

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, self.core.status, request)


def _answer(context: grpc.ServicerContext, method: Any, request: Any) -> Any:
    """Call the core; refusals become gRPC status codes, and nothing escapes to kill a worker."""
    try:
        return method(request)
    except ServingError as error:
        context.abort(error.code, error.message)
    except Exception as error:  # a bug, or TensorFlow failing: report it, keep serving
        log.exception("internal error in %s", getattr(method, "__name__", method))
        context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


# ## REST: TF Serving's JSON API on the standard library's HTTP server

_HTTP_STATUS = {  # gRPC code -> HTTP status, as TF Serving maps them
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-zA-Z]+))?/?$")
_MAX_BODY_BYTES = MAX_MESSAGE_BYTES


def _to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


class _RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a notebook's requests.Session reuses the socket
    server_version = "mnist_lib.serving"
    timeout = 60  # seconds a silent connection may hold a handler thread
    core: _ModelCore  # set on the subclass the server creates

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes; without this, Nagle's algorithm holds
        # the body until the client's delayed ACK: +40 ms on every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base class name)
        log.debug("REST %s " + format, self.client_address[0], *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> re.Match[str]:
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Malformed request: {self.command} {self.path}")
        return match

    def _handle(self, action: Any) -> None:
        try:
            self._send(200, action())
        except ServingError as error:
            self._send(_HTTP_STATUS.get(error.code, 500), {"error": error.message})
        except Exception as error:
            log.exception("internal error on %s %s", self.command, self.path)
            self._send(500, {"error": f"{type(error).__name__}: {error}"})

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._handle(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._handle(self._post)

    def _spec(self, match: re.Match[str]) -> Any:
        spec = model_pb2.ModelSpec()
        spec.name = match["name"]
        if match["version"] is not None:
            spec.version.value = int(match["version"])
        if match["label"]:
            spec.version_label = match["label"]
        return spec

    def _get(self) -> dict[str, Any]:
        match = self._route()
        if match["verb"]:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Malformed request: {self.command} {self.path}")
        if match["metadata"]:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            request.model_spec.CopyFrom(self._spec(match))
            response = self.core.metadata(request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            return {"model_spec": _to_json(response.model_spec),
                    "metadata": {"signature_def": _to_json(signature_map)}}
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.CopyFrom(self._spec(match))
        if match["label"]:
            raise _invalid(f"Unrecognized servable version label: {match['label']}")
        return _to_json(self.core.status(request))

    def _read_json(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _invalid("Content-Length is not a number") from None
        if length > _MAX_BODY_BYTES:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"request body of {length} bytes is over the limit of {_MAX_BODY_BYTES}")
        body = self.rfile.read(length) if length > 0 else b""
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as error:
            raise _invalid(f"JSON Parse error: {error}") from None

    def _post(self) -> dict[str, Any]:
        match = self._route()
        body = self._read_json()  # read it before any refusal, so the connection stays in sync
        if match["metadata"] or match["verb"] != "predict":
            if match["verb"] in ("classify", "regress"):
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f":{match['verb']} is not supported by this server: use :predict")
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Malformed request: {self.command} {self.path}")
        spec = self._spec(match)
        version = spec.version.value if spec.HasField("version") else None
        servable = self.core.resolve(spec.name, version, spec.version_label)
        if not isinstance(body, dict):
            raise _invalid("the request body must be a JSON object with 'instances' or 'inputs'")
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise _invalid("'signature_name' must be a string")
        signature = servable.signature(signature_name)
        row_format = "instances" in body
        if row_format == ("inputs" in body):
            raise _invalid("the request body must have exactly one of 'instances' (row format) "
                           "or 'inputs' (columnar format)")
        inputs = _json_inputs(body["instances" if row_format else "inputs"], signature, row_format)
        outputs = self.core.run(servable, signature_name, inputs, [])
        return _json_outputs(outputs, row_format)


def _json_inputs(value: Any, signature: _Signature, row_format: bool) -> dict[str, np.ndarray]:
    """TF Serving's two JSON layouts -> one numpy array per input name.

    Row format: ``instances`` is a list, one item per example; each item is the
    value itself when the signature has one input, else ``{"name": value}``.
    Columnar format: ``inputs`` is the value itself (one input) or ``{"name": value}``.
    """
    names = list(signature.inputs)
    if row_format:
        if not isinstance(value, list):
            raise _invalid("'instances' must be a list, one item per example")
        if value and all(isinstance(item, dict) for item in value):
            columns: dict[str, list[Any]] = {}
            for item in value:
                if set(item) != set(columns or item):
                    raise _invalid("every instance must have the same named inputs")
                for key, item_value in item.items():
                    columns.setdefault(key, []).append(item_value)
        elif len(names) == 1:
            columns = {names[0]: value}
        else:
            raise _invalid(f"this signature has several inputs {sorted(names)}: each instance "
                           "must be an object naming them")
    elif isinstance(value, dict):
        columns = value
    elif len(names) == 1:
        columns = {names[0]: value}
    else:
        raise _invalid(f"this signature has several inputs {sorted(names)}: 'inputs' must be an "
                       "object naming them")
    _ModelCore._check_input_names(signature, list(columns))
    arrays = {}
    for name, column in columns.items():
        info = signature.inputs[name]
        try:
            arrays[name] = np.asarray(column, dtype=info.numpy_dtype)
        except (ValueError, TypeError, OverflowError) as error:
            raise _invalid(f"input {name!r} must be {info.describe()} (-1: any size): could not "
                           f"read it as a regular array of {dtype_name(info.dtype)} ({error})") from None
    return arrays


def _json_outputs(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """Row format -> ``{"predictions": [...]}``; columnar -> ``{"outputs": ...}``, as TF Serving."""
    lists = {alias: array.tolist() for alias, array in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(lists.values())) if len(lists) == 1 else lists}
    if len(lists) == 1:
        return {"predictions": next(iter(lists.values()))}
    count = len(next(iter(outputs.values())))
    return {"predictions": [{alias: values[i] for alias, values in lists.items()}
                            for i in range(count)]}


class _RestServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that can close its open keep-alive connections when stopped."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# ## The server object

class ModelServer:
    """TF Serving's gRPC and REST APIs over the versions in ``model_base_path``, in this process.

    ``model_base_path`` is the folder that *contains* the version folders
    (``<export_dir>/<model_name>``), as TF Serving's ``--model_base_path``.
    ``port=0`` / ``rest_api_port=0`` pick free ports (read them back from
    :attr:`grpc_port` / :attr:`rest_port`); ``rest_api_port=None`` turns REST off.

    Which versions it serves is TF Serving's version policy. ``version_policy``:
    ``"latest"`` (the default, as TF Serving's: only the highest version, so a
    request for an older one gets NOT_FOUND), ``"all"``, a list such as ``[1, 2]``,
    or a ``ServableVersionPolicy`` (:func:`mnist_lib.serving_config.version_policy`,
    e.g. the latest two). Or, instead of ``model_base_path``, ``model_name`` and
    ``version_policy``: ``model_config_file``, a ``ModelServerConfig`` text file as
    TF Serving's ``--model_config_file`` (one model), re-read every
    ``model_config_file_poll_wait_seconds`` if that is above 0.
    ``value_range`` refuses float inputs outside it (the model was trained on
    0..1; ``None`` turns the check off).

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, model_base_path: str | Path | None = None, model_name: str = MODEL_NAME, *,
                 version_policy: VersionPolicy = "latest", model_config_file: str | Path | None = None,
                 model_config_file_poll_wait_seconds: float = 0.0,
                 port: int = 0, rest_api_port: int | None = 0, host: str = DEFAULT_LISTEN_HOST,
                 poll_interval: float = DEFAULT_POLL_SECONDS,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 value_range: tuple[float, float] | None = (0.0, 1.0),
                 max_workers: int = 8) -> None:
        if not math.isfinite(poll_interval) or poll_interval <= 0:
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval}")
        wait = model_config_file_poll_wait_seconds
        if not math.isfinite(wait) or wait < 0:
            raise ValueError(f"model_config_file_poll_wait_seconds must be 0 (read the file once) or a "
                             f"positive number of seconds, got {wait}")
        if model_config_file is not None:
            if model_base_path is not None or model_name != MODEL_NAME or not (
                    isinstance(version_policy, str) and version_policy == "latest"):
                raise ValueError("give either model_config_file (it names the model, its base_path "
                                 "and its model_version_policy) or model_base_path, model_name and "
                                 "version_policy, not both")
            self.model_config_file: Path | None = Path(model_config_file).expanduser().resolve()
            model = serving_config.read_model_config_file(self.model_config_file)
            self._config_text = self.model_config_file.read_text(encoding="utf-8")
        elif model_base_path is None:
            raise ValueError("give model_base_path (the folder holding the version folders 1/, 2/, ...) "
                             "or model_config_file")
        else:
            self.model_config_file = None
            model = serving_config.model_server_config(
                model_name, Path(model_base_path).expanduser().resolve(),
                version_policy).model_config_list.config[0]
        self.model_config_file_poll_wait_seconds = wait
        self.host = host
        self.poll_interval = poll_interval
        self._requested_ports = (port, rest_api_port)
        self._max_workers = max_workers
        self._core = _ModelCore(model, max_batch_size, value_range)
        self._grpc_server: grpc.Server | None = None
        self._rest_server: _RestServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.grpc_port: int | None = None
        self.rest_port: int | None = None

    def __repr__(self) -> str:
        state = f"gRPC {self.grpc_address}" if self.running else "stopped"
        return (f"ModelServer({self.model_name!r} from {self.model_base_path}, "
                f"{self.version_policy}, {state})")

    @property
    def model_name(self) -> str:
        """The name clients ask for (from the model config file, if one is used)."""
        return self._core.model_name

    @property
    def model_base_path(self) -> Path:
        """The folder holding the version folders (absolute)."""
        return self._core.base_path

    @property
    def version_policy(self) -> str:
        """Which versions are served, in words: ``the latest version only``, ``all versions``..."""
        return self._core.policy_description

    @property
    def running(self) -> bool:
        return self._grpc_server is not None

    @property
    def grpc_address(self) -> str:
        """``host:port`` for :class:`mnist_lib.predict.PredictionClient` or grpc.insecure_channel."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str | None:
        """``http://host:port/v1/models/<name>``, or None if REST is off."""
        if self.rest_port is None:
            return None
        return f"http://{self.host}:{self.rest_port}/v1/models/{self.model_name}"

    def client(self, version: int | None = None, **options: Any) -> PredictionClient:
        """A :class:`~mnist_lib.predict.PredictionClient` connected to this server over gRPC."""
        return PredictionClient(self.host, self.grpc_port, self.model_name, version, **options)

    def versions(self) -> list[int]:
        """The versions being served, oldest first."""
        return sorted(self._core.servables)

    def servable(self, version: int | None = None) -> Servable:
        """The loaded :class:`Servable` (latest by default), e.g. to compare with the server's answer."""
        return self._core.resolve(self.model_name, version)

    def _check_base_path(self) -> None:
        base = self.model_base_path
        if not base.is_dir():
            raise FileNotFoundError(
                f"model_base_path {base} does not exist. It is the folder that contains the "
                f"version folders (1/, 2/, ...), e.g. outputs/export/{self.model_name}.")
        if (base / SAVED_MODEL_FILE).is_file():
            raise ValueError(
                f"model_base_path {base} is itself a SavedModel: pass its parent, {base.parent}, "
                "whose version folders (1/, 2/, ...) the server watches")
        if not _version_folders(base):
            hint = ""
            if _version_folders(base / self.model_name):
                hint = f" (did you mean {base / self.model_name}?)"
            log.warning("No versions of servable %s found under base path %s%s; "
                        "waiting for one to appear", self.model_name, base, hint)

    def start(self) -> "ModelServer":
        """Load the versions present now, then serve. Returns self. Raises OSError if a port is taken."""
        if self.running:
            return self
        self._check_base_path()
        self._core.poll()
        port, rest_api_port = self._requested_ports
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.so_reuseport", 0)]  # a second server on the same port must fail
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_workers,
                                                        thread_name_prefix="grpc-serving"),
                             options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionServicer(self._core), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelServicer(self._core), server)
        try:
            bound = server.add_insecure_port(f"{self.host}:{port}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise OSError(f"could not listen for gRPC on {self.host}:{port}: is the port in use? "
                          "Pick another with --port (or port=0 for any free port).")
        self._stopping.clear()
        server.start()
        self._grpc_server, self.grpc_port = server, bound
        try:
            if rest_api_port is not None:
                handler = type("RestHandler", (_RestHandler,), {"core": self._core})
                try:
                    self._rest_server = _RestServer((self.host, rest_api_port), handler)
                except OSError as error:
                    raise OSError(f"could not listen for REST on {self.host}:{rest_api_port} "
                                  f"({error.strerror}): pick another with --rest_api_port") from None
                self.rest_port = self._rest_server.server_address[1]
                self._spawn("rest-serving", self._rest_server.serve_forever)
            self._spawn("version-watcher", self._watch)
        except BaseException:
            self.stop()
            raise
        log.info("serving %s versions %s (policy: %s) from %s: gRPC %s, REST %s", self.model_name,
                 self.versions(), self.version_policy, self.model_base_path, self.grpc_address,
                 self.rest_url or "off")
        return self

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch(self) -> None:
        wait = self.model_config_file_poll_wait_seconds
        next_config_read = time.monotonic() + wait
        while not self._stopping.wait(min(self.poll_interval, wait) if wait else self.poll_interval):
            if self.model_config_file is not None and wait and time.monotonic() >= next_config_read:
                next_config_read = time.monotonic() + wait
                self.reload_config()
            try:
                self._core.poll()
            except Exception:  # e.g. the folder was briefly unreadable: try again next time
                log.exception("polling %s failed", self.model_base_path)

    def reload_config(self) -> bool:
        """Read ``model_config_file`` again; apply it if it changed. True if the config changed.

        As TF Serving's ``--model_config_file_poll_wait_seconds``: a file that cannot be
        read or is not valid is logged, and the server keeps serving the previous config.
        """
        if self.model_config_file is None:
            return False
        try:
            text = self.model_config_file.read_text(encoding="utf-8")
            if text == self._config_text:
                return False
            model = serving_config.parse_model_config(text, str(self.model_config_file))
        except (OSError, UnicodeDecodeError, ModelConfigError) as error:
            log.error("Failed to read ModelServerConfig file: %s; still serving %s (%s)",
                      error, self.model_name, self.version_policy)
            return False
        self._config_text = text
        self._core.configure(model)
        log.info("reloaded %s: serving %s from %s", self.model_config_file, self.version_policy,
                 self.model_base_path)
        self._core.poll()
        return True

    def poll(self) -> list[int]:
        """Look for new or removed versions now, instead of waiting for the watcher; return versions()."""
        self._core.poll()
        return self.versions()

    def wait_for_version(self, version: int, timeout: float = 30.0) -> None:
        """Block until ``version`` is served (e.g. right after exporting it); TimeoutError if not."""
        wait_until(lambda: version in self._core.servables, timeout, interval=min(0.05, self.poll_interval),
                   on_timeout=lambda: self._not_served(version, timeout))

    def _not_served(self, version: int, timeout: float) -> TimeoutError:
        """Why ``version`` is still not served: it failed to load, or the version policy leaves it out."""
        failed = self._core.failed.get(version)
        reason = f": loading failed with {failed[1]}" if failed else ""
        if not failed and version in _version_folders(self.model_base_path):
            reason = (f": the version policy serves {self.version_policy} (use "
                      "version_policy='all', or a model config file that says so)")
        return TimeoutError(f"version {version} of {self.model_name} was not served within "
                            f"{timeout:g} s (serving {self.versions()}){reason}")

    def stop(self, grace: float = 1.0) -> None:
        """Stop answering (in-flight requests get ``grace`` seconds), free both ports, end threads."""
        self._stopping.set()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait()
            self._grpc_server = None
        if self._rest_server is not None:
            self._rest_server.shutdown()  # ends serve_forever
            self._rest_server.close_connections()
            self._rest_server.server_close()
            self._rest_server = None
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        log.info("stopped serving %s", self.model_name)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
