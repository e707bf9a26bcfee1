"""The run layout and the volume verbs: what a run writes, read back and written through a backend.

The kubernetes backend sends :mod:`mnist_lib.cluster.volume_agent`'s source to a helper pod;
here the same source runs as a subprocess with the same stdin/stdout framing, so the
protocol is tested without a cluster (and against a real one in test_kubernetes_real_cluster.py).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from mnist_lib import paths, runs
from mnist_lib.cluster import NotFoundError, volume_agent
from mnist_lib.cluster.local import LocalBackend
from mnist_lib.cluster.volume import AGENT_SOURCE


def agent(request: dict, payload: bytes = b"") -> tuple[dict, bytes]:
    """One exchange with the agent, exactly as the helper pod runs it (``python -c <source>``)."""
    out = subprocess.run([sys.executable, "-c", AGENT_SOURCE], check=True, capture_output=True,
                         input=volume_agent.frame(json.dumps(request).encode()) + volume_agent.frame(payload)).stdout
    stream = io.BytesIO(out)
    return json.loads(volume_agent.read_frame(stream)), volume_agent.read_frame(stream)


def test_the_agent_needs_nothing_but_the_standard_library():
    imports = [line for line in AGENT_SOURCE.splitlines() if line.startswith(("import ", "from "))]
    assert imports and not any("mnist_lib" in line for line in imports)


def test_pull_sends_only_what_changed_and_says_what_is_missing(tmp_path):
    logs = tmp_path / "run" / "logs"
    (logs / "train").mkdir(parents=True)
    (logs / "train" / "events.1").write_text("epoch 1")
    reply, data = agent({"op": "pull", "paths": [str(logs), str(tmp_path / "nope")], "known": {}})
    assert reply["sent"] == [str(logs / "train" / "events.1")] and reply["missing"] == [str(tmp_path / "nope")]
    assert data  # a tar with that one file
    again, nothing = agent({"op": "pull", "paths": [str(logs)], "known": reply["files"]})
    assert again["sent"] == [] and nothing == b""  # a refresh with no change moves no file
    (logs / "train" / "events.1").write_text("epoch 1, epoch 2")
    changed, _ = agent({"op": "pull", "paths": [str(logs)], "known": reply["files"]})
    assert changed["sent"] == [str(logs / "train" / "events.1")]


def test_put_version_is_staged_and_numbered(tmp_path):
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"pb")
    base = tmp_path / "serving" / "mnist"
    first, _ = agent({"op": "put", "dest": str(base), "version": True}, volume_agent.pack_folder(model))
    second, _ = agent({"op": "copy_version", "source": first["path"], "dest": str(base)})
    assert (first["path"], second["path"]) == (str(base / "1"), str(base / "2"))
    assert (base / "2" / "saved_model.pb").read_bytes() == b"pb"
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # no staging folder left behind


def test_agent_errors_come_back_as_text(tmp_path):
    reply, _ = agent({"op": "copy_version", "source": str(tmp_path / "none"), "dest": str(tmp_path / "b")})
    assert "does not exist" in reply["error"]


def test_unpack_refuses_paths_outside_the_destination(tmp_path):
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="refusing"):
        volume_agent.unpack(buffer.getvalue(), tmp_path / "dest")


def test_local_backend_volume_verbs(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_OUTPUT_DIR", str(tmp_path / "outputs"))
    backend = LocalBackend(state_dir=tmp_path / "state")
    try:
        model_dir = paths.output_dir() / "r1" / runs.CHECKPOINTS
        model_dir.mkdir(parents=True)
        paths.write_json(model_dir / runs.RESULT_FILE, {"test_accuracy": 0.9})
        assert runs.result("r1", backend) == {"test_accuracy": 0.9}
        assert runs.result("r2", backend) is None
        with pytest.raises(NotFoundError):
            backend.pull("/outputs/r2")
        source = tmp_path / "export" / "1"
        source.mkdir(parents=True)
        (source / "saved_model.pb").write_bytes(b"pb")
        base = runs.serving_base()
        assert runs.put_version(source, base, version=1, backend=backend) == f"{base}/1"
        assert runs.put_version(f"{base}/1", base, backend=backend) == f"{base}/2"
        assert runs.versions(base, backend) == [1, 2]
        runs.clear("r1", backend)
        assert not (paths.output_dir() / "r1").exists()
    finally:
        backend.shutdown()


def test_layout_is_one_definition():
    folders = runs.folders("ch03-job", "/outputs")
    assert {k: str(v) for k, v in folders.items()} == {
        "model_dir": "/outputs/ch03-job/checkpoints", "log_dir": "/outputs/ch03-job/logs",
        "export_dir": "/outputs/ch03-job/export"}
    assert paths.on_volume(paths.output_dir() / "a" / "b") == "/outputs/a/b"
    assert paths.on_this_machine("/outputs/a/b") == paths.output_dir() / "a" / "b"
    with pytest.raises(ValueError):
        paths.volume_relative("/etc/passwd")
