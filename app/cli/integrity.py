"""`verify`, `replay` and `rebuild`: is the log intact, and do the read models follow from it?"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from app.audit.chain import ChainReport, verify_chain
from app.audit.log import head_of, missing_table, open_read_models, open_records
from app.audit.progress import Progress
from app.audit.replay import ReplayReport, replay
from app.audit.store import open_application
from app.cli.common import OK, PROBLEM, USAGE, Context, add_command
from app.event_store import is_postgres, read_models_for
from projections.database import ReadModels, dialect_of
from projections.runner import ProjectionRunner

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _live(ctx: Context) -> Path | ReadModels:
    """The live read models: the SQLite file, or PostgreSQL's schema."""
    read_models = read_models_for(ctx.settings)
    return ctx.settings.read_model_path if read_models.dialect == "sqlite" else read_models


def _replay(ctx: Context, into: Path | str | None) -> ReplayReport:
    chat = open_application(ctx.settings)
    bars: list[Progress] = []

    def progress_for(total: int) -> Any:
        bars.append(ctx.progress("replaying", total))
        return bars[-1].update

    try:
        report = replay(chat, _live(ctx), into, progress_for)
    finally:
        for bar in bars:
            bar.finish()
        chat.close()
    return report


def _show_replay(ctx: Context, report: ReplayReport) -> None:
    if ctx.json:
        ctx.emit({"check": "replay", "position": report.position, "seconds": report.seconds,
                  "identical": report.identical, "first_position": report.first_position,
                  "skipped": report.skipped,
                  "tables": [vars(t) for t in report.tables],
                  "fresh": str(report.fresh_path) if report.fresh_path else None})
        return
    for t in report.tables:
        state = "identical" if t.identical else (
            f"DIFFERS: {t.only_live} live rows not in the replay, {t.only_fresh} replayed"
            " rows not live" + (f", from position {t.first_position}"
                                if t.first_position else ""))
        ctx.say(f"{t.table:<14} {t.live_rows:>9,} rows  {state}")
        for sample in t.samples:
            ctx.say(f"    {sample}")
    for name, position in report.skipped.items():
        ctx.say(f"{name:<14} skipped: live at position {position}, not {report.position}")
    rate = report.position / report.seconds if report.seconds else 0
    ctx.say(f"{report.position:,} events replayed in {report.seconds:.1f} s ({rate:,.0f}/s); "
            + ("read models match the log" if report.identical
               else "read models do NOT match the log"))


def replay_command(ctx: Context, args: argparse.Namespace) -> int:
    if is_postgres(ctx.settings):
        return _replay_into_schema(ctx, args.into)
    into = args.into
    if into is not None and (into / "readmodels.sqlite").exists():
        ctx.warn(f"{into / 'readmodels.sqlite'} exists; replay into a new directory")
        return USAGE
    report = _replay(ctx, into)
    _show_replay(ctx, report)
    if into is not None and not ctx.json:
        ctx.say(f"fresh read models kept in {into / 'readmodels.sqlite'}")
    return OK if report.identical else PROBLEM


def _replay_into_schema(ctx: Context, into: Path | None) -> int:
    """On PostgreSQL the fresh read models are kept in a schema of the same database."""
    schema = str(into) if into is not None else None
    if schema is not None and not SCHEMA_NAME.fullmatch(schema):
        ctx.warn(f"--into {schema}: with a PostgreSQL store it names a new schema"
                 " (letters, digits and _)")
        return USAGE
    try:
        report = _replay(ctx, schema)
    except FileExistsError:
        ctx.warn(f"schema {schema} exists; replay into a new one")
        return USAGE
    _show_replay(ctx, report)
    if schema is not None and not ctx.json:
        ctx.say(f"fresh read models kept in the schema {schema}")
    return OK if report.identical else PROBLEM


def _parse_expect(text: str | None) -> tuple[int, str] | None:
    if not text:
        return None
    position, _, digest = text.partition(":")
    if not position.isdigit() or len(digest) != 64:
        raise ValueError("--expect takes POSITION:HASH, as `stats` or the dashboard show it")
    return int(position), digest.lower()


def _has_chain(read: Any) -> bool:
    """Whether the read models have a hash chain table (a SQLite file always has one)."""
    if dialect_of(read) == "sqlite":
        return True  # as before: a file without the table is reported as a database error
    try:
        read.execute("SELECT 1 FROM hash_chain LIMIT 1").fetchone()
    except missing_table(read):
        return False
    return True


def _chain(ctx: Context, expect: tuple[int, str] | None) -> ChainReport:
    settings = ctx.settings
    log = open_records(settings)  # the SQLite file, or the PostgreSQL table
    try:
        read = open_read_models(settings)  # the SQLite file, or PostgreSQL's schema
        if read is not None and not _has_chain(read):
            read.close()
            read = None
        if read is None:
            raise FileNotFoundError("no read models yet: start the server or run 'rebuild'")
        try:
            bar = ctx.progress("checking the hash chain", head_of(log))
            report = verify_chain(log, read, expect, bar.update)
            bar.finish(report.checked + report.unhashed)
        finally:
            read.close()
    finally:
        log.close()
    return report


def verify_command(ctx: Context, args: argparse.Namespace) -> int:
    try:
        expect = _parse_expect(args.expect)
    except ValueError as error:
        ctx.warn(str(error))
        return USAGE
    chain = _chain(ctx, expect)
    if ctx.json:
        ctx.emit({"check": "hash_chain", "ok": chain.ok, "first_bad_position": chain.first_bad,
                  "problem": chain.problem, "checked": chain.checked,
                  "chain_head": {"position": chain.chain_head, "hash": chain.head_hash},
                  "log_head": chain.log_head, "unhashed": chain.unhashed,
                  "expected_ok": chain.expected_ok})
    else:
        ctx.say(chain.describe())
    ok = chain.ok
    if not args.chain_only:
        report = _replay(ctx, None)
        _show_replay(ctx, report)
        ok = ok and report.identical
    if not ctx.json:
        ctx.say("OK" if ok else "PROBLEMS FOUND")
    return OK if ok else PROBLEM


def rebuild_command(ctx: Context, args: argparse.Namespace) -> int:
    chat = open_application(ctx.settings)
    try:
        runner = ProjectionRunner(chat, _live(ctx))
        names = args.projection or runner.names
        unknown = sorted(set(names) - set(runner.names))
        if unknown:
            ctx.warn(f"no projection {', '.join(unknown)}; there are {', '.join(runner.names)}")
            runner.stop()
            return USAGE
        for name in names:
            runner.request_rebuild(name)
        if not runner.is_leader:  # PostgreSQL: a running server applies the log
            runner.stop()
            return _rebuild_requested(ctx, names)
        bar = ctx.progress("rebuilding (one transaction)", chat.head())
        position = runner.catch_up()
        seconds = bar.finish(position)
        runner.stop()
    finally:
        chat.close()
    if ctx.json:
        ctx.emit({"rebuilt": names, "position": position, "seconds": round(seconds, 3),
                  "not_rebuilt": ["vectors"]})
    else:
        ctx.say(f"{', '.join(names)} rebuilt to position {position} in {seconds:.1f} s")
        ctx.say(VECTORS_NOT_REBUILT)
    return OK


def _rebuild_requested(ctx: Context, names: list[str]) -> int:
    """Another process leads the projections (a server on the same PostgreSQL database):
    it was asked to rebuild them, and does so in the background while it serves."""
    if ctx.json:
        ctx.emit({"requested": names, "rebuilt_by": "the running server",
                  "not_rebuilt": ["vectors"]})
    else:
        ctx.say(f"a running server applies the log: it was asked to rebuild"
                f" {', '.join(names)} (in the background; see the admin dashboard)")
        ctx.say(VECTORS_NOT_REBUILT)
    return OK


VECTORS_NOT_REBUILT = (
    "Not rebuilt: the vector index (semantic search, DATA_DIR/chroma with its position in"
    " DATA_DIR/vectors.sqlite). It follows the log on its own and catches up in the"
    " background while the server runs.")


def register(commands: Any) -> None:
    verify = add_command(
        commands, "verify", verify_command, "check the hash chain and the read models",
        "Check the log has not been altered and the read models follow from it.\n\n"
        "1. The hash chain: recomputed from the event store file and compared with the one\n"
        "   kept as each event was recorded; names the first edited, deleted, inserted or\n"
        "   moved position.\n"
        "2. The read models: rebuilt from the log into a temporary file and compared with\n"
        "   the live ones, table by table (skip with --chain-only).\n\n"
        "Safe while the server runs. Exit status 0: all good, 1: problems found.")
    verify.add_argument("--chain-only", action="store_true",
                        help="check the hash chain only (fast), not the read models")
    verify.add_argument("--expect", metavar="POSITION:HASH",
                        help="a chain head written down earlier (from the dashboard or"
                             " `stats`): the log must still hash to it")
    replay_parser = add_command(
        commands, "replay", replay_command, "rebuild the read models afresh and diff them",
        "Rebuild every read model from the log into a fresh file and compare it with the\n"
        "live read models, row by row. Safe while the server runs (the live ones are\n"
        "copied at one moment and the log is replayed up to the same position).\n"
        "Exit status 0: identical, 1: differences (listed).")
    replay_parser.add_argument("--into", type=Path, metavar="DIR",
                               help="keep the fresh read models in DIR (default: discard);"
                                    " with a PostgreSQL store, in the new schema DIR")
    rebuild = add_command(
        commands, "rebuild", rebuild_command, "rebuild the live read models (server stopped)",
        "Rebuild read models in place from position 0, in one transaction. Run it with the\n"
        "server stopped (a running server rebuilds through the admin API instead; with a\n"
        "PostgreSQL store, a running server is asked to rebuild them).\n\n"
        "The vector index (semantic search) is not one of them and is not rebuilt: it\n"
        "follows the log on its own position (DATA_DIR/vectors.sqlite) and catches up in\n"
        "the background while the server runs.")
    rebuild.add_argument("projection", nargs="*",
                         help="which projections (default: all)")
