"""Refresh the catalogs from the sources: extract messages.pot, then merge it into each
language's messages.po (new messages arrive untranslated; tests/test_i18n.py fails until
they are translated). Run from the repository root: .venv/bin/python locales/update.py"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
POT = ROOT / "locales" / "messages.pot"
LANGUAGES = ("en", "ko")


def extract() -> None:
    pybabel = Path(sys.executable).parent / "pybabel"
    subprocess.run([str(pybabel), "extract", "-F", "locales/babel.cfg", "-k", "N_",
                    "--no-location", "--sort-output", "--omit-header", "-o", str(POT),
                    "app", "templates"], cwd=ROOT, check=True, capture_output=True)


def merge(language: str) -> None:
    path = ROOT / "locales" / language / "LC_MESSAGES" / "messages.po"
    with POT.open("rb") as source:
        template = read_po(source)
    if path.is_file():
        with path.open("rb") as source:
            catalog = read_po(source, locale=language)
        catalog.update(template, no_fuzzy_matching=True)
    else:
        catalog = read_po(POT.open("rb"), locale=language)
    if language == "en":  # the msgids are English: its catalog says them as they are
        for message in catalog:
            if message.id and not message.string:
                message.string = message.id
    with path.open("wb") as target:
        write_po(target, catalog, omit_header=False, no_location=True, sort_output=True,
                 ignore_obsolete=True, width=100)


if __name__ == "__main__":
    extract()
    for code in LANGUAGES:
        merge(code)
