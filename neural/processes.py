"""Worker processes that do not outlive their parent.

``ProcessPoolExecutor(..., initializer=die_with_parent, initargs=(os.getpid(),))``:
a pool's workers normally notice a dead parent only when they next talk to it;
a parent killed with SIGKILL (the OOM killer, ``kill -9``, a cluster's time
limit) leaves workers that finish their chunk -- or block -- holding hundreds of
MB each. On Linux the kernel can deliver a signal to a child when its parent
dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere a watchdog thread polls the parent.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Make the calling process exit when ``parent_pid`` (its parent) dies; for pool initializers."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                # the parent may have died before prctl took effect: then we were re-parented
                if os.getppid() != parent_pid:
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass  # no usable libc: fall back to polling

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
