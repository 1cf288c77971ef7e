"""Reliability drills: bounded in time, against 127.0.0.1 only; see docs/reliability.md."""
