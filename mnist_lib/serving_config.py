"""TF Serving's model config file (``--model_config_file``): build it, read it, check it.

The real TF Serving serves only the **latest** version of a model unless told
otherwise (``model_version_policy { latest { num_versions: 1 } }``). To serve older
versions too, it reads a ``ModelServerConfig``, a protobuf in text format::

    model_config_list {
      config {
        name: "mnist"
        base_path: "/outputs/serving/mnist"
        model_platform: "tensorflow"
        model_version_policy {
          all {
          }
        }
      }
    }

:func:`model_server_config` builds one with the official protos (the
``tensorflow_serving.config`` package of ``tensorflow-serving-api``, which imports
no TensorFlow), :func:`to_text` writes it the way ``tensorflow_model_server`` reads
it, and :func:`read_model_config_file` / :func:`check_model_config` read one back
for the course's stand-in server, :mod:`mnist_lib.serving`, with errors that say
what to change. The stand-in serves one model; the real server can serve several.

The stand-in's defaults are here too, so that its command line
(:mod:`mnist_lib.serve`) shows them without importing TensorFlow.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Union

from google.protobuf import text_format
from tensorflow_serving.config import file_system_storage_path_source_pb2, model_server_config_pb2

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig
ServableVersionPolicy = file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy

PLATFORM = "tensorflow"  # TF Serving's kTensorFlowModelPlatform
DEFAULT_POLL_SECONDS = 1.0  # TF Serving's --file_system_poll_wait_seconds default
DEFAULT_MAX_BATCH_SIZE = 1024  # the largest batch one request may send to the stand-in
DEFAULT_LISTEN_HOST = "127.0.0.1"  # unlike TF Serving, this machine only; 0.0.0.0 in a container
# What a version policy can be given as: "latest", "all", a list of version numbers, or the proto.
VersionPolicy = Union[str, Iterable[int], ServableVersionPolicy]

EXAMPLE = """model_config_list {
  config {
    name: "mnist"
    base_path: "/outputs/serving/mnist"
    model_platform: "tensorflow"
    model_version_policy { all {} }
  }
}"""


class ModelConfigError(ValueError):
    """A model config the server cannot use; the message says what to change."""


def version_policy(policy: VersionPolicy = "latest", *, num_versions: int = 1) -> Any:
    """A ``ServableVersionPolicy`` from a friendlier value.

    - ``"latest"``: the highest ``num_versions`` versions (TF Serving's default: 1);
    - ``"all"``: every version found under the base path;
    - a list of numbers, e.g. ``[1, 2]``: exactly those versions (``specific``);
    - a ``ServableVersionPolicy`` proto: used as it is (a copy).
    """
    proto = ServableVersionPolicy()
    if isinstance(policy, ServableVersionPolicy):
        proto.CopyFrom(policy)
    elif policy == "latest":
        if isinstance(num_versions, bool) or not isinstance(num_versions, int) or num_versions < 1:
            raise ModelConfigError(f"num_versions must be a whole number >= 1, got {num_versions!r}")
        proto.latest.num_versions = num_versions
    elif policy == "all":
        proto.all.SetInParent()
    elif isinstance(policy, str):
        raise ModelConfigError(f"version_policy must be 'latest', 'all' or a list of version numbers "
                               f"such as [1, 2], got {policy!r}")
    else:
        try:
            versions = list(policy)
        except TypeError:
            raise ModelConfigError(f"version_policy must be 'latest', 'all' or a list of version numbers "
                                   f"such as [1, 2], got {policy!r}") from None
        if not versions or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                   for v in versions):
            raise ModelConfigError(f"a specific version policy needs version numbers (whole numbers "
                                   f">= 0, the names of the version folders), got {policy!r}")
        proto.specific.versions.extend(sorted(set(versions)))
    return proto


def model_server_config(model_name: str, base_path: str | Path, policy: VersionPolicy = "latest") -> Any:
    """A ``ModelServerConfig`` serving one TensorFlow model from ``base_path`` with ``policy``."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = str(base_path)
    model.model_platform = PLATFORM
    model.model_version_policy.CopyFrom(version_policy(policy))
    check_model_config(config)
    return config


def to_text(config: Any) -> str:
    """The config as TF Serving's ``--model_config_file`` holds it (protobuf text format)."""
    return text_format.MessageToString(config)


def describe_policy(policy: Any) -> str:
    """``latest 1``, ``all``, ``specific [1, 2]``: how a policy reads in logs and errors."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return "all versions"
    if choice == "specific":
        return f"specific versions {list(policy.specific.versions)}"
    count = max(policy.latest.num_versions, 1)
    return "the latest version only" if count == 1 else f"the latest {count} versions"


def select_versions(policy: Any, found: Iterable[int]) -> list[int]:
    """Which of the version folders ``found`` the policy serves, newest first (TF Serving's rule)."""
    newest_first = sorted(set(found), reverse=True)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return newest_first
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in newest_first if v in wanted]
    # latest, also when no policy is set; num_versions 0 means 1, as in TF Serving
    return newest_first[:max(policy.latest.num_versions, 1)]


def check_model_config(config: Any, source: str = "the model config") -> Any:
    """The one ``ModelConfig`` of ``config``, or :class:`ModelConfigError` saying what to fix.

    The course's stand-in serves one TensorFlow model per server, with any version
    policy; it refuses, rather than silently ignores, what it does not do.
    """
    kind = config.WhichOneof("config")
    if kind == "custom_model_config":
        raise ModelConfigError(f"{source} uses custom_model_config, which TF Serving itself does not "
                               "support (\"ModelServer does not yet support custom model config.\"): "
                               f"use model_config_list, e.g.\n{EXAMPLE}")
    models = list(config.model_config_list.config) if kind == "model_config_list" else []
    if not models:
        raise ModelConfigError(f"{source} configures no model: it needs a model_config_list with one "
                               f"config (name, base_path, model_platform), e.g.\n{EXAMPLE}")
    if len(models) > 1:
        names = ", ".join(repr(m.name) for m in models)
        raise ModelConfigError(
            f"{source} lists {len(models)} models ({names}): the course's stand-in server serves one "
            "model per server. Keep one config { } in model_config_list and start one server per "
            "model (the real TF Serving serves several from one file).")
    model = models[0]
    where = f"{source}, model {model.name!r}" if model.name else source
    if not model.name:
        raise ModelConfigError(f"{source}: the model's config has no name: add name: \"mnist\" "
                               "(the name clients put in their ModelSpec)")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", model.name):
        raise ModelConfigError(f"{where}: a model name may hold letters, digits, '_', '-' and '.' "
                               "only (it becomes part of the REST URL /v1/models/<name>)")
    if not model.base_path:
        raise ModelConfigError(f"{where} has no base_path: add the folder that contains the version "
                               "folders 1/, 2/, ..., e.g. base_path: \"/outputs/serving/mnist\"")
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        raise ModelConfigError(f"{where} sets model_type, deprecated in TF Serving: replace it with "
                               f"model_platform: \"{PLATFORM}\"")
    if not model.model_platform:
        raise ModelConfigError(
            f"{where}: \"Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform.\" (TF Serving's error): add model_platform: \"{PLATFORM}\"")
    if model.model_platform != PLATFORM:
        raise ModelConfigError(f"{where} has model_platform {model.model_platform!r}: this server "
                               f"serves TensorFlow SavedModels only, model_platform: \"{PLATFORM}\"")
    if model.version_labels:
        raise ModelConfigError(
            f"{where} sets version_labels ({dict(model.version_labels)}): the course's stand-in server "
            "does not support labels (the real TF Serving does). Remove them and ask for versions by "
            "number, or choose the versions with model_version_policy { specific { versions: 1 } }.")
    if model.HasField("logging_config"):
        raise ModelConfigError(f"{where} sets logging_config (request logging), which the course's "
                               "stand-in server does not support: remove it")
    policy = model.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
        raise ModelConfigError(f"{where}: model_version_policy {{ specific {{ }} }} lists no versions, so "
                               "nothing would be served: list them, e.g. specific { versions: 1 versions: 2 }")
    return model


def parse_model_config(text: str, source: str = "the model config") -> Any:
    """Parse and check a ``ModelServerConfig`` in text format; return its one ``ModelConfig``."""
    config = ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        detail = re.sub(r"^\d+:\d+ : ", "", str(error))
        line, column = error.GetLine(), error.GetColumn()
        at = f" at line {line}, column {column}" if line is not None and line > 0 else ""
        raise ModelConfigError(
            f"{source} is not a valid ModelServerConfig (TF Serving would say: Invalid protobuf file)"
            f"{at}: {detail}\nIt must be protobuf text format, e.g.\n{EXAMPLE}") from None
    return check_model_config(config, source)


def read_model_config_file(path: str | Path) -> Any:
    """Read ``--model_config_file``: its one ``ModelConfig``, or :class:`ModelConfigError`."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelConfigError(f"--model_config_file {path}: no such file") from None
    except IsADirectoryError:
        raise ModelConfigError(f"--model_config_file {path} is a folder: give the file inside it "
                               "(e.g. models.config)") from None
    except UnicodeDecodeError:
        raise ModelConfigError(f"{path} is not a text file: a model config file is a ModelServerConfig "
                               f"in protobuf text format, e.g.\n{EXAMPLE}") from None
    except OSError as error:
        raise ModelConfigError(f"cannot read --model_config_file {path}: {error.strerror}") from None
    return parse_model_config(text, str(path))
