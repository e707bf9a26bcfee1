"""The code that runs next to the shared volume: list, pack, unpack, version and remove files.

The local backend calls these functions directly on ``outputs/``. On a cluster the
notebook cannot mount the volume, so the kubernetes backend sends *this file's
source* to a small long-lived pod that mounts it (``python -c <source>``, run with
``kubectl exec``'s API) and talks to it over stdin and stdout, as ``kubectl cp``
does with ``tar``. Sending the source, not importing it in the pod, means the
pod's image needs only Python, not this version of the course's library.

Hence the one rule of this module: **standard library only**, nothing from mnist_lib.

The wire format, both ways: a JSON header and a binary payload, each preceded by
its length (8 bytes, big-endian). The payload is a gzip'd tar of files.

- ``pull``: ``{"paths": [...], "known": {path: [size, mtime_ns]}}`` answers with
  every file and folder now under those paths (``files``, ``folders``), the paths
  that do not exist (``missing``), and a tar of only the files whose size or mtime differ from
  ``known``: a live plot refreshes by sending what it has and receiving the changes.
- ``put``: a tar of a folder, unpacked next to ``dest`` and renamed into place,
  so a model server watching the parent never sees half a model; ``version: true``
  makes ``dest`` a model's base folder and the folder its next numbered version.
- ``copy_version``: the same from a folder already on the volume (promoting a trial).
- ``remove``: delete paths (missing ones are fine).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, BinaryIO


# -- what is there ------------------------------------------------------------------

def snapshot(paths: list[str]) -> tuple[dict[str, list[int]], list[str], list[str]]:
    """``({file: [size, mtime_ns]}, folders, missing)`` for everything under ``paths``.

    Folders are listed too, so that an empty one (a SavedModel's ``assets/``) exists in a copy.
    Hidden names (``.staging-*``, half-written files) are left out.
    """
    files: dict[str, list[int]] = {}
    folders: list[str] = []
    missing = []
    for top in paths:
        root = Path(top)
        if root.is_file():
            candidates = [root]
        elif root.is_dir():
            found = [p for p in root.rglob("*") if not any(part.startswith(".") for part in p.relative_to(root).parts)]
            candidates = [p for p in found if p.is_file()]
            folders += [str(root)] + [str(p) for p in found if p.is_dir()]
        else:
            missing.append(top)
            continue
        for path in candidates:
            try:
                st = path.stat()
            except OSError:  # removed while we looked (a checkpoint being replaced)
                continue
            files[str(path)] = [st.st_size, st.st_mtime_ns]
    return files, folders, missing


def pack(files: list[str]) -> bytes:
    """A gzip'd tar of ``files``, each under its absolute path (without the leading ``/``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name in files:
            try:
                tar.add(name, arcname=name.lstrip("/"), recursive=False)
            except OSError:  # gone since snapshot(): the next pull will say so
                pass
    return buffer.getvalue()


def unpack(data: bytes, dest: Path) -> None:
    """Unpack a tar made by :func:`pack` or :func:`pack_folder` under ``dest`` (nothing outside it)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        members = tar.getmembers()
        for member in members:  # what filter="data" checks, for Pythons older than 3.11.4
            if member.name.startswith("/") or ".." in Path(member.name).parts or \
                    not (member.isfile() or member.isdir()):
                raise ValueError(f"refusing to unpack {member.name!r}")
        tar.extractall(dest, members=members)


def pack_folder(folder: Path) -> bytes:
    """A gzip'd tar of a folder's content, names relative to the folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(Path(folder).rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()


# -- writing: staged, then renamed into place ------------------------------------------------

def _staging(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))  # same file system: rename works


def version_numbers(base: Path) -> list[int]:
    """The numbered version folders of a model base, sorted: ``[1, 2]`` (what TF Serving reads)."""
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdecimal() and p.is_dir()) if base.is_dir() else []


def place(staged: Path, dest: Path, version: bool) -> Path:
    """Rename ``staged`` to ``dest`` (replacing it), or to ``dest/<next version>`` if ``version``."""
    if not version:
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.rename(staged, dest)
        return dest
    for _ in range(100):  # another writer may take the same number: try the next one
        target = dest / str(max(version_numbers(dest), default=0) + 1)
        try:
            os.rename(staged, target)
            return target
        except OSError:
            if not target.exists():
                raise
    raise RuntimeError(f"no free version number in {dest}")


def put(data: bytes, dest: str, version: bool = False) -> str:
    """Unpack a folder's tar next to ``dest``, then rename it into place; return where it went."""
    dest_path = Path(dest)
    staging = _staging(dest_path if version else dest_path.parent)
    try:
        unpack(data, staging / "folder")
        return str(place(staging / "folder", dest_path, version))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def copy_folder(source: str, dest: str, version: bool = False) -> str:
    """Copy a folder to ``dest`` (or ``dest``'s next version), staged then renamed."""
    if not Path(source).is_dir():
        raise FileNotFoundError(f"{source} does not exist")
    dest_path = Path(dest)
    staging = _staging(dest_path if version else dest_path.parent)
    try:
        shutil.copytree(source, staging / "folder")
        return str(place(staging / "folder", dest_path, version))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove(paths: list[str]) -> None:
    for name in paths:
        path = Path(name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink(missing_ok=True)


# -- the wire ---------------------------------------------------------------------------------

def read_frame(stream: BinaryIO) -> bytes:
    head = stream.read(8)
    if len(head) != 8:
        raise EOFError("the stream ended before a frame")
    size = struct.unpack(">Q", head)[0]
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError("the stream ended inside a frame")
        data += chunk
    return data


def frame(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def answer(request: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    """Do what ``request`` asks; return the reply's header and payload."""
    op = request.get("op")
    if op == "pull":
        files, folders, missing = snapshot(request["paths"])
        known = request.get("known") or {}
        changed = sorted(name for name, stat in files.items() if known.get(name) != stat)
        reply = {"files": files, "folders": folders, "missing": missing, "sent": changed}
        return reply, pack(changed) if changed else b""
    if op == "put":
        return {"path": put(payload, request["dest"], bool(request.get("version")))}, b""
    if op == "copy_version":
        return {"path": copy_folder(request["source"], request["dest"], version=True)}, b""
    if op == "remove":
        remove(request["paths"])
        return {}, b""
    raise ValueError(f"unknown op {op!r}")


def main() -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    request = json.loads(read_frame(stdin))
    payload = read_frame(stdin)
    try:
        reply, data = answer(request, payload)
    except Exception as err:  # reported to the notebook, which says what it means
        reply, data = {"error": f"{type(err).__name__}: {err}"}, b""
    stdout.write(frame(json.dumps(reply).encode()) + frame(data))
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
