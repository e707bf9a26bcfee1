"""Waiting for something to become true, with a deadline: written once, used everywhere.

Every wait in the course (a pod to start, a port to answer, a model version to load)
is the same loop: ask, and if the answer is not there yet, sleep a moment and ask
again, until a deadline, when a clear error says what did not happen and what to do.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(ready: Callable[[], T], timeout: float, *, interval: float = 0.5,
               retry_on: tuple[type[BaseException], ...] = (),
               on_timeout: Callable[[], BaseException] | None = None) -> T:
    """Call ``ready()`` every ``interval`` seconds until it returns something true; return that.

    An exception of a type in ``retry_on`` counts as "not yet" (a pod not created
    yet, a port not open yet). After ``timeout`` seconds, raise ``on_timeout()``
    (built then, so its message can say what the state is now), or a plain
    :class:`TimeoutError`; a retried exception is attached as its cause.
    """
    deadline = time.monotonic() + timeout
    while True:
        last_error: BaseException | None = None
        try:
            answer = ready()
            if answer:
                return answer
        except retry_on as err:
            last_error = err
        if time.monotonic() >= deadline:
            error = on_timeout() if on_timeout else TimeoutError(f"still not ready after {timeout:g} s")
            raise error from last_error
        time.sleep(interval)
