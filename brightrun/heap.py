"""The training process's heap, settled once the libraries and then the model are in (Axolotl plugins call
this: jobs/axolotl_plugin.py for every run, bench/gpu/timing.py for the benchmark, which times what runs do).

Axolotl's packing sampler calls gc.collect() at the end of each generate_batches, ~34 times in a one-step
smoke run (its length is sampled 4 times per sampler, per epoch and per eval). Over torch's, transformers'
and the model's objects a full collection took 0.49-0.8 s on 2 cores: 19.5 s of a 61 s CPU training
process, 2.3 s of 45 s once frozen (measured 2026-12-07, a gc.collect wrapper in sitecustomize). After
gc.freeze (CPython 3.7+) a collection walks only objects made since.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect once, then leave everything alive now out of every later collection. The collect first, so
    nothing already garbage (a model load's cycles holding GPU memory) is frozen for good. Only in a process
    that trains: a long-lived one (the service validates configs, which loads the plugins) must not freeze
    what it holds for a moment, or it could never be collected."""
    gc.collect()
    gc.freeze()
