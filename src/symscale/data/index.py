"""The dataset index: one pass over every row, stored once, read by every later open, run and worker.

For each file of a dataset the index records, per row, what a study needs without reading the row again:

    charge, spin        int16; spin is the multiplicity (1 = singlet); a missing charge is 0, a missing spin 1
    n_atoms             int32
    invalid             uint8 code of why the structure cannot be trained on (0: valid; `REASONS[code]`)
    mol, has_mol        int64 molecule id where the row records one (`data["mol"]`; strings are hashed), else
                        has_mol False
    composition         element counts in CSR form: comp_ptr [n + 1] int64, comp_z [k] uint8, comp_count [k] int32

Filters (`neutral_only`, `skip_invalid`), whole-molecule splits and composition statistics read these arrays
(see `DatasetIndex`), never the rows. The index of a file is cached under `cache_root()/index/<key>/` (the
same user cache as the built-in dataset: `$SYMSCALE_CACHE` or `~/.cache/symscale`; `$SYMSCALE_INDEX_CACHE`
moves only the indexes) as one `.npy` per field, opened memory-mapped. The key hashes the file's resolved path,
size, modification time and first 64 KiB (LMDB rewrites its meta pages there on every write), so a changed
file gets a new index; entries of files that no longer exist are pruned when an index is built. A missing
index is built into a unique temporary folder and renamed into place under a file lock: when several
processes open the same new dataset, one builds and the others wait, then read it.

The pass over an `.aselmdb` file reads each row's zlib-compressed JSON (the layout ASE's `encode` writes, as
ase-db-backends stores it: `{"numbers": {"__ndarray__": [shape, dtype, flat]}, "positions": ..., "data": {...},
"energy": ..., "forces": ...}`) without building `Structure`s or ase `Atoms`: each row is inflated (ISA-L where
`isal` is installed, about 1.9x faster than zlib) and decoded whole by orjson, which refuses NaN, Infinity and
numbers that overflow a double, so a row it decodes has only finite numbers; the positions of a chunk of rows
become one array, checked together with numpy (the same checks and reasons as `readers.check_structure`), and
the forces are only counted. Rows orjson refuses, rows in another layout and corrupt rows take a slower path
with the same result (`_add_lmdb_row`). Chunks of rows (of one file or of several shards) are read by parallel
processes when there are many rows. ASE `.db` and extxyz files are indexed through their structures (slower;
they are small in practice). Inflating and decoding are the floor of the pass (about 12 and 8 microseconds of a
3.6 KB row here, with ISA-L and orjson), which is why the pass is parallel.

Departure from a plain cache: when the cache folder cannot be written, the index is built in memory, used,
and a warning says that every open will pay the pass again.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from symscale.errors import SymscaleError

try:  # orjson decodes JSON ~2x faster; optional
    import orjson

    _json_loads = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _json_loads = json.loads

try:  # ISA-L's inflate: the same bytes as zlib's, about 1.9x faster here (benchmarks/bench_data.py); optional
    from isal import isal_zlib as _isal

    def inflate(raw: bytes) -> bytes:
        """The decompressed bytes of a zlib stream (one `.aselmdb` row); zlib.error when it is corrupt."""
        try:
            return _isal.decompress(raw)
        except _isal.error as err:
            raise zlib.error(str(err)) from None

except ImportError:  # pragma: no cover - depends on the environment
    inflate = zlib.decompress

log = logging.getLogger(__name__)

INDEX_VERSION = 1
MIN_DISTANCE = 0.1  # Angstrom: closer than this, two atoms are "on top of each other" (a row is invalid)
REASONS = (
    "",
    "no atoms",
    "positions of shape",
    "unknown element",
    "NaN or inf in positions",
    "missing energy",
    "missing forces",
    "energy is not finite",
    "forces of shape",
    "NaN or inf in forces",
    "atoms on top of each other",
    "corrupt row",
)
_CODE = {r: k for k, r in enumerate(REASONS)}
FIELDS = ("charge", "spin", "n_atoms", "invalid", "mol", "has_mol", "comp_ptr", "comp_z", "comp_count")
CHUNK_ROWS = 20_000  # rows per task of the parallel pass
PARALLEL_MIN_ROWS = 50_000  # fewer rows than this are indexed in this process (spawning costs seconds)
_HEADER_BYTES = 65536


# ----------------------------------------------------------------------------------------------------------
# one file's index


@dataclass(frozen=True)
class FileIndex:
    """The per-row arrays of one file (memory-mapped when read from the cache)."""

    path: Path
    arrays: dict[str, np.ndarray]
    cached: bool  # read from or written to the cache (a worker can reopen it cheaply)

    def __len__(self) -> int:
        return len(self.arrays["charge"])

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)


def file_key(path: Path, labels: str = "energy|forces") -> str:
    """The cache key of a file: hash of resolved path, size, mtime (ns), the first 64 KiB, INDEX_VERSION and the
    label keys the validity was judged with (`energy|forces` unless a dataset names others)."""
    st = path.stat()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{INDEX_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|".encode())
    if labels != "energy|forces":  # keys of indexes built before label keys existed stay valid
        h.update(labels.encode())
    with open(path, "rb") as f:
        h.update(f.read(_HEADER_BYTES))
    return h.hexdigest()


def indexed_dataset(dataset: Any, indices: np.ndarray | None = None) -> Any:
    """The reader's dataset (one with a `DatasetIndex`: `.index` and `.raw_rows`) that `indices` of `dataset`
    refer to: `dataset` itself, or the training part of a ConcatDataset with separate validation data when
    every index falls in it; None for other datasets (packed, lists), which are read row by row."""
    if (
        hasattr(dataset, "n_first")
        and indices is not None
        and (len(indices) == 0 or int(indices.max()) < dataset.n_first)
    ):
        dataset = dataset.first
    return dataset if hasattr(dataset, "raw_rows") and hasattr(dataset, "index") else None


def index_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where indexes are cached: `cache_dir/index`, else `$SYMSCALE_INDEX_CACHE`, else `cache_root()/index` (the
    built-in dataset's cache: `$SYMSCALE_CACHE` or `~/.cache/symscale`)."""
    if cache_dir is not None:
        return Path(cache_dir) / "index"
    if os.environ.get("SYMSCALE_INDEX_CACHE"):
        return Path(os.environ["SYMSCALE_INDEX_CACHE"])
    # builtin.cache_root's rule, not imported from there: that module loads the xTB generator (and torch)
    root = os.environ.get("SYMSCALE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "symscale") / "index"


def prune(folder: Path) -> int:
    """Remove cached indexes whose file no longer exists (each entry records its file); returns the count."""
    removed = 0
    for entry in folder.glob("*/meta.json"):
        try:
            gone = not Path(json.loads(entry.read_text())["file"]).exists()
        except (OSError, ValueError, KeyError):
            continue
        if gone:
            shutil.rmtree(entry.parent, ignore_errors=True)
            removed += 1
    return removed


def _load(folder: Path, path: Path) -> FileIndex | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {f: np.load(folder / f"{f}.npy", mmap_mode="r") for f in FIELDS}
    except (OSError, ValueError):
        return None
    if meta.get("version") != INDEX_VERSION or meta.get("reasons") != list(REASONS):
        return None
    return FileIndex(path, arrays, cached=True)


def _save(folder: Path, index: FileIndex, seconds: float) -> None:
    """Write into a unique temporary folder beside `folder`, then rename it into place (atomic)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for f in FIELDS:
            np.save(tmp / f"{f}.npy", np.ascontiguousarray(index.arrays[f]))
        meta = {
            "version": INDEX_VERSION, "file": str(index.path.resolve()), "rows": len(index), "reasons": list(REASONS),
            "build_seconds": round(seconds, 3),
        }  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "meta.json").exists():
            raise


# ----------------------------------------------------------------------------------------------------------
# the pass over the rows


def _empty_arrays(n: int) -> dict[str, np.ndarray]:
    return {
        "charge": np.zeros(n, np.int16), "spin": np.ones(n, np.int16), "n_atoms": np.zeros(n, np.int32),
        "invalid": np.zeros(n, np.uint8), "mol": np.zeros(n, np.int64), "has_mol": np.zeros(n, bool),
    }  # fmt: skip


def _mol_id(value) -> tuple[int, bool]:
    if value is None or isinstance(value, bool):
        return 0, False
    if isinstance(value, int | np.integer):
        return int(value), True
    if isinstance(value, float) and value.is_integer():
        return int(value), True
    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True), True


def _flat(value) -> list | None:
    """A JSON array field as a flat list: ASE's {"__ndarray__": [shape, dtype, flat]} or a nested list."""
    if value is None:
        return None
    if isinstance(value, dict) and "__ndarray__" in value:
        return value["__ndarray__"][2]
    return np.asarray(value, dtype=np.float64).reshape(-1).tolist()


def _scalar(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, dict) and "__ndarray__" in value:
        return float(value["__ndarray__"][2][0])
    return float(value)


class _Chunk:
    """Fields of a run of rows, gathered and checked together (`finish`).

    The positions of every row are appended to one flat list of floats (`pos`, turned into one array and
    checked in `finish`: finite, atoms not on top of each other); forces are only counted and checked row by row
    where they are read (`bad_forces`)."""

    def __init__(self, n: int):
        self.a = _empty_arrays(n)
        self.numbers: list = []
        self.pos: list[float] = []
        self.energy = np.full(n, np.nan)
        self.has_energy = np.zeros(n, bool)
        self.has_forces = np.zeros(n, bool)
        self.forces_shape_ok = np.zeros(n, bool)
        self.bad_forces = np.zeros(n, bool)
        self.in_arrays = np.zeros(n, bool)  # numbers/positions appended for this row

    def add_meta(self, k: int, data: dict) -> None:
        charge, spin = data.get("charge"), data.get("spin")
        self.a["charge"][k] = int(charge) if charge is not None else 0
        self.a["spin"][k] = int(spin) if spin is not None else 1
        self.a["mol"][k], self.a["has_mol"][k] = _mol_id(data.get("mol"))

    def _atoms(self, k: int, numbers: list | None, n_positions: int | None, data) -> bool:
        """Record the row's metadata and atom count; False when it has no usable positions (coded invalid)."""
        self.add_meta(k, data or {})
        n = len(numbers) if numbers is not None else 0
        self.a["n_atoms"][k] = n
        if n == 0:
            self.a["invalid"][k] = _CODE["no atoms"]
            return False
        if n_positions is None or n_positions != 3 * n:
            self.a["invalid"][k] = _CODE["positions of shape"]
            return False
        self.numbers.extend(numbers)
        self.in_arrays[k] = True
        return True

    def add(self, k: int, numbers: list | None, positions: list | None, energy, forces: list | None, data) -> None:
        """A row from decoded fields (flat lists)."""
        if not self._atoms(k, numbers, None if positions is None else len(positions), data):
            return
        self.pos.extend(positions)  # type: ignore[arg-type]
        self._labels(k, energy, None if forces is None else len(forces))
        self.bad_forces[k] = forces is not None and not np.isfinite(np.asarray(forces, dtype=np.float64)).all()

    def add_text(self, k: int, numbers: list, pos_text: bytes | None, energy, frc_text: bytes | None, data) -> None:
        """A row whose positions and forces are still the JSON text of their flat lists (the fast path)."""
        if not self._atoms(k, numbers, None if pos_text is None else _count(pos_text), data):
            return
        self.pos.extend(json.loads(b"[" + pos_text + b"]"))  # type: ignore[operator]  # NaN/Infinity literals too
        self._labels(k, energy, None if frc_text is None else _count(frc_text))
        self.bad_forces[k] = frc_text is not None and _non_finite(frc_text)

    def _labels(self, k: int, energy, n_forces: int | None) -> None:
        self.has_energy[k] = energy is not None
        self.energy[k] = energy if energy is not None else np.nan
        self.has_forces[k] = n_forces is not None
        self.forces_shape_ok[k] = n_forces == 3 * self.a["n_atoms"][k]

    def place(self, rows: list, charge: list, spin: list, mol: list, n_atoms: list, energy: list,
              n_forces: list) -> None:  # fmt: skip
        """Rows read by the fast loop (`_add_lmdb_rows`): their fields in bulk (numbers and positions were
        appended by the loop; their forces are finite, as orjson decoded them, so `bad_forces` stays False)."""
        if not rows:
            return
        k, a = np.asarray(rows, dtype=np.int64), self.a
        a["charge"][k] = [0 if c is None else int(c) for c in charge]
        a["spin"][k] = [1 if m is None else int(m) for m in spin]
        ids = [_mol_id(m) for m in mol]
        a["mol"][k] = [i for i, _ in ids]
        a["has_mol"][k] = [h for _, h in ids]
        a["n_atoms"][k] = n_atoms
        self.in_arrays[k] = True
        e = np.array([np.nan if x is None else x for x in energy], dtype=np.float64)
        self.energy[k] = e
        self.has_energy[k] = [x is not None for x in energy]
        self.has_forces[k] = True
        self.forces_shape_ok[k] = np.asarray(n_forces) == 3 * np.asarray(n_atoms)

    def corrupt(self, k: int) -> None:
        self.a["invalid"][k] = _CODE["corrupt row"]

    def finish(self) -> dict[str, np.ndarray]:
        a = self.a
        rows = np.flatnonzero(self.in_arrays)
        sizes = a["n_atoms"][rows].astype(np.int64)
        # fromiter: 1.5x quicker than asarray on a long list of Python numbers (no type inference pass)
        z = np.fromiter(self.numbers, dtype=np.int64, count=len(self.numbers))  # [atoms]
        pos = np.fromiter(self.pos, dtype=np.float64, count=len(self.pos)).reshape(-1, 3)  # [atoms, 3]
        owner = np.repeat(np.arange(len(rows)), sizes)  # [atoms] position of the row in `rows`

        def any_atom(bad: np.ndarray) -> np.ndarray:
            return np.bincount(owner[bad], minlength=len(rows)) > 0

        bad_z = any_atom((z < 1) | (z > 118))
        finite = np.isfinite(pos).all(axis=1)  # [atoms]
        bad_pos = any_atom(~finite)
        bad_frc = self.bad_forces[rows]
        close = _any_close(pos, sizes, _min_distance_limit(), finite)
        energy = self.energy[rows]
        # the order of readers.check_structure: the first failing check names the reason
        checks = [
            (bad_z, "unknown element"), (bad_pos, "NaN or inf in positions"),
            (~self.has_energy[rows], "missing energy"), (~self.has_forces[rows], "missing forces"),
            (self.has_energy[rows] & ~np.isfinite(energy), "energy is not finite"),
            (~self.forces_shape_ok[rows], "forces of shape"), (bad_frc, "NaN or inf in forces"),
            (close, "atoms on top of each other"),
        ]  # fmt: skip
        code = np.zeros(len(rows), np.uint8)
        for flag, reason in reversed(checks):
            code[flag] = _CODE[reason]
        a["invalid"][rows] = code
        a.update(_composition(len(a["charge"]), rows, owner, z))
        return a


def _min_distance_limit() -> float:
    return MIN_DISTANCE


def separated(pos: np.ndarray, sizes: np.ndarray, gap: float) -> np.ndarray:
    """[atoms, 3] the positions of several structures (atoms of each contiguous, `sizes` [structures]) moved
    along x so that atoms of different structures are more than `gap` apart (non-finite coordinates as 0): one
    k-d tree over all of them then finds only pairs within a structure."""
    p = np.where(np.isfinite(pos), pos, 0.0)
    owner = np.repeat(np.arange(len(sizes)), sizes)  # [atoms]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    nonempty = sizes > 0
    low = np.zeros((len(sizes), 3))
    high = np.zeros((len(sizes), 3))
    if len(p):
        low[nonempty] = np.minimum.reduceat(p, starts[nonempty])
        high[nonempty] = np.maximum.reduceat(p, starts[nonempty])
    shift = np.concatenate([[0.0], np.cumsum(high[:, 0] - low[:, 0] + 10.0 * gap + 1.0)[:-1]])  # [structures]
    q = p - low[owner]
    q[:, 0] += shift[owner]
    return q


_SWEEP_AXIS = np.array([0.62, 0.47, 0.63]) / np.linalg.norm([0.62, 0.47, 0.63])  # no molecule's natural axis


def _any_close(pos: np.ndarray, sizes: np.ndarray, limit: float, finite: np.ndarray | None = None) -> np.ndarray:
    """[rows] whether a structure has two atoms closer than `limit` (Angstrom), for the atoms of many rows at
    once (`pos` [atoms, 3], each row's atoms contiguous, `sizes` [rows]), by sweep and prune: two atoms closer
    than `limit` are closer than `limit` along any axis, so the atoms are sorted by their projection on one axis
    (each row's projections moved past the previous row's, so rows never mix) and only the neighbours k places
    apart in that order whose projections are still within `limit` are measured, k = 1, 2, ... while any is
    (the pairs k apart within `limit` are among those k - 1 apart). The work is a sort plus the pairs within
    `limit` along the axis (an axis off every coordinate axis, so planar molecules laid in a coordinate plane
    are not all within it). Rows with a non-finite coordinate (`finite` [atoms], when the caller has it) are
    left out (they are invalid for that reason already). Measured 1.9x faster than one k-d tree over the rows
    (2.5 against 4.7 microseconds a row of 27 atoms); the stable sort (radix/timsort on keys already in runs of
    one row) and measuring only the candidate pairs' atoms took it from 4.0 to 3.1 on the AMD machine."""
    out = np.zeros(len(sizes), bool)
    owner = np.repeat(np.arange(len(sizes)), sizes)  # [atoms]
    if finite is None:
        finite = np.isfinite(pos).all(axis=1)
    if not finite.all():
        owner = owner[finite]
        pos = pos[finite]
    if len(pos) < 2:
        return out
    proj = pos @ _SWEEP_AXIS  # [atoms]
    counts = np.bincount(owner, minlength=len(sizes))  # [rows] atoms kept (owner is sorted)
    nonempty = counts > 0
    starts = (np.cumsum(counts) - counts)[nonempty]
    low, high = np.zeros(len(sizes)), np.zeros(len(sizes))
    low[nonempty] = np.minimum.reduceat(proj, starts)
    high[nonempty] = np.maximum.reduceat(proj, starts)
    base = np.concatenate([[0.0], np.cumsum(high - low + 4.0 * limit + 1.0)[:-1]]) - low  # [rows]
    key = proj + base[owner]  # [atoms] rows apart by more than 4 limit
    order = np.argsort(key, kind="stable")  # the keys come in runs of one row each: a stable sort is 3x quicker
    key = key[order]
    window = limit + 1e-9 + 8 * np.spacing(key[-1])  # a candidate test only: wider than rounding in `key`
    i = np.flatnonzero(np.diff(key) < window)  # [candidates] places in `order` whose next atom is within reach
    k = 1
    while len(i):
        a, b = order[i], order[i + k]  # atoms k places apart along the axis
        d2 = ((pos[b] - pos[a]) ** 2).sum(axis=1)
        out[owner[a[d2 < limit * limit]]] = True
        k += 1
        i = i[: np.searchsorted(i, len(key) - k)]  # i is sorted: those with an atom k places on
        i = i[key[i + k] - key[i] < window]
    return out


def _composition(n_rows: int, rows: np.ndarray, owner: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """CSR element counts of the rows whose atoms are in `z` (other rows: empty)."""
    zc = np.clip(z, 0, 255)
    key = np.sort(rows[owner] * 256 + zc, kind="stable")  # [atoms] (row, element); in runs of one row: stable
    # is 4x quicker than np.unique's sort
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.zeros(0, np.int64)
    pairs, counts = key[first], np.diff(np.append(first, len(key)))
    ptr = np.zeros(n_rows + 1, np.int64)
    np.add.at(ptr, pairs // 256 + 1, 1)
    return {"comp_ptr": np.cumsum(ptr), "comp_z": (pairs % 256).astype(np.uint8), "comp_count": counts.astype(np.int32)}


def _labels(source) -> str:
    """The label keys a source reads (`energy_key|forces_key`), part of its index's cache key."""
    return f"{getattr(source, 'energy_key', 'energy')}|{getattr(source, 'forces_key', 'forces')}"


def _index_rows(source, start: int, stop: int) -> dict[str, np.ndarray]:
    """The index arrays of rows start..stop of one source."""
    chunk = _Chunk(stop - start)
    if hasattr(source, "raw_rows"):  # LMDB: the fields read from each row's text, no structures built
        forces_key = f'"{getattr(source, "forces_key", "forces")}"'.encode()
        energy_key = getattr(source, "energy_key", "energy")
        collecting = gc.isenabled()
        gc.disable()  # the loop makes and frees a few containers per row, no cycles: collections are 4% of it
        try:
            _add_lmdb_rows(chunk, source.raw_rows(start, stop), energy_key, forces_key)
        finally:
            if collecting:
                gc.enable()
        return chunk.finish()
    for k, i in enumerate(range(start, stop)):
        try:
            s = source.read(i)
        except SymscaleError:
            chunk.corrupt(k)
            continue
        chunk.add(k, s.numbers.tolist(), s.positions.reshape(-1).tolist(), s.energy,
                  None if s.forces is None else s.forces.reshape(-1).tolist(),
                  {**s.info, "charge": s.charge, "spin": s.spin})  # fmt: skip
    return chunk.finish()


def _flat_span(text: bytes, key: bytes, start: int) -> tuple[int, int]:
    """Where the flat list of ASE's array field `key` ({"__ndarray__": [shape, dtype, flat]}, with or without the
    spaces of Python's json) lies in `text`, from `start` on: text[a:b] is the list without its brackets. A flat
    list of numbers holds no bracket, so its end is the first `]` after its start. ValueError when not found."""
    i = text.index(key, start) + len(key)
    nd = text.index(b'"__ndarray__"', i)
    if nd - i > 4:  # not this field's value (`key` was a string elsewhere)
        raise ValueError(key)
    dtype_open = text.index(b'"', text.index(b"]", nd))  # past the shape
    a = text.index(b"[", text.index(b'"', dtype_open + 1)) + 1
    return a, text.index(b"]", a)


def _cut(text: bytes, key: bytes) -> tuple[bytes, bytes | None]:
    """`text` with the flat list of ASE's array field `key` emptied, and that list's text (None when absent)."""
    try:
        a, b = _flat_span(text, key, 0)
    except ValueError:
        return text, None
    return text[:a] + text[b:], text[a:b]


def _holes_at_top(d: dict, cuts: list[tuple[str, bytes | None]]) -> bool:
    """Whether every emptied flat list is the row's own field (not one nested in `data`)."""
    for key, flat in cuts:
        value = d.get(key)
        if flat is None:
            if isinstance(value, dict) and "__ndarray__" in value:
                return False
        elif not (isinstance(value, dict) and "__ndarray__" in value and value["__ndarray__"][2] == []):
            return False
    return True


def _add_lmdb_rows(chunk: _Chunk, raws: list[bytes | None], energy_key: str, forces_key: bytes) -> None:
    """`.aselmdb` rows into `chunk`, the rows in ASE's layout (top-level numbers, positions and forces as ndarray
    fields) by one lean loop: each row inflated and decoded whole by orjson (which refuses NaN, Infinity and
    numbers that overflow a double, so every number it returns is finite), its positions appended to the chunk's
    flat list, its forces only counted. Every other row (other layouts, NaN literals, missing fields, corrupt
    rows, or no orjson) goes through `_add_lmdb_row`: same result, slower."""
    forces_name = forces_key[1:-1].decode()
    strict = _json_loads is not json.loads  # orjson: a decoded row holds only finite numbers
    fast_k, charge, spin, mol, n_atoms, energy, frc_count = [], [], [], [], [], [], []
    # bound once: this loop runs once per row of the dataset, and every look-up it saves is ~5% of a row
    loads, unzip, number = _json_loads, inflate, (float, int)
    add_k, add_charge, add_spin, add_mol, add_n = fast_k.append, charge.append, spin.append, mol.append, n_atoms.append
    add_energy, add_frc, add_numbers, add_pos = energy.append, frc_count.append, chunk.numbers.extend, chunk.pos.extend
    for k, raw in enumerate(raws):
        try:
            d = loads(unzip(raw))  # type: ignore[arg-type]
            numbers = d["numbers"]["__ndarray__"][2]
            pos = d["positions"]["__ndarray__"][2]
            frc = d[forces_name]["__ndarray__"][2]
            n = len(numbers)
            ok = strict and n > 0 and len(pos) == 3 * n
        except (TypeError, ValueError, KeyError, IndexError, zlib.error):
            ok = False
        if not ok:
            _add_lmdb_row(chunk, k, raw, energy_key, forces_key)
            continue
        e = d.get(energy_key)
        data = d.get("data") or {}
        add_k(k)
        add_charge(data.get("charge"))
        add_spin(data.get("spin"))
        add_mol(data.get("mol"))
        add_n(n)
        add_energy(e if e is None or isinstance(e, number) else _scalar(e))
        add_frc(len(frc))
        add_numbers(numbers)
        add_pos(pos)
    chunk.place(fast_k, charge, spin, mol, n_atoms, energy, frc_count)


def _add_lmdb_row(chunk: _Chunk, k: int, raw: bytes | None, energy_key: str, forces_key: bytes) -> None:
    """One `.aselmdb` row into `chunk`, by the path that takes NaN/Infinity literals (Python's json) and any
    layout: its positions and forces cut out of the JSON text as text (forces only searched for NaN/Infinity),
    the small rest decoded. A row whose arrays are not where ASE writes them is decoded whole."""
    try:
        text = inflate(raw)  # type: ignore[arg-type]
        rest, pos = _cut(text, b'"positions"')
        rest, frc = _cut(rest, forces_key)
        d = _loads(rest)
    except (TypeError, zlib.error, ValueError):  # a missing (None) or corrupt row
        chunk.corrupt(k)
        return
    numbers = _flat(d.get("numbers"))
    if not _holes_at_top(d, [("positions", pos), (forces_key.decode()[1:-1], frc)]):
        full = _loads(text)
        chunk.add(k, numbers, _flat(full.get("positions")), _scalar(_label(full, energy_key)),
                  _flat(_label(full, forces_key.decode()[1:-1])), full.get("data"))  # fmt: skip
        return
    forces_text = frc if frc is not None else _label_text(d, forces_key.decode()[1:-1])
    chunk.add_text(k, numbers, pos, _scalar(_label(d, energy_key)), forces_text, d.get("data"))


def _label_text(d: dict, key: str) -> bytes | None:
    """A label found elsewhere than at the row's top level (key-value pairs, `data`) as flat-list text."""
    value = _label(d, key)
    return None if value is None else json.dumps(_flat(value)).encode()[1:-1]


def _label(row: dict, key: str):
    """The value of label `key` in an ASE database row (as a dict): calculator results at the top level, then
    key-value pairs, then `data`; None when absent (the rule of every reader: `readers` imports it)."""
    for place in (row, row.get("key_value_pairs") or {}, row.get("data") or {}):
        if key in place and place[key] is not None:
            return place[key]
    return None


def _count(flat: bytes) -> int:
    """Numbers in the text of a flat JSON list (without its brackets)."""
    return flat.count(b",") + 1 if flat.strip() else 0


def _loads(text: bytes):
    try:
        return _json_loads(text)
    except ValueError:  # orjson rejects the NaN/Infinity literals that Python's json (and ASE) write
        return json.loads(text)


def _non_finite(flat: bytes) -> bool:
    """Whether the text of a flat list of numbers holds NaN, Infinity or -Infinity (the only numbers with an N
    or an I in them; an exponent is e or E) or a number no double holds (`1e999`: Python's json, the readers',
    makes it inf). Only rows orjson refused come here, so the exact parse of the second case costs little."""
    if b"N" in flat or b"I" in flat:
        return True
    if b"e" not in flat and b"E" not in flat:
        return False
    return not np.isfinite(np.asarray(json.loads(b"[" + flat + b"]"), dtype=np.float64)).all()


def _task(source, start: int, stop: int) -> dict[str, np.ndarray]:
    return _index_rows(source, start, stop)


def _join(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {f: np.concatenate([p[f] for p in parts]) for f in FIELDS if f not in ("comp_ptr",)}
    ptrs, offset = [np.zeros(1, np.int64)], 0
    for p in parts:
        ptrs.append(p["comp_ptr"][1:] + offset)
        offset += int(p["comp_ptr"][-1])
    out["comp_ptr"] = np.concatenate(ptrs)
    return out


def _build(sources: list, workers: int | None) -> list[dict[str, np.ndarray]]:
    """Index arrays of every source, chunks of rows read in parallel processes when there are many."""
    tasks = [(k, a, min(a + CHUNK_ROWS, len(s))) for k, s in enumerate(sources) for a in range(0, len(s), CHUNK_ROWS)]
    total = sum(len(s) for s in sources)
    workers = workers if workers is not None else len(os.sched_getaffinity(0))
    parts: dict[int, list] = {k: [] for k in range(len(sources))}
    import multiprocessing as mp

    serial = workers <= 1 or total < PARALLEL_MIN_ROWS or len(tasks) < 2
    if serial or mp.current_process().daemon:  # a daemonic process (a local study worker) may not have children
        for k, a, b in tasks:
            parts[k].append(_index_rows(sources[k], a, b))
    else:
        # spawned, not forked: py-lmdb refuses to open a file in a forked child whose parent has it open. A
        # spawned child imports the readers without torch, but also re-imports the parent's main module.
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=mp.get_context("spawn")) as pool:
            futures = [(k, pool.submit(_task, sources[k], a, b)) for k, a, b in tasks]
            for k, fut in futures:
                parts[k].append(fut.result())
    return [_join(parts[k]) if parts[k] else _join([_Chunk(0).finish()]) for k in range(len(sources))]


# ----------------------------------------------------------------------------------------------------------
# the dataset's index


def file_indexes(
    paths: Sequence[Path], sources: Sequence, *, cache_dir: str | os.PathLike | None = None, workers: int | None = None
) -> list[FileIndex]:
    """The index of every file, from the cache or built (once, under a lock) and cached."""
    folder = index_folder(cache_dir)
    keys = [file_key(p, _labels(s)) for p, s in zip(paths, sources)]
    out: list[FileIndex | None] = [_load(folder / k, p) for k, p in zip(keys, paths)]
    missing = [i for i, x in enumerate(out) if x is None]
    if not missing:
        return out  # type: ignore[return-value]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".build.lock", "w")
    except OSError as err:
        log.warning("cannot write the index cache %s (%s): indexing in memory, every open pays the pass", folder, err)
        for i, arrays in zip(missing, _build([sources[i] for i in missing], workers)):
            out[i] = FileIndex(paths[i], arrays, cached=False)
        return out  # type: ignore[return-value]
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building an index: wait for it, then read
        out = [x or _load(folder / keys[i], paths[i]) for i, x in enumerate(out)]
        missing = [i for i, x in enumerate(out) if x is None]
        if missing:
            prune(folder)
            t = time.perf_counter()
            rows = sum(len(sources[i]) for i in missing)
            log.info("indexing %d rows of %d file(s) (once; cached in %s)", rows, len(missing), folder)
            built = _build([sources[i] for i in missing], workers)
            seconds = time.perf_counter() - t
            for i, arrays in zip(missing, built):
                _save(folder / keys[i], FileIndex(paths[i], arrays, cached=False), seconds)
                out[i] = _load(folder / keys[i], paths[i])
            log.info("indexed %d rows in %.1f s (%.0f rows/s)", rows, seconds, rows / max(seconds, 1e-9))
    return out  # type: ignore[return-value]


class DatasetIndex:
    """The index of a dataset of several files, in the dataset's global row order (file after file).

    Rows here are *raw* rows (before any filter); `Dataset.raw_rows(indices)` maps dataset indices to them.
    """

    def __init__(self, files: list[FileIndex]):
        self.files = files
        sizes = np.array([len(f) for f in files], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])  # [n_files + 1]

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def cached(self) -> bool:
        return all(f.cached for f in self.files)

    def field(self, name: str) -> np.ndarray:
        """One per-row field over all rows (a memory map for a single cached file, else a copy)."""
        if len(self.files) == 1:
            return self.files[0].arrays[name]
        return np.concatenate([f.arrays[name] for f in self.files])

    def selection(self, *, neutral_only: bool, skip_invalid: bool) -> tuple[np.ndarray, dict[str, int]]:
        """Raw rows kept by the filters (sorted), and the count of invalid rows left out by reason."""
        keep_parts, reasons = [], np.zeros(len(REASONS), np.int64)
        for f, start in zip(self.files, self.starts[:-1]):
            keep = np.ones(len(f), bool)
            if skip_invalid:
                code = np.asarray(f.invalid)
                reasons += np.bincount(code, minlength=len(REASONS))
                keep &= code == 0
            if neutral_only:
                keep &= (np.asarray(f.charge) == 0) & (np.asarray(f.spin) == 1)
            keep_parts.append(np.flatnonzero(keep) + start)
        selection = np.concatenate(keep_parts) if keep_parts else np.zeros(0, np.int64)
        return selection.astype(np.int64), {REASONS[k]: int(c) for k, c in enumerate(reasons) if k and c}

    def invalid_reason(self, row: int) -> str | None:
        if len(self.files) == 1:  # read per structure by `Dataset.__getitem__`: no search for one file
            code = int(self.files[0].arrays["invalid"][row])
            return REASONS[code] if code else None
        f = int(np.searchsorted(self.starts, row, side="right")) - 1
        code = int(self.files[f].invalid[row - self.starts[f]])
        return REASONS[code] if code else None

    def molecule_groups(self, rows: np.ndarray) -> np.ndarray | None:
        """[len(rows)] group number per row (molecule id with the file folded in), None when a row has none."""
        rows = np.asarray(rows, dtype=np.int64)
        file_of = np.searchsorted(self.starts, rows, side="right") - 1  # [rows]
        groups = np.empty(len(rows), np.int64)
        offset = 0
        for k, f in enumerate(self.files):
            at = np.flatnonzero(file_of == k)
            local = rows[at] - self.starts[k]
            if not np.asarray(f.has_mol)[local].all():
                return None
            ids, inverse = np.unique(np.asarray(f.mol)[local], return_inverse=True)
            groups[at] = inverse.reshape(-1) + offset
            offset += len(ids)
        return groups

    def _entries(self, chunk: int = 1_000_000):
        """The composition entries of every file in chunks of rows: (z [k] uint8, count [k] int32, raw row [k])."""
        for f, start in zip(self.files, self.starts[:-1]):
            ptr = np.asarray(f.comp_ptr)
            for a in range(0, len(f), chunk):
                b = min(a + chunk, len(f))
                lo, hi = int(ptr[a]), int(ptr[b])
                owner = np.repeat(np.arange(a, b, dtype=np.int64) + int(start), np.diff(ptr[a : b + 1]))  # [k]
                yield np.asarray(f.comp_z[lo:hi]), np.asarray(f.comp_count[lo:hi]), owner

    def element_counts(self, rows: np.ndarray) -> tuple[dict[int, int], dict[int, int]]:
        """Atoms of each element, and structures containing it, over `rows` (distinct raw rows), from the
        composition arrays: one pass of whole-array operations over the entries (no per-row work)."""
        member = np.zeros(len(self), bool)
        member[np.asarray(rows, dtype=np.int64)] = True
        atoms, structures = np.zeros(256, np.int64), np.zeros(256, np.int64)
        for z, count, owner in self._entries():
            keep = member[owner]
            atoms += np.bincount(z[keep], weights=count[keep], minlength=256).astype(np.int64)
            structures += np.bincount(z[keep], minlength=256)
        present = np.flatnonzero(atoms)
        return {int(z): int(atoms[z]) for z in present}, {int(z): int(structures[z]) for z in present}

    def elements(self) -> set[int]:
        """Every element of any row of the files (from the composition arrays, not the rows)."""
        counts = sum(np.bincount(np.asarray(f.comp_z), minlength=256) for f in self.files)
        return {int(z) for z in np.flatnonzero(counts)}

    def rows_containing(self, rows: np.ndarray, elements, per_element: int = 8) -> dict[int, np.ndarray]:
        """For each element, the positions in `rows` (distinct raw rows) of the first `per_element` rows (in raw
        order) that contain it (none when no row of `rows` does). Whole-array operations over the composition
        entries, chunk by chunk, stopping once every element has its rows: cheap at any size."""
        rows = np.asarray(rows, dtype=np.int64)
        position = np.full(len(self), -1, np.int32 if len(rows) < 2**31 else np.int64)  # [raw rows]
        position[rows] = np.arange(len(rows))
        wanted = sorted({int(z) for z in elements})
        found: dict[int, list[np.ndarray]] = {e: [] for e in wanted}
        short = {e: per_element for e in wanted}  # rows still to find per element
        for z, _, owner in self._entries():
            if not short:
                break
            lut = np.zeros(256, bool)
            lut[list(short)] = True
            p = position[owner]
            hit = (p >= 0) & lut[z]
            zh, ph = z[hit], p[hit]
            order = np.argsort(zh, kind="stable")  # entries by element, raw order kept within each
            zs, ps = zh[order], ph[order]
            for e in list(short):
                lo, hi = np.searchsorted(zs, e, "left"), np.searchsorted(zs, e, "right")
                take = ps[lo : min(hi, lo + short[e])]
                found[e].append(take.astype(np.int64))
                short[e] -= len(take)
                if short[e] == 0:
                    del short[e]
        return {e: np.concatenate(v) if v else np.zeros(0, np.int64) for e, v in found.items()}

    def mean_atoms(self, rows: np.ndarray) -> float:
        n = self.field("n_atoms")
        return float(np.asarray(n)[rows].mean()) if len(rows) else math.nan


def dataset_index(
    paths: Sequence[Path], sources: Sequence, *, cache_dir: str | os.PathLike | None = None, workers: int | None = None
) -> DatasetIndex:
    """The `DatasetIndex` of a dataset's files (cached; see the module docstring)."""
    return DatasetIndex(file_indexes(list(paths), list(sources), cache_dir=cache_dir, workers=workers))
