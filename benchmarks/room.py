"""Benchmark: `room up` and `room down` for a workshop of 3 and of 30 attendees.

    .venv/bin/python -m benchmarks.room [--room bench-room]

Needs a cluster (``KUBECONFIG`` with cluster-admin rights; the course's test cluster:
``infra/k8s/cluster.sh up``, then ``KUBECONFIG=/tmp/mnist-course-k8s/admin.kubeconfig``).

- 3 attendees: a real `up` (namespaces, RBAC, quotas, claims, TokenRequest kubeconfigs),
  `up` again (must change nothing: the idempotent path), then `down` (waits until every
  namespace is gone).
- 30 attendees: the same, for real. The test cluster's one node could not run their pods
  (`room plan` refuses the room, and the command line's `up` with it), but `up` itself starts
  no pod: it makes namespaces, RBAC, quotas, claims (bound only when a pod uses them) and
  tokens, so the API server's side of a room of 30 is measured, called here without the plan.
- 30 attendees `--dry-run`: the API server checks the namespaces and stores nothing.

Measured: wall time and API requests of each. Writes benchmarks/results/room.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import when_and_where
from mnist_lib import paths
from mnist_lib.cluster.types import ClusterError
from mnist_lib.room import admin
from mnist_lib.room.objects import attendees

RESULTS = Path(__file__).resolve().parent / "results" / "room.json"


def _timed(what, *args, **kwargs) -> tuple[float, int, object]:
    cluster = admin.Cluster()
    started = time.monotonic()
    answer = what(cluster, *args, **kwargs)
    return round(time.monotonic() - started, 2), cluster.calls, answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--room", default="bench-room")
    args = parser.parse_args()
    results = when_and_where()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-room-") as tmp:
            folder = Path(tmp)
            three = attendees(args.room, count=3)
            seconds, calls, _ = _timed(admin.up, three, folder, 4)
            again, again_calls, report = _timed(admin.up, three, folder, 4)
            down, down_calls, gone = _timed(admin.down, args.room, folder)
            results["attendees_3"] = {"up_s": seconds, "up_api_calls": calls,
                                      "up_again_s": again, "up_again_api_calls": again_calls,
                                      "up_again_renewed_tokens": len(report.renewed),
                                      "down_s": down, "down_api_calls": down_calls, "left": gone.left}
            thirty = attendees(args.room, count=30)
            seconds, calls, _ = _timed(admin.up, thirty, folder, 4, dry_run=True)
            results["attendees_30_dry_run"] = {"up_s": seconds, "up_api_calls": calls}
            seconds, calls, report = _timed(admin.up, thirty, folder, 4)
            down, down_calls, gone = _timed(admin.down, args.room, folder)
            results["attendees_30"] = {"up_s": seconds, "up_api_calls": calls, "kubeconfigs": len(report.kubeconfigs),
                                       "down_s": down, "down_api_calls": down_calls, "left": gone.left}
    except ClusterError as err:
        print(f"no benchmark: {err}", file=sys.stderr)
        return 1
    paths.write_json(RESULTS, results)
    print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
