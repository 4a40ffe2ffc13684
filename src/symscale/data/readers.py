"""Streaming, random-access readers for labelled structures: OMol25's `.aselmdb`, ASE `.db`, extxyz.

`open_dataset(paths)` turns one file, several files or a folder of shards into one `Dataset`: a global index
maps to (file, row), and `dataset[i]` reads only that row. Nothing reads the whole file into memory. The
one pass over all rows is the dataset index (`symscale.data.index`: per-row charge, spin, atom count,
composition, molecule id, validity), built once per file and cached; the `neutral_only` / `skip_invalid`
selection, whole-molecule splits and composition statistics read it (the selection is one int array).

Formats
- `.aselmdb` (fairchem/OMol25, ASE DB through ase-db-backends): rows are read directly from LMDB (zlib JSON,
  decoded without building `ase.Atoms`), which is several times faster than `row.toatoms()`. The row's `data`
  (charge, spin, source, ...) is merged into `Structure.info` as fairchem does; charge and spin become fields.
- `.db` (ASE sqlite), through `ase.db`.
- `.xyz` / `.extxyz`: frame byte offsets are indexed once at open (a truncated last frame is detected there),
  then a frame is read by seeking to it. `charge` and `spin` come from the comment line when present.

Label keys: energies and forces are read from `energy` / `forces` unless `energy_key` / `forces_key` name
others (MACE's `REF_energy` / `REF_forces`, say). A key is looked up where each format keeps it: extxyz in the
comment line (energy) or the per-atom columns (forces); ASE databases in the calculator results, the row's
key-value pairs, then its `data`.

Periodic structures (any `pbc` true) are refused with the file and row: the models and the neighbour search
are for molecules, and dropping the cell silently would train on the wrong graph. A cell with `pbc` all
false (a molecule in a box) is read as a molecule.

Conventions: energies eV, forces eV/Angstrom, positions Angstrom, spin = multiplicity (1 = singlet).
A missing charge is read as 0 and a missing spin as 1.

Validation on access: a structure with no energy or no forces, a NaN/inf label or position, an atomic number
outside 1..118 (or an unknown symbol), or two atoms closer than `MIN_DISTANCE` (0.1 Angstrom: atoms on top
of each other; real molecules never come closer than about 0.5 Angstrom) raises a `SymscaleError` naming the
file and the structure index. With `skip_invalid=True` the index's validity codes (the same checks, made once
when the index is built) leave invalid structures out, counted in `dataset.skipped` (with reasons in
`dataset.skip_reasons`).

Writing (`write_structures`) is atomic: a unique temporary file beside the target, fsync, rename; a failed
write leaves an existing file untouched and nothing behind. LMDB writers allocate their lock file first
(`_reserve_lock_file`), so a full disk is an ENOSPC error, not a SIGBUS.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import sqlite3
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from symscale.data.index import MIN_DISTANCE, dataset_index, inflate
from symscale.data.index import _json_loads as _json_loads  # one row decoder (orjson where installed)
from symscale.data.index import _label as _label  # one rule for where a row keeps its labels
from symscale.data.index import _scalar as _scalar  # one reader of ASE's scalar fields
from symscale.errors import SymscaleError

if TYPE_CHECKING:  # imported where structures are built: the index pass's worker processes never load torch
    from symscale.data.graph import Structure

log = logging.getLogger(__name__)

MAX_Z = 118
LMDB_EXTENSIONS = (".aselmdb", ".lmdb")
XYZ_EXTENSIONS = (".xyz", ".extxyz")
DB_EXTENSIONS = (".db",)
ALL_EXTENSIONS = LMDB_EXTENSIONS + XYZ_EXTENSIONS + DB_EXTENSIONS
_RESERVED_KEYS = (b"nextid", b"deleted_ids", b"metadata")
# LMDB maps this much address space for a writer; the file grows only as rows are written (no MDB_WRITEMAP),
# so the map size reserves no disk. Free space is checked by the writers that know their size (generate).
LMDB_MAP_SIZE = 2**41
LMDB_LOCK_BYTES = 64 * 1024  # lock file: header + 126 reader slots of 64 bytes, rounded up generously


# ----------------------------------------------------------------------------------------------------------
# row decoding and validation


def _array(value, dtype) -> np.ndarray | None:
    """A JSON field as an array: ASE's {"__ndarray__": [shape, dtype, flat]} or a plain (nested) list."""
    if value is None:
        return None
    if isinstance(value, dict) and "__ndarray__" in value:
        shape, _, flat = value["__ndarray__"]
        return np.asarray(flat, dtype=dtype).reshape(shape)
    return np.asarray(value, dtype=dtype)


def _structure_from_fields(numbers, positions, energy, forces, info: dict) -> Structure:
    from symscale.data.graph import Structure

    info = dict(info)
    charge = info.pop("charge", 0)
    spin = info.pop("spin", 1)
    return Structure(
        numbers=np.asarray(numbers, dtype=np.int64).reshape(-1),
        positions=np.asarray(positions, dtype=np.float64).reshape(-1, 3),
        energy=None if energy is None else float(energy),
        forces=None if forces is None else np.asarray(forces, dtype=np.float64).reshape(-1, 3),
        charge=int(0 if charge is None else charge),
        spin=int(1 if spin is None else spin),
        info=info,
    )


DEFAULT_ENERGY_KEY = "energy"
DEFAULT_FORCES_KEY = "forces"


def _refuse_periodic(path: Path, i: int, pbc) -> None:
    """Raise when a row has a periodic cell (symscale's models and graphs are for molecules)."""
    pbc = np.asarray(pbc if pbc is not None else False, dtype=bool).reshape(-1)
    if pbc.any():
        raise SymscaleError(
            f"{path}: structure {i}: periodic cell (pbc={pbc.astype(int).tolist()}) is not supported; "
            "expected a molecule (pbc false)"
        )


def check_structure(s: Structure) -> str | None:
    """The reason `s` is unusable for training, or None when it is fine."""
    n = len(s.numbers)
    if n == 0:
        return "no atoms"
    if s.positions.shape != (n, 3):
        return f"positions of shape {s.positions.shape} for {n} atoms"
    if s.numbers.min() < 1 or s.numbers.max() > MAX_Z:
        return f"unknown element (atomic number {int(s.numbers.min() if s.numbers.min() < 1 else s.numbers.max())})"
    if not np.isfinite(s.positions).all():
        return "NaN or inf in positions"
    if s.energy is None:
        return "missing energy"
    if s.forces is None:
        return "missing forces"
    if not math.isfinite(s.energy):
        return f"energy is {s.energy}"
    if s.forces.shape != (n, 3):
        return f"forces of shape {s.forces.shape} for {n} atoms"
    if not np.isfinite(s.forces).all():
        return "NaN or inf in forces"
    d_min = _min_distance(s.positions)
    if d_min < MIN_DISTANCE:
        return f"atoms on top of each other (distance {d_min:.3g} A < {MIN_DISTANCE} A)"
    return None


def _min_distance(pos: np.ndarray) -> float:
    n = len(pos)
    if n < 2:
        return math.inf
    if n <= 256:
        d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)  # [n, n]
        d2[np.diag_indices(n)] = np.inf
        return float(np.sqrt(d2.min()))
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pos).query(pos, k=2)
    return float(d[:, 1].min())


# ----------------------------------------------------------------------------------------------------------
# one file per source


class _LmdbSource:
    """Rows of one `.aselmdb` file, read straight from LMDB (the layout ase-db-backends writes)."""

    def __init__(self, path: Path, energy_key: str = DEFAULT_ENERGY_KEY, forces_key: str = DEFAULT_FORCES_KEY):
        self.path = path
        self._resolved = str(Path(path).resolve())
        self.energy_key, self.forces_key = energy_key, forces_key
        self._env = None
        txn = self._txn()
        nextid = _decode(txn.get(b"nextid")) if txn.get(b"nextid") is not None else 1
        raw_deleted = txn.get(b"deleted_ids")
        deleted = set(_decode(raw_deleted)) if raw_deleted is not None else set()
        self.n_ids = int(nextid) - 1
        self.ids: np.ndarray | None = None  # row ids where some were deleted; else row i has id i + 1
        if deleted:
            ids = np.arange(1, int(nextid), dtype=np.int64)
            self.ids = ids[~np.isin(ids, np.fromiter(deleted, dtype=np.int64))]

    def _txn(self):
        key = (self._resolved, os.getpid())  # per process: LMDB environments are not shared across a fork
        env = _open_envs.get(key)
        if env is None or env is not self._env:  # (re)open per process, and after a writer closed it
            self._env = env if env is not None else _lmdb_env(self.path, readonly=True)
            self._txn_cache = self._env.begin(write=False)
        return self._txn_cache

    def __len__(self) -> int:
        return self.n_ids if self.ids is None else len(self.ids)

    def row(self, i: int) -> dict:
        row_id = int(i) + 1 if self.ids is None else int(self.ids[i])
        raw = self._txn().get(str(row_id).encode("ascii"))
        if raw is None:
            raise SymscaleError(f"cannot read {self.path}: row id {row_id} (structure {i}) is missing")
        try:
            return _decode(raw)
        except (zlib.error, ValueError) as err:
            raise SymscaleError(f"{self.path}: structure {i}: corrupt row ({err})") from None

    def read(self, i: int) -> Structure:
        dct = self.row(i)
        _refuse_periodic(self.path, i, _array(dct.get("pbc"), bool))
        return _structure_from_fields(
            _array(dct.get("numbers"), np.int64),
            _array(dct.get("positions"), np.float64),
            _scalar(_label(dct, self.energy_key)),
            _array(_label(dct, self.forces_key), np.float64),
            dct.get("data") or {},
        )

    def raw_rows(self, start: int, stop: int) -> list[bytes | None]:
        """The stored (zlib-compressed JSON) rows start..stop, None for a missing one: the index pass decodes only
        the fields it needs from these. One `getmulti` call instead of a look-up per row."""
        ids = range(start + 1, stop + 1) if self.ids is None else self.ids[start:stop].tolist()
        keys = [str(row_id).encode("ascii") for row_id in ids]
        with self._txn().cursor() as cursor:
            found = dict(cursor.getmulti(keys))
        return [found.get(key) for key in keys]

    def metadata(self, i: int) -> dict:
        """The row's `data` (charge, spin and what else the writer stored), without building the structure."""
        return dict(self.row(i).get("data") or {})

    def numbers(self, i: int) -> np.ndarray:
        """The row's atomic numbers, without building the structure or reading its labels."""
        return _array(self.row(i).get("numbers"), np.int64)

    def __getstate__(self):
        return {
            "path": self.path,
            "_resolved": self._resolved,
            "ids": self.ids,
            "n_ids": self.n_ids,
            "energy_key": self.energy_key,
            "forces_key": self.forces_key,
        }

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._env = None


_open_envs: dict[tuple[str, int], object] = {}


def _env_key(path: Path) -> tuple[str, int]:
    return str(Path(path).resolve()), os.getpid()


def _lmdb_env(path: Path, readonly: bool):
    """The process's LMDB environment of `path` (LMDB allows one per file and process); a writer replaces
    a read-only one."""
    import lmdb

    key = _env_key(path)
    env = _open_envs.get(key)
    if env is not None and (readonly or not env.flags()["readonly"]):
        return env
    if env is not None:
        env.close()
    try:
        if readonly:
            env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False, meminit=False)
        else:
            _reserve_lock_file(path)
            env = lmdb.open(str(path), map_size=LMDB_MAP_SIZE, subdir=False, meminit=False, map_async=False)
    except lmdb.Error as err:
        raise SymscaleError(f"cannot read {path}: {err}") from None
    _open_envs[key] = env
    return env


def _reserve_lock_file(path: Path) -> None:
    """Allocate the disk blocks of LMDB's lock file `PATH-lock` before LMDB maps it.

    LMDB sizes its lock file with ftruncate (a sparse file) and writes its reader table through a shared
    memory map; on a full disk the first write to that map finds no block and the process dies of SIGBUS,
    with no message. Allocated here, the same shortage is an ordinary ENOSPC OSError (a user error at the
    CLI). LMDB keeps a lock file that is larger than it needs.
    """
    lock = Path(f"{path}-lock")
    created = not lock.exists()
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < LMDB_LOCK_BYTES:
            os.posix_fallocate(fd, 0, LMDB_LOCK_BYTES)
    except OSError:
        if created:
            lock.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _close_env(path: Path) -> None:
    env = _open_envs.pop(_env_key(path), None)
    if env is not None:
        env.close()


def _decode(raw: bytes):
    text = inflate(raw)
    try:
        return _json_loads(text)
    except ValueError:  # orjson rejects the NaN/Infinity literals that Python's json (and ASE) write
        return json.loads(text)


class _SqliteSource:
    """Rows of one ASE `.db` (sqlite) file, through `ase.db`."""

    def __init__(self, path: Path, energy_key: str = DEFAULT_ENERGY_KEY, forces_key: str = DEFAULT_FORCES_KEY):
        self.path = path
        self.energy_key, self.forces_key = energy_key, forces_key
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
                self.ids = np.array([r[0] for r in con.execute("SELECT id FROM systems ORDER BY id")], np.int64)
        except sqlite3.Error as err:
            raise SymscaleError(f"cannot read {path}: not an ASE sqlite database ({err})") from None
        self._db = None

    def __len__(self) -> int:
        return len(self.ids)

    def _row(self, i: int):
        if self._db is None:
            import ase.db

            self._db = ase.db.connect(str(self.path), type="db", use_lock_file=False)
        return self._db._get_row(int(self.ids[i]))

    def read(self, i: int) -> Structure:
        row = self._row(i)
        _refuse_periodic(self.path, i, row.get("pbc"))
        fields = {"key_value_pairs": row.key_value_pairs, "data": row.get("data") or {}}
        fields.update({k: row.get(k) for k in ("energy", "forces", self.energy_key, self.forces_key)})
        energy, forces = _label(fields, self.energy_key), _label(fields, self.forces_key)
        return _structure_from_fields(row.numbers, row.positions, energy, forces, dict(row.get("data") or {}))

    def metadata(self, i: int) -> dict:
        return dict(self._row(i).get("data") or {})

    def __getstate__(self):
        return {**self.__dict__, "_db": None}


class _XyzSource:
    """Frames of one extxyz file; frame byte offsets are indexed once, then frames are read by seeking."""

    def __init__(self, path: Path, energy_key: str = DEFAULT_ENERGY_KEY, forces_key: str = DEFAULT_FORCES_KEY):
        self.path = path
        self.energy_key, self.forces_key = energy_key, forces_key
        self.offsets, self.truncated = _index_xyz(path)  # offsets: [n_frames + 1] bytes

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _text(self, i: int) -> str:
        with open(self.path, "rb") as f:
            f.seek(int(self.offsets[i]))
            return f.read(int(self.offsets[i + 1] - self.offsets[i])).decode("utf-8", errors="replace")

    def read(self, i: int) -> Structure:
        from ase.io.extxyz import read_xyz

        try:
            atoms = next(read_xyz(io.StringIO(self._text(i)), 0))
        except (KeyError, ValueError, IndexError) as err:
            raise SymscaleError(f"{self.path}: structure {i}: cannot parse extxyz frame ({err})") from None
        _refuse_periodic(self.path, i, atoms.pbc)
        results = atoms.calc.results if atoms.calc is not None else {}
        energy = results.get(self.energy_key)
        forces = results.get(self.forces_key)
        if forces is None and self.forces_key in atoms.arrays:
            forces = atoms.arrays[self.forces_key]
        info = {k: v.item() if isinstance(v, np.generic) else v for k, v in atoms.info.items()}
        info = {k: v for k, v in info.items() if isinstance(v, int | float | str | bool)}
        if energy is None and self.energy_key in info:
            energy = info.pop(self.energy_key)
        try:
            return _structure_from_fields(atoms.numbers, atoms.positions, energy, forces, info)
        except (TypeError, ValueError) as err:  # e.g. `energy=abc` or `charge=x` on the comment line
            raise SymscaleError(
                f"{self.path}: structure {i}: unreadable label ({err}); "
                "expected numbers for energy, forces, charge and spin"
            ) from None

    def metadata(self, i: int) -> dict:
        s = self.read(i)  # an extxyz frame has no cheaper way to its comment line's keys
        return {**s.info, "charge": s.charge, "spin": s.spin}


def _index_xyz(path: Path) -> tuple[np.ndarray, str | None]:
    """Byte offsets of the frames of an xyz file, and a message when the last frame is truncated."""
    offsets = [0]
    truncated = None
    with open(path, "rb") as f:
        frame = 0
        while True:
            head = f.readline()
            if not head:
                break
            if not head.strip():  # trailing blank lines
                if not f.read().strip():
                    break
                raise SymscaleError(f"{path}: structure {frame}: blank line where the atom count was expected")
            try:
                n = int(head.split()[0])
            except ValueError:
                raise SymscaleError(
                    f"{path}: structure {frame}: expected an atom count, got {head[:40].decode(errors='replace')!r}"
                ) from None
            got = sum(1 for _ in zip(range(n + 1), iter(f.readline, b"")))
            if got < n + 1:
                truncated = f"{path}: structure {frame}: truncated file ({max(got - 1, 0)} of {n} atom lines)"
                break
            offsets.append(f.tell())
            frame += 1
    return np.asarray(offsets, dtype=np.int64), truncated


def _open_source(path: Path, energy_key: str = DEFAULT_ENERGY_KEY, forces_key: str = DEFAULT_FORCES_KEY):
    if not path.exists():
        raise SymscaleError(f"cannot read {path}: no such file or folder")
    suffix = path.suffix.lower()
    try:
        if suffix in LMDB_EXTENSIONS:
            return _LmdbSource(path, energy_key, forces_key)
        if suffix in XYZ_EXTENSIONS:
            return _XyzSource(path, energy_key, forces_key)
        if suffix in DB_EXTENSIONS:
            return _SqliteSource(path, energy_key, forces_key)
    except OSError as err:
        raise SymscaleError(f"cannot read {path}: {err.strerror or err}") from None
    except (zlib.error, ValueError) as err:
        if isinstance(err, SymscaleError):
            raise
        raise SymscaleError(f"cannot read {path}: corrupt file ({err})") from None
    raise SymscaleError.invalid("dataset file", str(path), f"a file ending in {', '.join(ALL_EXTENSIONS)}")


def expand_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files of a dataset: a file, several files, or folders (their dataset files, sorted by name)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(q for q in p.iterdir() if q.suffix.lower() in ALL_EXTENSIONS and q.is_file())
            if not files:
                raise SymscaleError(f"empty dataset: folder {p} holds no {', '.join(ALL_EXTENSIONS)} files")
            out.extend(files)
        else:
            out.append(p)
    if not out:
        raise SymscaleError("empty dataset: no files given")
    return out


# ----------------------------------------------------------------------------------------------------------
# the dataset


class Dataset:
    """One dataset over several files: `len`, `dataset[i] -> Structure` (random access, streaming).

    `neutral_only` keeps charge 0 and spin 1 (OMol25's neutral subset); `skip_invalid` leaves out invalid
    structures (counted in `skipped`). Both are read from the dataset's index (`symscale.data.index`: built
    once per file and cached); the selection is an int array of raw rows. `energy_key` / `forces_key` name the
    labels (see the module docstring).
    """

    def __init__(
        self,
        paths,
        *,
        neutral_only: bool = False,
        skip_invalid: bool = False,
        energy_key: str = DEFAULT_ENERGY_KEY,
        forces_key: str = DEFAULT_FORCES_KEY,
    ):
        self.files = expand_paths(paths)
        self.energy_key, self.forces_key = energy_key, forces_key
        self.neutral_only = neutral_only
        self.skip_invalid = skip_invalid
        self.skipped = 0
        self.skip_reasons: Counter[str] = Counter()
        self._sources = [_open_source(p, energy_key, forces_key) for p in self.files]
        self._truncations(skip_invalid)
        sizes = np.array([len(s) for s in self._sources], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])  # [n_files + 1]
        self._selection: np.ndarray | None = None
        self._index = None
        if neutral_only or skip_invalid:
            self._select()
        if len(self) == 0:
            what = "neutral (charge 0, spin 1) " if neutral_only else "valid " if skip_invalid else ""
            raise SymscaleError(f"empty dataset: no {what}structures in {_names(self.files)}")

    @property
    def index(self):
        """The dataset's `DatasetIndex` (per-row charge, spin, atoms, composition, molecule, validity), read
        from the cache or built there on first use."""
        if self._index is None:
            self._index = dataset_index(self.files, self._sources)
        return self._index

    def raw_rows(self, indices=None) -> np.ndarray:
        """Rows of the index (over all rows of all files) of dataset indices `indices` (default: all)."""
        if indices is None:
            return self._selection if self._selection is not None else np.arange(int(self._starts[-1]))
        idx = np.asarray(indices, dtype=np.int64)
        return self._selection[idx] if self._selection is not None else idx

    def _truncations(self, skip_invalid: bool) -> None:
        for src in self._sources:
            message = getattr(src, "truncated", None)
            if message is None:
                continue
            if not skip_invalid:
                raise SymscaleError(message)
            log.warning("skipping %s", message)
            self.skipped += 1
            self.skip_reasons["truncated file"] += 1

    def _select(self) -> None:
        selection, reasons = self.index.selection(neutral_only=self.neutral_only, skip_invalid=self.skip_invalid)
        self._selection = selection
        for reason, count in reasons.items():
            self.skipped += count
            self.skip_reasons[reason] += count
        if reasons:
            log.info("skipping %d invalid structures of %s: %s", sum(reasons.values()), _names(self.files), reasons)

    def __getstate__(self) -> dict:
        """Pickled for loader workers: a cached index is reopened there (memory-mapped) instead of copying the
        selection; the LMDB environments are opened in the worker on first read."""
        state = dict(self.__dict__)
        if self._index is not None and self._index.cached:
            state["_selection"] = None if self._selection is None else "from index"
            state["_index"] = "cached"
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if isinstance(self._index, str):  # a cached index: memory-mapped again here (milliseconds)
            self._index = None
            self._index = self.index
        if isinstance(self._selection, str):
            self._selection, _ = self.index.selection(neutral_only=self.neutral_only, skip_invalid=self.skip_invalid)

    def _locate_raw(self, g: int):
        f = int(np.searchsorted(self._starts, g, side="right")) - 1
        return self._sources[f], g - int(self._starts[f])

    def locate(self, i: int) -> tuple[Path, int]:
        """(file, row index in that file) of structure `i`."""
        src, row = self._locate_raw(self._global(i))
        return src.path, row

    def _global(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"structure index {i} out of range for a dataset of {n}")
        i = i % n
        return int(self._selection[i]) if self._selection is not None else i

    def __len__(self) -> int:
        return len(self._selection) if self._selection is not None else int(self._starts[-1])

    def metadata(self, i: int) -> dict:
        """Structure `i`'s stored metadata (row `data`: charge, spin, e.g. the built-in set's `mol`), read
        without building or checking the structure."""
        src, row = self._locate_raw(self._global(int(i)))
        return src.metadata(row)

    def numbers(self, i: int) -> np.ndarray:
        """Structure `i`'s atomic numbers [n_atoms], read without its labels where the format allows (the
        composition census of `symscale.data.stats`); not checked like `dataset[i]`."""
        src, row = self._locate_raw(self._global(int(i)))
        read = getattr(src, "numbers", None)
        return np.asarray(read(row) if read is not None else src.read(row).numbers, dtype=np.int64)

    def __getitem__(self, i: int) -> Structure:
        g = self._global(int(i))
        src, row = self._locate_raw(g)
        s = src.read(row)
        if self._index is not None and self._index.invalid_reason(g) is None:
            return s  # the index's pass made the same checks (`check_structure`) on this row when it was built
        reason = check_structure(s)
        if reason is not None:
            raise SymscaleError(f"{src.path}: structure {row}: {reason}{self._key_hint(reason)}")
        return s

    def _key_hint(self, reason: str) -> str:
        """For a missing label, which key was looked for and how to name another."""
        for label, key in (("energy", self.energy_key), ("forces", self.forces_key)):
            if reason == f"missing {label}":
                return f" (looked for key {key!r}; name another with {label}_key, e.g. --{label}-key REF_{label})"
        return ""

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def description(self) -> str:
        parts = [f"{len(self)} structures from {_names(self.files)}"]
        if self.neutral_only:
            parts.append("neutral only")
        if self.skipped:
            parts.append(f"{self.skipped} invalid skipped")
        return ", ".join(parts)


def _names(files: Sequence[Path]) -> str:
    if len(files) <= 2:
        return " and ".join(str(f) for f in files)
    return f"{len(files)} files in {files[0].parent}"


def open_dataset(
    paths,
    *,
    neutral_only: bool = False,
    skip_invalid: bool = False,
    energy_key: str = DEFAULT_ENERGY_KEY,
    forces_key: str = DEFAULT_FORCES_KEY,
) -> Dataset:
    """Open one file, several files or a folder of shards as one streaming `Dataset` (see module docstring).

    `energy_key` / `forces_key`: where the labels are stored (e.g. MACE's "REF_energy" / "REF_forces")."""
    return Dataset(
        paths, neutral_only=neutral_only, skip_invalid=skip_invalid, energy_key=energy_key, forces_key=forces_key
    )


# ----------------------------------------------------------------------------------------------------------
# writing


def _to_atoms(s: Structure):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = Atoms(numbers=np.asarray(s.numbers), positions=np.asarray(s.positions, dtype=np.float64))
    results = {}
    if s.energy is not None:
        results["energy"] = float(s.energy)
    if s.forces is not None:
        results["forces"] = np.asarray(s.forces, dtype=np.float64)
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def row_data(s: Structure) -> dict:
    """The row `data` of OMol25's schema: charge, spin (multiplicity), source, plus JSON-able info."""
    info = {k: v.item() if isinstance(v, np.generic) else v for k, v in s.info.items()}
    data = {k: v for k, v in info.items() if isinstance(v, int | float | str | bool)}
    data["charge"] = int(s.charge)
    data["spin"] = int(s.spin)
    data.setdefault("source", "symscale")
    return data


class AselmdbWriter:
    """Appends structures to an `.aselmdb` file in the layout ase-db-backends reads (OMol25's schema).

    Rows are written in transactions (`write_many` is atomic), with ids continuing from the file's `nextid`.
    Written without ase-db-backends' per-row id bookkeeping, which is quadratic in the number of rows.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._env = _lmdb_env(self.path, readonly=False)
        with self._env.begin() as txn:
            raw = txn.get(b"nextid")
        self.nextid = int(_decode(raw)) if raw is not None else 1

    def write_many(self, structures: Iterable[Structure]) -> int:
        from ase.db.core import now
        from ase.db.row import AtomsRow
        from ase.io.jsonio import encode

        n = 0
        with self._env.begin(write=True) as txn:
            for s in structures:
                row = AtomsRow(_to_atoms(s))
                row.ctime = now()
                dct = {k: row[k] for k in row.__dict__ if k[0] != "_" and k not in row._keys and k != "id"}
                dct.update(mtime=row.ctime, data=row_data(s), cell=np.asarray(dct["cell"]))
                dct.pop("user", None)
                txn.put(str(self.nextid).encode("ascii"), zlib.compress(encode(dct).encode("utf-8")))
                self.nextid += 1
                n += 1
            txn.put(b"nextid", zlib.compress(encode(self.nextid).encode("utf-8")))
        return n

    def write_encoded(self, rows: Iterable[bytes]) -> int:
        """Append rows already encoded by `encode_row` (one transaction; the fast path for large files)."""
        n = 0
        with self._env.begin(write=True) as txn:
            for raw in rows:
                txn.put(str(self.nextid).encode("ascii"), raw)
                self.nextid += 1
                n += 1
            txn.put(b"nextid", zlib.compress(json.dumps(self.nextid).encode("utf-8")))
        return n

    def close(self) -> None:
        try:
            self._env.sync(True)
        finally:
            _close_env(self.path)

    def __enter__(self) -> AselmdbWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def encode_row(numbers, positions, energy: float | None, forces, data: dict, *, time: float = 0.0) -> bytes:
    """One `.aselmdb` row in the layout ase-db-backends writes (what `AselmdbWriter.write_many` stores, with a
    fixed unique id), encoded directly from arrays: numbers [n], positions [n, 3] Angstrom, energy eV, forces
    [n, 3] eV/Angstrom, `data` (charge, spin, ...). For writing millions of synthetic rows."""

    def nd(a: np.ndarray, dtype: str) -> dict:
        return {"__ndarray__": [list(a.shape), dtype, a.reshape(-1).tolist()]}

    numbers = np.asarray(numbers, dtype=np.int64)
    dct = {
        "numbers": nd(numbers, "int64"),
        "positions": nd(np.asarray(positions, dtype=np.float64), "float64"),
        "unique_id": f"{zlib.crc32(numbers.tobytes()):032x}",
        "calculator": "unknown",
        "calculator_parameters": {},
        "cell": nd(np.zeros((3, 3)), "float64"),
        "pbc": {"__ndarray__": [[3], "bool", [False, False, False]]},
        "ctime": time,
        "mtime": time,
        "data": data,
    }
    if energy is not None:
        dct["energy"] = float(energy)
    if forces is not None:
        dct["forces"] = nd(np.asarray(forces, dtype=np.float64), "float64")
    finite = all(
        np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in (positions, energy, forces) if v is not None
    )
    if finite and _json_loads is not json.loads:
        import orjson

        return zlib.compress(orjson.dumps(dct))
    return zlib.compress(json.dumps(dct).encode("utf-8"))  # NaN / Infinity literals as ASE writes them


def write_structures(path: str | os.PathLike, structures: Iterable[Structure]) -> int:
    """Write structures to `path` (.aselmdb, .db or .xyz/.extxyz, chosen by extension; an existing file is
    replaced). Energies eV, forces eV/Angstrom, `data`/info charge, spin, source. Returns the count written.

    Atomic: the structures go to a unique temporary file beside `path`, which is flushed to disk and renamed
    over `path` only when complete. A failure (a bad structure, a full disk, Ctrl-C) leaves an existing `path`
    untouched and no partial file behind; a full disk or a refused write is a `SymscaleError` naming `path`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ALL_EXTENSIONS:
        raise SymscaleError.invalid("output file", str(path), f"a file ending in {', '.join(ALL_EXTENSIONS)}")
    if not path.parent.is_dir():
        raise SymscaleError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise SymscaleError(f"cannot write {path}: it is a folder, expected a file path")
    from symscale.rundir import atomic_path

    try:  # the package's one atomic writer: the temporary file and its LMDB lock or journal never stay
        with atomic_path(path, suffix=f".tmp{path.suffix}", companions=("-lock", "-journal")) as tmp:
            try:
                n = _write_file(tmp, suffix, structures)
            finally:
                _close_env(tmp)  # a cached environment of the temporary file
            if suffix in LMDB_EXTENSIONS:
                _close_env(path)  # a cached reader of the file being replaced
    except (OSError, sqlite3.Error) as err:
        raise _write_error(path, err) from None
    except Exception as err:
        if type(err).__module__ == "lmdb":  # lmdb.DiskError (disk full), lmdb.ReadonlyError, ...
            raise _write_error(path, err) from None
        raise
    return n


def _write_file(tmp: Path, suffix: str, structures: Iterable[Structure]) -> int:
    if suffix in LMDB_EXTENSIONS:
        with AselmdbWriter(tmp) as w:
            return w.write_many(structures)
    if suffix in DB_EXTENSIONS:
        return _write_sqlite(tmp, structures)
    return _write_xyz(tmp, structures)


def _write_error(path: Path, err: Exception) -> SymscaleError:
    """A failed write of `path` as one line: what failed and that `path` was left as it was."""
    reason = getattr(err, "strerror", None) or (str(err).splitlines() or [type(err).__name__])[0]
    free = shutil.disk_usage(path.parent).free
    return SymscaleError(
        f"cannot write {path} (structures): {reason} ({free / 1e6:.1f} MB free in {path.parent}); "
        f"nothing written, {path} left unchanged"
    )


def _write_sqlite(path: Path, structures: Iterable[Structure]) -> int:
    import ase.db

    n = 0
    db = ase.db.connect(str(path), type="db", use_lock_file=False)
    with db:
        for s in structures:
            db.write(_to_atoms(s), data=row_data(s))
            n += 1
    return n


def _write_xyz(path: Path, structures: Iterable[Structure]) -> int:
    from ase.io import write

    n = 0
    with open(path, "w") as f:
        for s in structures:
            atoms = _to_atoms(s)
            atoms.info.update(row_data(s))
            write(f, atoms, format="extxyz")
            n += 1
    return n
