"""The laws table: one row per evaluation (or per run), columns N, D, loss and optionally C, H, arch, run, step.

Any CSV works: columns can be renamed (`columns={"N": "Model Size"}`) or derived by a small arithmetic
expression over other columns (`derive={"D": "{Training FLOP} / (6 * {N})"}`); expressions allow numbers,
`{column}` references, + - * / ** and parentheses, and never execute code.
"""

from __future__ import annotations

import ast
import csv
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from symscale.errors import SymscaleError

NUMERIC: tuple[str, ...] = ("N", "D", "C", "H", "loss", "step", "run_fraction", "width", "seed")
NUMERIC += ("loss_energy", "loss_force", "energy_mae_mev_per_atom", "force_mae_mev_per_A")
TEXT = ("arch", "run", "mode", "options")
# deprecated column names, still read: laws.csv and metrics.jsonl before 0.x called the run fraction "fraction"
ALIASES = {"fraction": "run_fraction"}


@dataclass(frozen=True)
class LawsTable:
    """Columns as arrays: numeric ones float64, text ones str. `source` names where the table came from."""

    columns: dict[str, np.ndarray]
    source: str = "table"

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __contains__(self, name: str) -> bool:
        return ALIASES.get(name, name) in self.columns

    def __getitem__(self, name: str) -> np.ndarray:
        name = ALIASES.get(name, name)
        if name not in self.columns:
            raise SymscaleError(f"{self.source}: no column {name!r}; columns: {', '.join(self.columns)}")
        return self.columns[name]

    def select(self, mask: np.ndarray) -> LawsTable:
        """The rows where `mask` is true (or the rows an index array names)."""
        return LawsTable({k: v[mask] for k, v in self.columns.items()}, self.source)

    def groups(self, by: str | None) -> list[tuple[str, LawsTable]]:
        """(name, sub-table) per distinct value of column `by` (one group "all" when `by` is None)."""
        if not by:
            return [("all", self)]
        values = self[by]
        return [(str(g), self.select(values == g)) for g in sorted(set(values.tolist()))]

    def require(self, *names: str) -> None:
        """Every named column must exist and hold finite positive numbers."""
        for name in names:
            values = self[name]
            bad = ~np.isfinite(values)
            if bad.any():
                raise SymscaleError(f"{self.source}: column {name} has NaN or inf in row {int(np.argmax(bad))}")
            if (values <= 0).any():
                row = int(np.argmax(values <= 0))
                raise SymscaleError(f"{self.source}: column {name} must be positive, got {values[row]!r} in row {row}")


def from_arrays(source: str = "arrays", **columns) -> LawsTable:
    """A table from keyword arrays, e.g. `from_arrays(N=n, D=d, loss=l, run=ids)`."""
    out = {}
    for name, values in columns.items():
        if values is None:
            continue
        arr = np.asarray(values)
        name = ALIASES.get(name, name)
        out[name] = arr.astype(str) if name in TEXT or arr.dtype.kind in "USO" else arr.astype(float)
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise SymscaleError(f"{source}: columns have different lengths {sorted(lengths)}")
    return LawsTable(out, source)


def read_table(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    derive: Mapping[str, str] | None = None,
) -> LawsTable:
    """Read a CSV laws table. `columns` maps a symscale name to the file's column; `derive` computes columns."""
    path = Path(path)
    if not path.is_file():
        raise SymscaleError(f"table {str(path)!r} does not exist")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise SymscaleError(
            f"table {str(path)!r} is not a CSV text file ({err}); expected a comma-separated table"
        ) from None
    if not rows:
        raise SymscaleError(f"table {str(path)!r} has no rows")
    for k, row in enumerate(rows):
        if None in row or None in row.values():  # more or fewer fields than the header
            fields = sum(v is not None for key, v in row.items() if key is not None) + len(row.get(None) or [])
            raise SymscaleError(
                f"table {str(path)!r}: row {k + 2} has {fields} fields, expected {len(reader.fieldnames or [])} "
                "(as in the header)"
            )
    raw = {name: [row.get(name, "") for row in rows] for name in rows[0]}
    table: dict[str, np.ndarray] = {}
    for name, values in raw.items():
        if ALIASES.get(name) in raw:
            continue  # a deprecated column beside its new name: the new one counts
        table[ALIASES.get(name, name)] = _column(values, path, name)
    for ours, theirs in (columns or {}).items():
        if theirs not in table:
            raise SymscaleError(
                f"table {str(path)!r}: no column {theirs!r} to map to {ours}; columns: {', '.join(raw)}"
            )
        table[ours] = table[theirs]
    for ours, expression in (derive or {}).items():
        table[ours] = evaluate_expression(expression, table, str(path))
    for name in NUMERIC:
        if name in table and table[name].dtype.kind in "US":
            raise SymscaleError(f"table {str(path)!r}: column {name} is not numeric")
    for name in TEXT:
        if name in table:
            table[name] = table[name].astype(str)
    return LawsTable(table, str(path))


def _column(values: list[str], path: Path, name: str) -> np.ndarray:
    try:
        return np.array([float(v) if v.strip() != "" else np.nan for v in values])
    except ValueError:
        return np.array(values, dtype=str)


_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


def evaluate_expression(expression: str, table: Mapping[str, np.ndarray], source: str = "table") -> np.ndarray:
    """Evaluate `expression` ({column} references, numbers, + - * / **, parentheses) over table columns."""
    names: dict[str, str] = {}

    def placeholder(match: re.Match) -> str:
        key = f"_c{len(names)}"
        names[key] = match.group(1)
        return key

    text = re.sub(r"\{([^}]+)\}", placeholder, expression)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise SymscaleError.invalid("expression", expression, "numbers, {column}, + - * / ** and parentheses") from None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in names:
            column = names[node.id]
            if column not in table:
                raise SymscaleError(f"{source}: expression {expression!r} names unknown column {column!r}")
            return np.asarray(table[column], dtype=float)
        if isinstance(node, ast.Name) and node.id in table:
            return np.asarray(table[node.id], dtype=float)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise SymscaleError.invalid("expression", expression, "numbers, {column}, + - * / ** and parentheses")

    try:
        with np.errstate(over="raise", invalid="ignore", divide="ignore"):
            return np.asarray(ev(tree), dtype=float)
    except (OverflowError, FloatingPointError):
        raise SymscaleError.invalid("expression", expression, "values within floating-point range") from None
