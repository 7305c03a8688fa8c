"""``flexguard serve`` that dies (SIGKILL) the moment a submission is committed, before answering.

For tests/test_review_durability.py: it stands for a crash, an OOM kill or a power cut at the worst
moment, between "submission stored" and "response sent". Test-only; never shipped.
"""

import os
import signal
import sys

from flexguard.cli import main
from flexguard.service.review.store import ReviewStore

_submit = ReviewStore.submit


def submit_then_die(self, actor, draft):
    _submit(self, actor, draft)
    os.kill(os.getpid(), signal.SIGKILL)


ReviewStore.submit = submit_then_die
sys.exit(main(["serve", *sys.argv[1:]]))
