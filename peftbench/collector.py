"""CPython's cycle collector, tuned for a process that imports torch and transformers: every
peftbench process (the command line, warm workers, the test workers) calls ``tune_collection`` first."""

from __future__ import annotations

import atexit
import functools
import gc

COLLECT_YOUNG_EVERY = 50_000  # allocations between young-generation passes (CPython 3.11-3.13: 700)


@functools.cache
def tune_collection() -> None:
    """CPython's cycle collector, set for a process that imports torch and transformers (once per
    process; the warm worker and the test workers call it too):
    - A young-generation pass every 50,000 allocations, not 700: at 700 a small run process here
      made ~1,100 passes, and the full ones walk every object the imports made: 0.7-1 s of CPU
      before the first step. At 50,000: ~15 passes, 0.2 s. A garbage cycle still goes within
      50,000 allocations, a few training steps.
    - None at exit: the heap is frozen, as CPython's shutdown otherwise collects every object
      torch and transformers made (1.3 s of CPU per run process here). Every exit handler still
      runs (those registered later, such as a run's trackers, before this one); records and logs
      are written and closed before the process exits."""
    gc.set_threshold(COLLECT_YOUNG_EVERY, *gc.get_threshold()[1:])
    atexit.register(lambda: (gc.disable(), gc.freeze()))
