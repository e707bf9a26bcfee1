"""``python -m mnist_lib.room plan|up|check|status|down``: the instructor's commands.

Exit status 0 only when what was asked holds: the room fits (plan), is up (up), every
check passed (check), every attendee's namespace is there (status), nothing is left (down).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from mnist_lib.cluster.types import ClusterError
from mnist_lib.room import admin
from mnist_lib.room.objects import DEFAULT_ROOM, Attendee, RoomError, attendees, check_room_name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mnist_lib.room", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, what in (("plan", "what `up` would create, and whether the cluster is big enough"),
                       ("up", "create (or complete) the room and write one kubeconfig per attendee"),
                       ("check", "the preflight of the evening before"),
                       ("status", "one line per attendee: chapters reached, jobs, pending pods, quota"),
                       ("down", "delete everything of the room and verify that nothing is left"),
                       ("jupyter", "reach an attendee's JupyterLab (room up --jupyter): a port-forward and its URL")):
        sub = commands.add_parser(name, help=what, description=what)
        sub.add_argument("--room", default=DEFAULT_ROOM, help=f"the room's name, prefix of every namespace "
                                                               f"(default {DEFAULT_ROOM})")
        sub.add_argument("--kubeconfig-dir", type=Path, default=Path("room"),
                         help="where the attendees' kubeconfigs go (default room/)")
        sub.add_argument("--context", help="the instructor's kubeconfig context (default: the current one)")
        if name in ("plan", "up"):
            who = sub.add_mutually_exclusive_group(required=True)
            who.add_argument("--attendees", type=int, metavar="N", help="attendee-1 .. attendee-N")
            who.add_argument("--names", type=Path, metavar="FILE", help="one attendee name per line")
            sub.add_argument("--storage-class", help="the claims' StorageClass (default: the cluster's default)")
        if name == "up":
            sub.add_argument("--hours", type=float, default=8, help="how long the tokens last (default 8)")
            sub.add_argument("--dry-run", action="store_true", help="the API server checks everything, stores nothing")
            sub.add_argument("--new-tokens", action="store_true", help="write every kubeconfig again with a new token")
            sub.add_argument("--jupyter", action="store_true", help="also a JupyterLab per attendee in the cluster")
        if name == "jupyter":
            sub.add_argument("--attendee", required=True, help="whose JupyterLab")
        if name in ("plan", "check", "status", "up", "down"):
            sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _people(args: argparse.Namespace) -> list[Attendee]:
    if args.names is not None:
        try:
            return attendees(args.room, names=args.names.read_text().splitlines())
        except OSError as err:
            raise RoomError(f"cannot read the names file {args.names}: {err.strerror}") from None
    return attendees(args.room, count=args.attendees)


def run(args: argparse.Namespace) -> tuple[int, Any, str]:
    """Do the command; return (exit status, the JSON answer, the table)."""
    check_room_name(args.room)
    people = _people(args) if args.command in ("plan", "up") else []  # bad names fail before the cluster is asked
    cluster = admin.Cluster(context=args.context)
    if args.command == "plan":
        plan = admin.plan(cluster, people, args.storage_class)
        rows = [["room", plan.room], ["attendees", str(len(plan.attendees))],
                ["objects", ", ".join(f"{n} {k}" for k, n in plan.objects.items())],
                ["nodes (ready)", f"{plan.allocatable['nodes']}: {plan.allocatable['cpu']} CPU, "
                                  f"{plan.allocatable['memory']} allocatable"],
                ["needed at once", f"{plan.minimum_total['cpu']} CPU, {plan.minimum_total['memory']} "
                                   "(one chapter-03 pod each)"],
                ["all quotas", f"{plan.quota_total['cpu']} CPU, {plan.quota_total['memory']}"],
                ["storage class", plan.storage_class or "(none)"],
                ["training operator", "installed" if plan.operator else "missing"]]
        text = _table(rows) + "".join(f"\nREFUSED: {p}" for p in plan.problems) + "".join(f"\nnote: {n}" for n in plan.notes)
        return (0 if plan.fits else 1), plan.as_dict(), text
    if args.command == "up":
        plan = admin.plan(cluster, people, args.storage_class)
        if not plan.fits:
            return 1, plan.as_dict(), "room up refused:\n" + "\n".join(plan.problems)
        report = admin.up(cluster, people, args.kubeconfig_dir, args.hours, args.storage_class, args.dry_run,
                          args.new_tokens, args.jupyter)
        text = (f"room {report.room}: {report.applied} objects applied for {len(people)} attendees in "
                f"{report.seconds:.1f} s ({report.api_calls} API calls)"
                + ("" if args.dry_run else
                   f"\nkubeconfigs: {args.kubeconfig_dir}/ ({len(report.renewed)} new tokens valid {args.hours:g} h), "
                   f"all in {report.archive}\nan attendee runs: export KUBECONFIG=$PWD/<their file>; make course")
                + ("\nJupyterLabs ready: `python -m mnist_lib.room jupyter --attendee NAME` opens one"
                   if args.jupyter else ""))
        return 0, asdict(report), text
    if args.command == "check":
        results = admin.check(cluster, args.room, args.kubeconfig_dir)
        rows = [["check", "result", "detail", "what to do"]] + [[c.name, c.word, c.detail, c.todo if c.ok is False else ""]
                                                               for c in results]
        return (0 if all(c.ok is not False for c in results) else 1), [asdict(c) | {"result": c.word}
                                                                        for c in results], _table(rows)
    if args.command == "status":
        rows_ = admin.status(cluster, args.room)
        rows = [["attendee", "chapters", "running", "failed", "quota cpu", "pending"]] + [
            [r.attendee, " ".join(r.chapters) or "-", str(r.running), str(r.failed), f"{r.cpu_used}/{r.cpu_hard}",
             "; ".join(r.pending) or "-"] for r in rows_]
        return (0 if rows_ else 1), [asdict(r) for r in rows_], (_table(rows) if rows_ else f"no room {args.room!r}")
    if args.command == "jupyter":
        url, forward = admin.jupyter_forward(cluster, Attendee(args.room, args.attendee))
        print(f"{args.attendee}'s JupyterLab: {url}\n(a port-forward from this machine: Ctrl-C ends it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            forward.close()
        return 0, {}, ""
    report = admin.down(cluster, args.room, args.kubeconfig_dir)
    text = (f"room {report.room}: deleted {len(report.namespaces)} namespaces and {len(report.cluster_objects)} "
            f"cluster-wide objects in {report.seconds:.1f} s" +
            ("; nothing is left" if not report.left else "\nSTILL THERE:\n" + "\n".join(report.left)))
    return (0 if not report.left else 1), asdict(report), text


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code, answer, text = run(args)
    except (RoomError, ClusterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=2) if getattr(args, "json", False) else text)
    return code


if __name__ == "__main__":
    sys.exit(main())
