"""Python's cyclic garbage collector paused while a reader builds a model, and while
``inspect`` reduces and writes it.

A reader allocates a few objects per tensor and frees almost none of them: every collection of
the oldest generation walks the whole heap built so far, so a file of 200,000 tensors spent
nearly half of its loading time in the collector, and its statistics and JSON another second.
Little built meanwhile is cyclic garbage that would need collecting (the pickle machine, which
builds what a file says, pauses it for the same reason and is bounded by its own budget); what
there is (a failed read's exception frames) is left young, to be collected soon after."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Run the body with the cyclic collector off, and turn it back on only if it was on."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    except BaseException:
        # What a failed read built is garbage, some of it cyclic (an exception's frames): left
        # young, the next collections free it, as a process reading many files needs.
        if collecting:
            gc.enable()
        raise
    if collecting:
        if gc.get_count()[0] > MOVE_ABOVE:
            # Everything built meanwhile is moved to the oldest generation unscanned (freeze,
            # then unfreeze, merges lists): otherwise the first allocation after this walks
            # all of it as young objects, a second for a state dict of 200,000 tensors.
            gc.freeze()
            gc.unfreeze()
        gc.enable()


MOVE_ABOVE = 200_000
"""Objects built while paused above which they are moved to the oldest generation at once.
Below, they are left young: moved objects do not count towards the next full collection, so
any cyclic garbage among them would wait for one (a process reading thousands of small files,
a fuzz or scan worker, grew to its memory cap so); walking this many as young costs little."""
