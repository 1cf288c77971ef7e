"""What every command shares: the data directory, output as text or JSON lines, errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from app.audit.progress import Progress
from app.config import Settings

OK, PROBLEM, USAGE = 0, 1, 2  # exit codes: done / a check failed or was refused / bad input


@dataclass
class Context:
    settings: Settings
    json: bool
    progress_enabled: bool | None  # None: only when stderr is a terminal
    out: TextIO
    err: TextIO

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def emit(self, record: dict[str, Any]) -> None:
        """One JSON line (the machine-readable form of everything)."""
        self.out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def say(self, text: str) -> None:
        self.out.write(text + "\n")

    def warn(self, text: str) -> None:
        self.err.write(text + "\n")

    def progress(self, label: str, total: int, unit: str = "events") -> Progress:
        return Progress(label, total, unit, self.err, self.progress_enabled)


Handler = Callable[[Context, argparse.Namespace], int]


def shared_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--data-dir, --json and --no-progress, accepted before or after the command name."""
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument("--data-dir", type=Path, default=default, metavar="DIR",
                        help="the server's data directory (default: $DATA_DIR or ./data)")
    parser.add_argument("--json", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="machine-readable output: one JSON object per line")
    parser.add_argument("--no-progress", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="no progress line on stderr (it is shown on terminals only)")


def add_command(commands: Any, name: str, handler: Handler, summary: str,
                description: str | None = None) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=description or summary,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    shared_options(parser, top=False)
    parser.set_defaults(handler=handler)
    return parser


def context(args: argparse.Namespace) -> Context:
    settings = Settings(data_dir=args.data_dir) if args.data_dir else Settings()
    return Context(settings, args.json, False if args.no_progress else None,
                   sys.stdout, sys.stderr)
