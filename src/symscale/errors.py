"""The project's exception for user mistakes.

A `SymscaleError` says what was wrong, what was received and what was expected. The CLI prints it as one
line and exits non-zero; it never shows a traceback for it. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SymscaleError(ValueError):
    """A user-facing error: bad input, a missing file, an invalid configuration."""

    @classmethod
    def invalid(cls, what: str, got: object, expected: str) -> SymscaleError:
        """`invalid('width', 0, 'an integer >= 1')` -> "invalid width: got 0, expected an integer >= 1"."""
        return cls(f"invalid {what}: got {got!r}, expected {expected}")
