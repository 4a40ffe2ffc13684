"""The blocks a report document is made of: headings, paragraphs, code, and the tables and figures of
`symscale.report.tables` and `symscale.report.figures`. `render.py` lays them out as HTML and markdown; each
section module (`tuning.py`, `verdicts.py`, ...) returns a list of them."""

from __future__ import annotations

from dataclasses import dataclass

from symscale.report import figures, tables


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Paragraph | Code | tables.Table | figures.Figure
