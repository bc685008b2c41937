"""Run test workloads in several threads at once, with frequent thread switches."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable


def run_concurrently(work: Callable[[int], None], count: int = 8, *, main: Callable[[], None] | None = None,
                     switch_interval: float = 1e-5) -> None:
    """Call ``work(k)`` in ``count`` threads (``k`` = 0..count-1) while ``main()`` runs here.

    The interpreter switches threads every ``switch_interval`` seconds, so races show up;
    the first exception raised in any thread is re-raised here once all have finished.
    """
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            work(k)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval)
    try:
        threads = [threading.Thread(target=guarded, args=(k,)) for k in range(count)]
        for thread in threads:
            thread.start()
        if main is not None:
            main()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    if errors:
        raise errors[0]
