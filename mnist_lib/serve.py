"""Run the local model server from a shell, with TF Serving's own flag names.

    python -m mnist_lib.serve --port 8500 --rest_api_port 8501 \\
        --model_name mnist --model_base_path outputs/export/mnist

is what ``tensorflow_model_server`` (the real TF Serving) takes too, so a
command from the course works against both. ``--model_base_path`` is the folder
that *contains* the version folders ``1/``, ``2/``, ... As in TF Serving, only
the latest version is served, and ``--rest_api_port 0`` (the default) leaves
REST off. To serve older versions too, give a model config file instead, as TF
Serving takes it (a ``ModelServerConfig`` in text format, one model here)::

    python -m mnist_lib.serve --port 8500 --model_config_file models.config

where ``models.config`` says ``model_version_policy { all {} }`` (or
``specific { versions: 1 versions: 2 }``, or ``latest { num_versions: 2 }``);
see :mod:`mnist_lib.serving_config`. With ``--model_config_file_poll_wait_seconds N``
the file is read again every N seconds. Unlike TF Serving, the server listens on
127.0.0.1 only unless ``--host 0.0.0.0`` is given (in a container). Stop it with
Ctrl-C (or SIGTERM): it finishes in-flight requests, frees its ports and exits 0.
Exit status 2: bad flags, model config, base path or busy port.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from mnist_lib import serving_config
from mnist_lib.checks import check_int
from mnist_lib.constants import GRPC_PORT, MODEL_NAME

MAX_PORT = 65535


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lib.serve",
        description="Serve SavedModel versions over TF Serving's gRPC and REST APIs.")
    parser.add_argument("--port", type=int, default=GRPC_PORT,
                        help="gRPC port (default: %(default)s)")
    parser.add_argument("--rest_api_port", type=int, default=0,
                        help="REST port; 0 turns REST off, as in TF Serving (default: %(default)s)")
    parser.add_argument("--model_name", default=None,
                        help=f"name clients ask for (default: {MODEL_NAME}; "
                             "ignored with --model_config_file)")
    parser.add_argument("--model_base_path", default=None,
                        help="folder holding the version folders 1/, 2/, ... (e.g. outputs/export/mnist); "
                             "ignored with --model_config_file, otherwise required")
    parser.add_argument("--model_config_file", default=None,
                        help="a ModelServerConfig text file naming the model, its base_path and its "
                             "model_version_policy, as TF Serving reads it (one model)")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                        help="re-read --model_config_file every N seconds; 0 reads it once "
                             "(default: %(default)s)")
    parser.add_argument("--file_system_poll_wait_seconds", type=float,
                        default=serving_config.DEFAULT_POLL_SECONDS,
                        help="how often to look for new versions (default: %(default)s)")
    parser.add_argument("--host", default=serving_config.DEFAULT_LISTEN_HOST,
                        help="address to listen on (default: %(default)s; 0.0.0.0 in a container)")
    parser.add_argument("--version_policy", choices=("all", "latest"), default=None,
                        help="the stand-in's shortcut for a config file's model_version_policy "
                             "(not a TF Serving flag: tensorflow_model_server needs "
                             "--model_config_file for this); default: latest, as TF Serving")
    parser.add_argument("--max_batch_size", type=int, default=serving_config.DEFAULT_MAX_BATCH_SIZE,
                        help="largest batch one request may send (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        check_int("--port", args.port, 0, MAX_PORT, "0: any free port")
        check_int("--rest_api_port", args.rest_api_port, 0, MAX_PORT, "0: REST off")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.max_batch_size < 1 or args.file_system_poll_wait_seconds <= 0:
        print("error: --max_batch_size and --file_system_poll_wait_seconds must be positive",
              file=sys.stderr)
        return 2
    if args.model_config_file_poll_wait_seconds < 0:
        print("error: --model_config_file_poll_wait_seconds must be 0 or more", file=sys.stderr)
        return 2
    if args.model_config_file:
        try:  # a mistake is reported before the long import of TensorFlow
            serving_config.read_model_config_file(args.model_config_file)
        except serving_config.ModelConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.version_policy:
            print("error: --version_policy and --model_config_file both choose the versions: put "
                  "model_version_policy in the config file", file=sys.stderr)
            return 2
        ignored = [f"--{flag}" for flag in ("model_name", "model_base_path") if getattr(args, flag)]
        if ignored:  # TF Serving ignores them too, silently; say so
            print(f"warning: {' and '.join(ignored)} ignored: --model_config_file names the model "
                  "and its base_path (as in TF Serving)", file=sys.stderr)
        source = {"model_config_file": args.model_config_file,
                  "model_config_file_poll_wait_seconds": args.model_config_file_poll_wait_seconds}
    elif args.model_base_path:
        source = {"model_base_path": args.model_base_path,
                  "model_name": args.model_name or MODEL_NAME,
                  "version_policy": args.version_policy or "latest"}
    else:
        print("error: give --model_base_path (the folder holding the version folders 1/, 2/, ...; the "
              "latest version is served) or --model_config_file (a ModelServerConfig file)",
              file=sys.stderr)
        return 2

    from mnist_lib.serving import ModelServer  # imports TensorFlow: after the cheap checks

    try:
        server = ModelServer(
            **source, port=args.port, rest_api_port=args.rest_api_port or None, host=args.host,
            poll_interval=args.file_system_poll_wait_seconds, max_batch_size=args.max_batch_size)
        server.start()
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"Serving model {server.model_name!r} versions {server.versions()} from "
          f"{server.model_base_path} ({server.version_policy})", flush=True)
    print(f"  gRPC: {server.grpc_address}", flush=True)
    print(f"  REST: {server.rest_url or 'off (--rest_api_port to turn it on)'}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
