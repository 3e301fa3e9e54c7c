"""User-facing errors: one line that names the key, file or column at fault and what was expected."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable
from typing import NoReturn


class HfxError(Exception):
    """An error in the user's config or data. The CLI prints it as one line and exits non-zero."""


class UsageError(HfxError):
    """Refused before anything ran: the command line, the config or an input it names. The CLI exits with 2
    (a failure while running exits with 1)."""


class Stopped(HfxError):
    """Training stopped early by SIGTERM / SIGINT after writing a checkpoint: the run can be resumed. The CLI exits
    with 75 (sysexits' EX_TEMPFAIL: try again later)."""

    exit_code = 75


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_of(what: str, name: str, valid: Iterable[str]) -> HfxError:
    valid = sorted(valid)
    return HfxError(f"unknown {what} '{name}'{did_you_mean(name, valid)}; valid: {', '.join(valid)}")


def full_error() -> bool:
    """HYDRA_FULL_ERROR=1: the user asked for tracebacks instead of one-line errors."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_with(message: str, code: int = 1) -> NoReturn:
    """The error policy: one `error:` line on stderr and a non-zero exit."""
    sys.stderr.write(f"error: {message}\n")
    sys.exit(code)
