"""The dataset index (data/index.py): what it records, built once and reused, rebuilt when a file changes, one
build when two processes open a new dataset at once; separate validation data; loader workers started once."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from symscale.config import RunConfig
from symscale.data import index as index_mod
from symscale.data.loader import BatchLoader, LoaderWorkers
from symscale.data.readers import AselmdbWriter, check_structure, encode_row, open_dataset
from symscale.data.splits import validation_split
from symscale.train.loop import train_run


def synthetic_rows(n: int, seed: int = 0, *, mol: bool = True, bad_every: int = 0) -> list[bytes]:
    """OMol25-schema rows of random molecules (atoms on a jittered grid, so none closer than ~1 Angstrom),
    charged and open-shell rows mixed in, 4 conformers per molecule; every `bad_every`-th row is made invalid."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.5
    rows = []
    for i in range(n):
        k = int(rng.integers(2, 12))
        z = rng.choice([1, 6, 7, 8, 16], size=k)
        pos = grid[rng.choice(len(grid), size=k, replace=False)] + rng.normal(0, 0.05, (k, 3))
        energy, forces = float(-10.0 * k + rng.normal()), rng.normal(size=(k, 3))
        charge, spin = [(0, 1), (0, 1), (1, 2), (-1, 1), (0, 3)][i % 5]
        data = {"charge": charge, "spin": spin, "source": "synthetic"}
        if mol:
            data["mol"] = i // 4
        if bad_every and i % bad_every == bad_every - 1:
            kind = (i // bad_every) % 4
            if kind == 0:
                energy = float("nan")
            elif kind == 1:
                forces = None
            elif kind == 2:
                pos[1] = pos[0] + 0.01  # atoms on top of each other
            else:
                forces = np.full((k, 3), np.inf)
        rows.append(encode_row(z, pos, energy, forces, data))
    return rows


def write_synthetic(path: Path, n: int, seed: int = 0, **kw) -> Path:
    with AselmdbWriter(path) as w:
        w.write_encoded(synthetic_rows(n, seed, **kw))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "index-cache"
    monkeypatch.setenv("SYMSCALE_INDEX_CACHE", str(folder))
    return folder


def counting_builds(monkeypatch) -> list[int]:
    builds: list[int] = []
    real = index_mod._build

    def build(sources, workers):
        builds.append(sum(len(s) for s in sources))
        return real(sources, workers)

    monkeypatch.setattr(index_mod, "_build", build)
    return builds


def test_index_records_rows_and_filters_match_reading_every_row(tmp_path, cache):
    path = write_synthetic(tmp_path / "a.aselmdb", 600, bad_every=7)
    ds = open_dataset(path)
    idx = ds.index
    reasons = []
    for i in range(len(ds)):
        src, row = ds._locate_raw(i)
        s = src.read(row)
        assert (idx.field("charge")[i], idx.field("spin")[i], idx.field("n_atoms")[i]) == (s.charge, s.spin, len(s))
        assert idx.field("mol")[i] == s.info["mol"] and idx.field("has_mol")[i]
        ptr = idx.files[0].comp_ptr
        comp = dict(
            zip(idx.files[0].comp_z[ptr[i] : ptr[i + 1]].tolist(), idx.files[0].comp_count[ptr[i] : ptr[i + 1]])
        )
        assert comp == dict(zip(*np.unique(s.numbers, return_counts=True)))
        reason = check_structure(s)
        assert (reason is None) == (idx.invalid_reason(i) is None), (i, reason, idx.invalid_reason(i))
        reasons.append(reason)
    assert 0 < sum(r is not None for r in reasons) < len(reasons)
    neutral = open_dataset(path, neutral_only=True, skip_invalid=True)
    by_rows = [
        i
        for i in range(len(ds))
        if reasons[i] is None and ds.metadata(i)["charge"] == 0 and ds.metadata(i)["spin"] == 1
    ]
    assert neutral.raw_rows().tolist() == by_rows
    assert neutral.skipped == sum(r is not None for r in reasons)
    assert set(neutral.skip_reasons) == {"energy is not finite", "missing forces", "atoms on top of each other",
                                         "NaN or inf in forces"}  # fmt: skip
    atoms, structures = idx.element_counts(neutral.raw_rows())
    assert atoms == Counter(int(z) for i in neutral.raw_rows() for z in ds[int(i)].numbers)
    assert structures[6] == sum(6 in ds[int(i)].numbers for i in neutral.raw_rows())


def test_index_is_built_once_reused_and_rebuilt_when_the_file_changes(tmp_path, cache, monkeypatch):
    path = write_synthetic(tmp_path / "a.aselmdb", 20_000, mol=False)
    builds = counting_builds(monkeypatch)
    first = open_dataset(path, neutral_only=True)
    assert builds == [20_000] and len(list(cache.glob("*/meta.json"))) == 1
    again = open_dataset(path, neutral_only=True)  # a later open (run, dry run, worker) reads the cache
    assert builds == [20_000] and np.array_equal(first.raw_rows(), again.raw_rows())
    assert len(again) == 8_000  # rows 0 and 1 of every 5 are neutral singlets
    with AselmdbWriter(path) as w:  # the file changes: its index is stale
        w.write_encoded(synthetic_rows(500, seed=9, mol=False))
    changed = open_dataset(path, neutral_only=True)
    assert builds == [20_000, 20_500] and len(changed) == 8_200
    assert len(list(cache.glob("*/meta.json"))) == 2 and not [
        p for p in cache.glob(".*") if p.is_dir()
    ]  # no temporaries left


def _open_in_child(path: str, cache: str, log: str, start) -> None:
    import os

    os.environ["SYMSCALE_INDEX_CACHE"] = cache
    from symscale.data import index as index_mod
    from symscale.data.readers import open_dataset

    real = index_mod._build

    def build(sources, workers):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(sources, 1)

    index_mod._build = build
    start.wait()
    ds = open_dataset(path, neutral_only=True)
    with open(f"{log}.{os.getpid()}", "w") as f:
        json.dump(ds.raw_rows().tolist(), f)


def test_two_processes_opening_a_new_dataset_build_its_index_once(tmp_path, cache):
    path = write_synthetic(tmp_path / "a.aselmdb", 20_000, mol=False)
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    log = tmp_path / "builds.log"
    procs = [ctx.Process(target=_open_in_child, args=(str(path), str(cache), str(log), start)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert len(log.read_text().split()) == 1  # one process built, the other waited and read it
    selections = [json.loads(Path(f"{log}.{p.pid}").read_text()) for p in procs]
    assert selections[0] == selections[1] and len(selections[0]) == 8_000
    assert len(list(cache.glob("*/meta.json"))) == 1 and not [p for p in cache.glob(".*") if p.is_dir()]


def test_parallel_pass_equals_the_serial_one(tmp_path, cache, monkeypatch):
    path = write_synthetic(tmp_path / "a.aselmdb", 3_000, bad_every=11)
    ds = open_dataset(path)
    serial = index_mod._build(ds._sources, 1)[0]
    monkeypatch.setattr(index_mod, "CHUNK_ROWS", 700)
    monkeypatch.setattr(index_mod, "PARALLEL_MIN_ROWS", 1)
    parallel = index_mod._build(ds._sources, 2)[0]
    for field in index_mod.FIELDS:
        assert np.array_equal(serial[field], parallel[field]), field


def test_whole_molecule_validation_from_the_index_and_a_warning_without_ids(tmp_path, cache, caplog):
    with_ids = open_dataset(write_synthetic(tmp_path / "m.aselmdb", 2_000), neutral_only=True)
    split = validation_split(with_ids, 100, seed=1)
    mol = with_ids.index.field("mol")[with_ids.raw_rows()]
    assert split.how == "by molecule" and not set(mol[split.splits.val]) & set(mol[split.splits.pool])
    without = open_dataset(write_synthetic(tmp_path / "n.aselmdb", 500, mol=False))
    with caplog.at_level(logging.WARNING, logger="symscale.data.splits"):
        assert validation_split(without, 50).how == "by structure"
        validation_split(without, 50, seed=2)
    assert sum("no molecule ids" in r.message for r in caplog.records) == 1  # once per dataset


def test_separate_validation_data_end_to_end_in_a_tiny_run(tmp_path, cache):
    train = write_synthetic(tmp_path / "train.aselmdb", 400, seed=1)
    val = write_synthetic(tmp_path / "val.aselmdb", 100, seed=2)
    config = RunConfig.from_dict({
        "arch": "mpnn", "width": 8, "source": str(train), "val_source": str(val), "neutral_only": True,
        "n_val": 30, "n_train": 64, "batch_size": 8, "eval_points": 2, "compute_accounting": False,
        "progress": "off", "equivariance_structures": 4,
    })  # fmt: skip
    result = train_run(config, tmp_path / "run")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert result.status == "finished" and result.steps == 8
    assert run["val_split"] == "separate data" and run["n_val"] == 30 and run["n_total"] == 160  # 40% neutral
    assert "validation:" in run["dataset"] and np.isfinite(result.final["val_loss"])
    carved = train_run(config.updated({"val_source": None}), tmp_path / "carved")
    assert json.loads((tmp_path / "carved" / "run.json").read_text())["val_split"] == "by molecule"
    assert carved.final["val_loss"] != result.final["val_loss"]
    assert (
        config.updated({"val_source": None}).config_hash()
        == RunConfig.from_dict(
            {k: v for k, v in config.to_dict().items()} | {"data": {**config.to_dict()["data"], "val_source": None}}
        ).config_hash()
    )


def test_loader_workers_start_once_and_give_the_batches_of_no_workers(tmp_path, cache):
    ds = open_dataset(write_synthetic(tmp_path / "a.aselmdb", 300), neutral_only=True)
    orders = [np.random.default_rng(s).permutation(len(ds)) for s in (0, 1)]
    with LoaderWorkers(ds, 2, prefetch=2) as pool:
        pids = pool.pids
        for order in orders:
            ref = list(BatchLoader(ds, order, batch_size=7))
            got = list(BatchLoader(ds, order, batch_size=7, pool=pool))
            assert len(got) == len(ref)
            for a, b in zip(got, ref, strict=True):
                assert torch.equal(a.pos, b.pos) and torch.equal(a.edge_index, b.edge_index)
                assert torch.equal(a.forces, b.forces)
        early = iter(BatchLoader(ds, orders[0], batch_size=7, pool=pool))
        next(early)
        early.close()  # a pass left early: the next pass still gets its own batches, in order
        resumed = list(BatchLoader(ds, orders[1], batch_size=7, start_batch=3, pool=pool))
        assert torch.equal(resumed[0].pos, list(BatchLoader(ds, orders[1], batch_size=7))[3].pos)
        assert pool.pids == pids and all(p.is_alive() for p in pool._procs)  # the same processes throughout
    assert not any(p.is_alive() for p in pool._procs)


def test_statistics_reference_every_element_of_the_training_data(tmp_path, cache):
    from symscale.data.stats import compute_stats

    rows = synthetic_rows(400, seed=3)
    rare = [encode_row(np.array([9, 6, 1]), np.eye(3) * 1.5, -80.0, np.zeros((3, 3)), {"charge": 0, "spin": 1})]
    with AselmdbWriter(tmp_path / "a.aselmdb") as w:  # one fluorine structure among 401
        w.write_encoded(rows[:200] + rare + rows[200:])
    ds = open_dataset(tmp_path / "a.aselmdb", neutral_only=True)
    stats = compute_stats(ds, max_samples=20, seed=0)
    assert 9 in stats.element_energies and stats.n_sampled == 20  # the labelled sample; the F row is added to the fit
    assert stats.atoms_per_structure == pytest.approx(np.mean([len(s) for s in ds]))  # exact, from the index


def test_val_data_options_of_train_and_study(tmp_path):
    import argparse

    from symscale.cli import study as study_cli
    from symscale.cli import train as train_cli
    from symscale.errors import SymscaleError
    from symscale.study.spec import expand_runs, load_spec

    parser = argparse.ArgumentParser()
    train_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--arch", "mpnn", "--width", "8", "--out", "r", "--val-data", "v.aselmdb"])
    assert train_cli.config_from_args(args).data.val_source == "v.aselmdb"
    paper = load_spec("paper", overrides={"dataset": {"path": str(tmp_path), "val_path": str(tmp_path / "v")}})
    assert paper.dataset.val_path == str(tmp_path / "v") and paper.dataset.neutral_only
    assert expand_runs(paper)[0].config.data.val_source == str(tmp_path / "v")
    assert "${" in load_spec("paper").dataset.val_path  # the preset's placeholder, filled by --val-data
    parser = argparse.ArgumentParser()
    study_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["study", "paper", "--data", str(tmp_path), "--val-data", str(tmp_path / "missing")])
    with pytest.raises(SymscaleError, match="validation data not found"):
        study_cli.run(args)
    args = parser.parse_args(["study", "paper", "--data", str(tmp_path)])
    with pytest.raises(SymscaleError, match="--val-data"):
        study_cli.run(args)


def test_fast_row_reading_equals_decoding_every_row_whole(tmp_path):
    """The index pass's lean loop (each row decoded whole by orjson) against the whole-row decoding it falls
    back to, on rows in ASE's layout, rows with NaN/Infinity literals, no atoms, forces kept in `data`, a forces
    array nested in `data` beside the top-level one, forces that overflow a double, and a corrupt row."""
    import zlib

    from symscale.data.readers import _LmdbSource

    rows = synthetic_rows(60, seed=3, bad_every=5)
    z, pos, frc = np.array([1, 8]), np.array([[0.0, 0, 0], [0.96, 0, 0]]), np.ones((2, 3))
    pos_nan = pos.copy()
    pos_nan[1, 2] = np.nan
    nested = json.loads(zlib.decompress(encode_row(z, pos, -1.0, frc, {"charge": 0, "spin": 1})))
    nested["data"]["forces"] = {"__ndarray__": [[1, 3], "float64", [9.0] * 3]}  # first in the text, not the label
    moved = json.loads(zlib.decompress(encode_row(z, pos, -1.0, None, {"charge": 1, "spin": 2, "mol": "m-7"})))
    moved["data"]["forces"] = frc.tolist()  # labels in `data`, as some writers keep them
    rows += [
        encode_row(z, pos_nan, -1.0, frc, {"charge": 0, "spin": 1}),
        encode_row(z, pos, -1.0, np.full((2, 3), -np.inf), {"charge": 0, "spin": 1}),
        encode_row(np.zeros(0, int), np.zeros((0, 3)), 0.0, np.zeros((0, 3)), {"charge": 0, "spin": 1}),
        encode_row(z, pos, -1.0, frc[:1], {"charge": 0, "spin": 1}),  # forces of the wrong shape
        zlib.compress(json.dumps(nested).encode()),
        zlib.compress(json.dumps(moved).encode()),
        # a number no double holds: orjson refuses it, Python's json (the readers') makes it inf
        zlib.compress(zlib.decompress(encode_row(z, pos, -1.0, np.full((2, 3), 7.0), {})).replace(b"7.0", b"1e999", 1)),
        b"not zlib",
    ]
    path = tmp_path / "mixed.aselmdb"
    from symscale.data.graph import Structure

    ase_rows = [Structure(numbers=z, positions=p, energy=-1.0, forces=f, charge=0, spin=1)
                for p, f in ((pos, frc), (pos_nan, frc), (pos, np.full((2, 3), np.nan)))]  # fmt: skip
    with AselmdbWriter(path) as w:
        w.write_many(ase_rows)  # ASE's own encoder: `"key": value` with spaces
        w.write_encoded(rows)
    source = _LmdbSource(path)
    fast = index_mod._index_rows(source, 0, len(source))
    whole = index_mod._Chunk(len(source))
    for k, raw in enumerate(source.raw_rows(0, len(source))):
        index_mod._add_lmdb_row(whole, k, raw, "energy", b'"forces"')
    slow = whole.finish()
    for field in index_mod.FIELDS:
        np.testing.assert_array_equal(fast[field], slow[field], err_msg=field)
    assert [index_mod.REASONS[c] for c in fast["invalid"][:3]] == ["", "NaN or inf in positions",
                                                                   "NaN or inf in forces"]  # fmt: skip
    codes = [index_mod.REASONS[c] for c in fast["invalid"][-8:]]
    assert codes == ["NaN or inf in positions", "NaN or inf in forces", "no atoms", "forces of shape", "", "",
                     "NaN or inf in forces", "corrupt row"]  # fmt: skip
    for i in range(len(source) - 1):  # every row but the corrupt one, valid exactly when reading finds it valid
        assert (check_structure(source.read(i)) is None) == (fast["invalid"][i] == 0), i


def test_rows_in_ase_layout_take_the_fast_path_and_inflate_is_zlib(tmp_path, monkeypatch):
    """Valid rows in ASE's layout never reach the slow per-row path (orjson decodes them whole), a row with a NaN
    literal does; `inflate` (ISA-L where installed) gives zlib's bytes and raises zlib.error on a bad checksum."""
    import zlib

    from symscale.data.readers import _LmdbSource

    rows = synthetic_rows(40, seed=5)
    bad = encode_row(np.array([1, 8]), np.array([[0.0, 0, 0], [0.96, 0, 0]]), -1.0, np.full((2, 3), np.nan),
                     {"charge": 0, "spin": 1})  # fmt: skip
    path = tmp_path / "clean.aselmdb"
    with AselmdbWriter(path) as w:
        w.write_encoded(rows + [bad])
    slow_rows: list[int] = []
    real = index_mod._add_lmdb_row

    def counted(chunk, k, *args):
        slow_rows.append(k)
        real(chunk, k, *args)

    monkeypatch.setattr(index_mod, "_add_lmdb_row", counted)
    source = _LmdbSource(path)
    out = index_mod._index_rows(source, 0, len(source))
    if index_mod._json_loads is json.loads:  # without orjson every row is decoded by the slow path
        assert slow_rows == list(range(len(source)))
    else:
        assert slow_rows == [len(rows)]
    assert index_mod.REASONS[out["invalid"][-1]] == "NaN or inf in forces" and not out["invalid"][:-1].any()
    for raw in rows[:5]:
        assert index_mod.inflate(raw) == zlib.decompress(raw)
    broken = bytearray(rows[0])
    broken[-1] ^= 1  # the adler-32 checksum
    with pytest.raises(zlib.error):
        index_mod.inflate(bytes(broken))


def test_reading_a_row_the_index_found_valid_skips_the_checks_an_invalid_one_still_raises(tmp_path, cache, monkeypatch):
    from symscale.data import readers
    from symscale.errors import SymscaleError

    path = write_synthetic(tmp_path / "a.aselmdb", 40, bad_every=7)
    calls = []
    real = readers.check_structure
    monkeypatch.setattr(readers, "check_structure", lambda s: calls.append(1) or real(s))
    ds = open_dataset(path)  # no filter: no index loaded, every read checked
    ds[0]
    assert len(calls) == 1
    ds.index  # noqa: B018 - loads (builds) the index
    calls.clear()
    ok = [i for i in range(len(ds)) if ds.index.invalid_reason(i) is None]
    for i in ok:
        ds[i]
    assert calls == []
    with pytest.raises(SymscaleError, match="structure 6: energy is nan"):
        ds[6]


def _close_rows_by_brute_force(rows: list[np.ndarray], limit: float) -> np.ndarray:
    out = []
    for p in rows:
        if len(p) < 2 or not np.isfinite(p).all():
            out.append(False)
            continue
        d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
        d2[np.diag_indices(len(p))] = np.inf
        out.append(bool(d2.min() < limit * limit))
    return np.array(out)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_atoms_on_top_of_each_other_are_found_as_by_measuring_every_pair(offset):
    """The index's sweep over many rows at once (`_any_close`) flags exactly the rows that measuring every pair
    flags: pairs just under and just over the limit, rows laid flat across the sweep's axis (many atoms at one
    projection), all atoms on one point, rows whose atoms would be close to the next row's, empty, one-atom and
    NaN rows, and coordinates far from the origin."""
    rng = np.random.default_rng(3)
    limit = index_mod.MIN_DISTANCE

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    axis = index_mod._SWEEP_AXIS
    e1 = np.cross(axis, [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    rows: list[np.ndarray] = []
    for r in range(400):
        kind = r % 8
        n = int(rng.integers(2, 60)) if kind != 7 else int(rng.integers(200, 400))
        p = rng.uniform(0, 3.0 * n ** (1 / 3), (n, 3))
        if kind == 1:  # flat across the axis: every projection equal; a close pair in the middle or none
            g = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2) * 0.5
            p = g[:, :1] * e1 + g[:, 1:] * e2
            if r % 16 == 1:
                p[40] = p[27] + 0.09 * e1
        elif kind == 2:
            p[-1] = p[0] + 0.0999 * unit(rng.normal(size=3))
        elif kind == 3:
            p[-1] = p[0] + 0.1001 * unit(rng.normal(size=3))
        elif kind == 4:
            p[:] = p[0]
        elif kind == 5:
            p = p[: r % 2]  # empty or one atom
        elif kind == 6 and r % 3 == 0:
            p[0, 1] = np.nan
        rows.append(p + offset)
    rows.append(rows[-1] + 0.01)  # the next row's atoms 0.017 A from this row's: rows must not mix
    sizes = np.array([len(p) for p in rows])
    pos = np.concatenate(rows)
    expected = _close_rows_by_brute_force(rows, limit)
    assert 40 < expected.sum() < len(rows) - 40
    assert np.array_equal(index_mod._any_close(pos, sizes, limit), expected)
