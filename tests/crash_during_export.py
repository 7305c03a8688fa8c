"""``flexguard admin export-training`` that dies (SIGKILL) at a chosen moment, for tests/test_review_export.py.

``python crash_during_export.py POINT N ARGS...`` runs the export with 2 photos a chunk and kills itself:
- ``write N``: right after the N-th file (photo or manifest) is written;
- ``marked N``: right after the N-th chunk is committed as exported.
It stands for a crash, an OOM kill or a power cut at that moment. Test-only; never shipped.
"""

import os
import signal
import sys

from flexguard.cli import main
from flexguard.service.review import training_export
from flexguard.service.review.store import ReviewStore

POINT, AFTER = sys.argv[1], int(sys.argv[2])
CHUNK = 2
calls = {"write": 0, "marked": 0}
_write, _mark = training_export._write_durably, ReviewStore.mark_exported


def counted(point, result):
    calls[point] += 1
    if point == POINT and calls[point] == AFTER:
        os.kill(os.getpid(), signal.SIGKILL)
    return result


training_export.CHUNK = CHUNK
training_export._write_durably = lambda path, data: counted("write", _write(path, data))
ReviewStore.mark_exported = lambda self, *args: counted("marked", _mark(self, *args))
sys.exit(main(["admin", "export-training", *sys.argv[3:]]))
