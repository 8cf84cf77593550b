"""The garbage collector of a long-running server process (the web's ASGI app, the fraud brain),
settled once start-up is over. No Django: the brain imports it too."""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["GC_YOUNG_THRESHOLD", "settle_garbage_collector"]

# Allocations (minus deallocations) between young collections; CPython's default is 700.
GC_YOUNG_THRESHOLD: Final = 10_000


def settle_garbage_collector() -> None:
    """Keeps the collector off what start-up loaded.

    Start-up leaves a few hundred thousand long-lived objects (Django, the apps and the URLconf in
    the web process; numpy, LightGBM and gRPC in the brain); every full collection walked them
    all: a 75-88 ms pause every ~1.5 s under load in the web (bench.gateway's profile), and
    80-120 ms pauses in the brain at 500 tx/s (bench/fraud, with gc.callbacks timing them), each
    stalling every call in flight. `gc.freeze()` moves them to a generation the collector never
    scans, and a higher first threshold makes young collections rarer; garbage made after
    start-up is still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
