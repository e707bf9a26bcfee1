"""The shared volume, seen from a notebook that cannot mount it: one helper pod, ``exec`` and tar.

On a laptop with a kubeconfig to a shared cluster (or in a workshop room), the
pods' volume is somewhere in the cluster; the notebook has only the API server.
So, as ``kubectl cp`` does, files travel through the API: a small pod of the
course image mounts the volume and sleeps (``mnist-volume``, one per namespace,
made on first use and reused), and each transfer is one ``exec`` into it running
:mod:`mnist_lib.cluster.volume_agent` (sent as source) with tar over stdin/stdout.

What the notebook keeps is a *mirror*: files under ``/outputs/<x>`` on the volume
are copied to ``MNIST_OUTPUT_DIR/<x>`` here, and a pull sends only the files whose
size or modification time changed since the last one (chapter 07's live plot pulls
every running trial's logs each second: one small exec, no new pod).
"""

from __future__ import annotations

import inspect
import io
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from kubernetes import client
from kubernetes.stream import ws_client
from websocket import WebSocketException

from mnist_lib import manifests, paths
from mnist_lib.cluster import volume_agent
from mnist_lib.cluster.types import ClusterError, NotFoundError

EXEC_TIMEOUT = 120.0  # one transfer; a model of a few MB takes well under a second
STDIN_CHUNK = 1 << 20  # the API server's websocket takes frames up to 32 MiB: stay far below
AGENT_SOURCE = inspect.getsource(volume_agent)


def websocket_headers(configuration: client.Configuration) -> dict[str, str]:
    """The client's credentials as headers for a websocket (exec, port-forward) to the API server."""
    return {setting["key"]: setting["value"] for setting in configuration.auth_settings().values()
            if setting.get("in") == "header" and setting.get("value")}


class VolumeClient:
    """Pull files from, and put files on, the shared volume of one namespace.

    ``ensure_pod(recheck)`` is given by the backend: it makes sure the helper pod runs and
    returns its name (the backend owns pods, errors and their advice); ``recheck`` asks it
    to look again rather than trust that the pod it saw running still does.
    """

    def __init__(self, configuration: client.Configuration, namespace: str, ensure_pod: Callable[[bool], str]):
        self.configuration = configuration
        self.namespace = namespace
        self._ensure_pod = ensure_pod
        self._known: dict[str, list[int]] = {}  # volume file -> [size, mtime_ns] of the copy we hold
        self._lock = threading.Lock()  # one exec at a time: a sweep's thread and the notebook share us
        self.execs = 0  # transfers so far (the sweep benchmark reports it)

    # -- one exec ----------------------------------------------------------------------
    def call(self, request: dict[str, Any], payload: bytes = b"", timeout: float = EXEC_TIMEOUT
             ) -> tuple[dict[str, Any], bytes]:
        """Send ``request`` to the agent in the helper pod; return its reply and payload."""
        query = [("command", ["python", "-c", AGENT_SOURCE]), ("container", manifests.VOLUME_HELPER_CONTAINER),
                 ("stdin", "true"), ("stdout", "true"), ("stderr", "true"), ("tty", "false")]
        with self._lock:
            self.execs += 1
            ws, pod = self._connect(query)
            try:
                message = volume_agent.frame(json.dumps(request).encode()) + volume_agent.frame(payload)
                for start in range(0, len(message), STDIN_CHUNK):
                    ws.write_stdin(message[start:start + STDIN_CHUNK])
                # Not waiting.wait_until: update() itself blocks until the pod answers (no polling).
                deadline = time.monotonic() + timeout
                while ws.is_open() and time.monotonic() < deadline:
                    ws.update(timeout=max(0.0, deadline - time.monotonic()))
                if ws.is_open():
                    raise ClusterError(f"the volume helper pod {pod} did not answer within {timeout:.0f} s")
                out, err = ws.read_channel(1), ws.read_channel(2)
            finally:
                ws.close()
        try:
            stream = io.BytesIO(out)
            reply, data = json.loads(volume_agent.read_frame(stream)), volume_agent.read_frame(stream)
        except (EOFError, ValueError):
            text = err.decode(errors="replace").strip() if isinstance(err, bytes) else str(err)
            raise ClusterError(f"the volume helper pod {pod} gave no answer: {text[-800:] or 'no output'}. "
                               f"See `kubectl -n {self.namespace} describe pod {pod}`.") from None
        if "error" in reply:
            raise ClusterError(f"on the shared volume: {reply['error']}")
        return reply, data

    def _connect(self, query: list[tuple[str, Any]]) -> tuple[ws_client.WSClient, str]:
        """An exec websocket into the helper pod; if it fails, check the pod (it may have gone) and try once more."""
        for attempt in (1, 2):
            pod = self._ensure_pod(attempt == 2)  # the second time: look again, remake it if it is gone
            url = f"{self.configuration.host}/api/v1/namespaces/{quote(self.namespace)}/pods/{quote(pod)}/exec"
            try:
                return ws_client.WSClient(self.configuration, ws_client.get_websocket_url(url, query),
                                          websocket_headers(self.configuration), capture_all=False,
                                          binary=True), pod
            except (WebSocketException, OSError) as err:  # the pod went away, RBAC refused pods/exec, no API server
                if attempt == 2 or "403" in str(err):
                    advice = (f"reading the shared volume needs the 'create' verb on pods/exec in namespace "
                              f"{self.namespace}: check `kubectl auth can-i create pods/exec -n {self.namespace}` "
                              "and ask your cluster admin" if "403" in str(err) else
                              f"see `kubectl -n {self.namespace} describe pod {pod}`")
                    raise ClusterError(f"cannot exec into the volume helper pod {pod} "
                                       f"({type(err).__name__}: {str(err).splitlines()[0][:300]}): {advice}.") from None
        raise AssertionError("unreachable")

    # -- the mirror ----------------------------------------------------------------------
    def pull(self, *volume_paths: str, missing_ok: bool = False) -> list[Path]:
        """Bring ``/outputs/...`` files or folders here (changed files only); return the local paths.

        Afterwards the local copy of each path holds what the volume holds: new and
        changed files are written, files the volume no longer has are removed (only
        those this mirror brought; nothing made here is touched). A missing path
        raises :class:`NotFoundError` (after removing what the mirror had of it),
        or with ``missing_ok`` is left out of the answer.
        """
        wanted = [str(p) for p in volume_paths]
        prefixes = tuple(p.rstrip("/") + "/" for p in wanted)
        known = {f: s for f, s in self._known.items() if f in wanted or f.startswith(prefixes)}
        reply, data = self.call({"op": "pull", "paths": wanted, "known": known})
        root = paths.output_dir()
        for folder in reply["folders"]:  # empty ones too (a SavedModel's assets/)
            paths.on_this_machine(folder).mkdir(parents=True, exist_ok=True)
        if data:
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(volume_agent._staging(root))
            try:  # unpack beside the mirror, then move each file over its old copy
                volume_agent.unpack(data, staging)
                for name in reply["sent"]:
                    target = paths.on_this_machine(name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    (staging / name.lstrip("/")).replace(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        for name in set(known) - set(reply["files"]):  # gone from the volume: gone here too
            paths.on_this_machine(name).unlink(missing_ok=True)
            self._known.pop(name, None)
        self._known.update(reply["files"])
        if reply["missing"] and not missing_ok:
            raise NotFoundError(f"{', '.join(reply['missing'])} does not exist on the shared volume "
                                f"(claim mnist-outputs in namespace {self.namespace})")
        return [paths.on_this_machine(p) for p in wanted if p not in reply["missing"]]

    def put(self, local_folder: Path, dest: str, version: bool = False) -> str:
        """Copy a folder of this machine to ``dest`` on the volume (or to its next version); return where."""
        reply, _ = self.call({"op": "put", "dest": dest, "version": version},
                             volume_agent.pack_folder(Path(local_folder)))
        return reply["path"]

    def copy_version(self, source: str, dest: str) -> str:
        """Copy a folder of the volume to the next version under ``dest``, on the volume itself."""
        return self.call({"op": "copy_version", "source": source, "dest": dest})[0]["path"]

    def remove(self, volume_paths: list[str]) -> None:
        """Delete paths on the volume, and this machine's copies of them."""
        self.call({"op": "remove", "paths": list(volume_paths)})
        prefixes = tuple(p.rstrip("/") + "/" for p in volume_paths)
        for name in [f for f in self._known if f in volume_paths or f.startswith(prefixes)]:
            self._known.pop(name)
        volume_agent.remove([str(paths.on_this_machine(p)) for p in volume_paths])
