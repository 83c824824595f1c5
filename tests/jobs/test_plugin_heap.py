"""The training process's heap is settled before the data loads (brightrun/heap.py, from jobs/axolotl_plugin.py): Axolotl's
packing sampler collects garbage ~30 times a run, and each full collection walked every object of torch,
transformers and the model (0.5-0.8 s each on CI's cores)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

PROBE = """
import gc, weakref
gc.disable()                   # no automatic collection: only the plugin's own can free the cycle below
class Node: pass
a, b = Node(), Node()
a.peer, b.peer = b, a          # a cycle: only a collection frees it
gone = weakref.ref(a)
del a, b
from jobs.axolotl_plugin import RegistryPlugin
assert gc.get_freeze_count() == 0, "frozen before the plugin"
plugin = RegistryPlugin()          # as validating a config does (the service, for each start)
assert gc.get_freeze_count() == 0, "validating a config froze the heap"
assert plugin.load_datasets({}, preprocess=False) is None  # Axolotl loads the data itself
print(gone() is None, gc.get_freeze_count(), len(gc.get_objects()))
"""


def test_training_collects_then_freezes_what_is_alive_and_validating_does_not():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    collected, frozen, tracked = proc.stdout.split()
    assert collected == "True"  # garbage from before was collected, not frozen for good
    # Axolotl's, torch's and transformers' objects are out of every later collection: far more than it walks.
    assert int(frozen) > 100_000 and int(frozen) > 10 * int(tracked), (frozen, tracked)
