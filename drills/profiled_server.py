"""uvicorn under cProfile, counting CPU time of the event-loop thread (where streams are
served) only while switched on: SIGUSR1 starts, SIGUSR2 pauses; the profile is written to
$PROFILE_OUT at exit. Used by `drills.load --profile` to profile its loaded phases only.

    PROFILE_OUT=/tmp/server.prof python -m drills.profiled_server app.main:app --port 8000
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import time
from types import FrameType

import uvicorn.main

profiler = cProfile.Profile(timer=time.thread_time)  # CPU, not wall: the machine is shared


def _start(_signum: int, _frame: FrameType | None) -> None:
    profiler.enable()


def _pause(_signum: int, _frame: FrameType | None) -> None:
    profiler.disable()


def main() -> None:
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _pause)
    try:
        uvicorn.main.main(sys.argv[1:], standalone_mode=False)
    finally:
        profiler.disable()
        profiler.dump_stats(os.environ["PROFILE_OUT"])


if __name__ == "__main__":
    main()
