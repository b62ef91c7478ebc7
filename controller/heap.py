"""The collector's view of a long-running process: what start-up made is kept out of its passes.

A ``cutover run`` process holds ~190,000 objects once it has started (FastAPI, pydantic, botocore's
service models, the app); every full pass of the cyclic garbage collector walks all of them, and
such a pass holds the interpreter lock for hundreds of milliseconds on a busy machine. They live as
long as the process, so after one collection they are moved out of the collector's reach.
"""

from __future__ import annotations

import gc


def settle_after_start_up() -> None:
    """Collect what start-up left over, then freeze what is left: later passes skip it for good,
    while objects made from here on are collected as before."""
    gc.collect()
    gc.freeze()
