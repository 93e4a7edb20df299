"""The worker's C allocator keeps freed memory: a batch's large arrays, allocated again by
the next batch, no longer fault their pages in each time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamrec.kernel.allocator import keep_freed_memory

# 40 "batches", each allocating four 4 MiB arrays and freeing them together; prints the
# minor page faults they took
_CHILD = """
import resource, sys
import numpy as np
from streamrec.kernel.allocator import keep_freed_memory
kept = keep_freed_memory(int(sys.argv[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    arrays = [np.ones(1 << 20, dtype=np.float32) for _ in range(4)]
    del arrays
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep_mb: int) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(keep_mb)], check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_zero_leaves_the_allocator_alone() -> None:
    assert keep_freed_memory(0) is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_not_faulted_in_again_batch_after_batch() -> None:
    kept, with_keep = _faults(64)
    assert kept
    _, default = _faults(0)
    # by default the freed arrays go back to the system (mmap'ed, or the heap's top trimmed)
    # and are faulted in again by the next batch: ~1,024 faults per array
    assert default > 40 * 1000
    assert with_keep < default / 10
