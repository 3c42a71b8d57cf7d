"""One result per check, printed as one line: level, check name, what was found, and what to do when it is not ok."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Result:
    """The outcome of one check."""

    level: Level
    name: str
    message: str
    fix: str = ""

    def line(self) -> str:
        """`ok    name: message` or `FAIL  name: message -> fix`."""
        text = f"{self.level:<5} {self.name}: {self.message}"
        return f"{text} -> {self.fix}" if self.fix and self.level != "ok" else text


def ok(name: str, message: str) -> Result:
    """A passing check."""
    return Result("ok", name, message)


def warn(name: str, message: str, fix: str = "") -> Result:
    """Works, but deserves attention."""
    return Result("warn", name, message, fix)


def fail(name: str, message: str, fix: str) -> Result:
    """Broken: the agent will not work as configured."""
    return Result("FAIL", name, message, fix)
