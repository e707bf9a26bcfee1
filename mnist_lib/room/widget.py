"""`room status` as a live table for the instructor's screen, in JupyterLab.

    from mnist_lib.room.widget import RoomStatus
    RoomStatus("mnist-room").start(every=10)      # redraws every 10 s until .stop()

An ``ipywidgets.HTML`` redrawn from a background thread (as chapter 07's live plot), one
row per attendee, a pending pod's reason in red: who is stuck shows at a glance.
"""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as w

from mnist_lib.cluster.types import ClusterError
from mnist_lib.room import admin

STATUS_CLASS = "room-status"  # the table's CSS class, for a page that styles or finds it


def status_html(rows: list[admin.AttendeeStatus], when: str = "") -> str:
    """The table: attendee, chapters reached, jobs running and failed, quota CPU used, pending pods."""
    head = "".join(f"<th>{h}</th>" for h in ("attendee", "chapters", "running", "failed", "quota cpu", "pending"))
    body = []
    for r in rows:
        pending = "<br>".join(f"<span style='color:#b00'>{html.escape(p)}</span>" for p in r.pending) or "-"
        cells = (html.escape(r.attendee), " ".join(r.chapters) or "-", str(r.running), str(r.failed),
                 f"{html.escape(r.cpu_used)} / {html.escape(r.cpu_hard)}", pending)
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    caption = f"<caption>{html.escape(when)}</caption>" if when else ""
    return f"<table class='{STATUS_CLASS}'>{caption}<tr>{head}</tr>{''.join(body)}</table>"


class RoomStatus(w.HTML):
    """The live table. :meth:`refresh` redraws once; :meth:`start` every few seconds in a thread."""

    def __init__(self, room: str, cluster: admin.Cluster | None = None):
        super().__init__(value="<i>reading the room...</i>")
        self.room = room
        self.cluster = cluster or admin.Cluster()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> list[admin.AttendeeStatus]:
        try:
            rows = admin.status(self.cluster, self.room)
        except ClusterError as err:  # the cluster went away: say so in the table's place, keep trying
            self.value = f"<b>cannot read room {html.escape(self.room)}:</b> {html.escape(str(err))}"
            return []
        self.value = status_html(rows, f"room {self.room}, {len(rows)} attendees, at {time.strftime('%H:%M:%S')}")
        return rows

    def start(self, every: float = 10.0) -> "RoomStatus":
        self.stop()
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                self.refresh()
                self._stop.wait(every)

        self._thread = threading.Thread(target=loop, name=f"room-status-{self.room}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
