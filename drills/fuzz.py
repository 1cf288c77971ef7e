"""Fuzz drill: hypothesis over every JSON API route, with the checks of
tests/test_drills_fuzz.py (no 5xx, errors in the API.md shape, rejected requests append no
event), at full size.

    .venv/bin/python -m drills.fuzz --examples 10000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=10_000)
    args = parser.parse_args()
    started = time.monotonic()
    env = {**os.environ, "FUZZ_EXAMPLES": str(args.examples)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_drills_fuzz.py", "-q",
         "-p", "no:cacheprovider"],
        cwd=ROOT, env=env,
    )
    seconds = time.monotonic() - started
    verdict = "0 responses 5xx, 0 events appended by rejected requests, every error shaped"
    print(f"fuzz: {args.examples} cases in {seconds:.0f} s: "
          + (verdict if done.returncode == 0 else "FAILED (see above)"))
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
