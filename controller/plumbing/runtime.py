"""How a long-running ``cutover run`` process sets up the interpreter once it has started.

- The collector: the process holds ~190,000 objects once started (FastAPI, pydantic, botocore's
  service models, the app); every full pass of the cyclic garbage collector walks all of them, and
  such a pass holds the interpreter lock for hundreds of milliseconds on a busy machine. They live
  as long as the process, so after one collection they are moved out of the collector's reach.
- The interpreter lock: the cycle thread and the intake's worker threads run Python for long
  stretches, while the event loop needs the lock back after every socket call to answer a request.
  A thread waiting for the lock asks the holder to let go after the switch interval (5 ms by
  default); with several waits per request that is what ``/status`` and ``/healthz`` took under
  load. A shorter interval bounds each wait.
"""

from __future__ import annotations

import gc
import sys

SWITCH_INTERVAL_SECONDS = 0.001


def settle_after_start_up() -> None:
    """Collect what start-up left over, then freeze what is left: later passes skip it for good,
    while objects made from here on are collected as before."""
    gc.collect()
    gc.freeze()


def share_the_interpreter_lock() -> None:
    """Make a thread holding the interpreter lock hand it over after at most 1 ms when another
    thread waits for it (the event loop answering a request), instead of 5 ms."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
