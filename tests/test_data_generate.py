import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from symscale.data.builtin import builtin_dataset
from symscale.data.dynamics import BAOAB, ForceFieldModel, kinetic_energy, maxwell_boltzmann
from symscale.data.generate import fresh_label, generate_dataset
from symscale.data.molecules import seed_molecules
from symscale.data.readers import open_dataset
from symscale.data.xtb import gfn2_single_point
from symscale.errors import SymscaleError

N = 16  # four molecules: three from QM9, one drug-like


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "ref.aselmdb"
    report = generate_dataset(path, N, workers=0, seed=0, progress=False)
    return path, report


def test_generated_file_schema(generated):
    path, report = generated
    ds = open_dataset(path, neutral_only=True)
    assert len(ds) == N == report.n_structures
    sources = {ds[i].info["source"].split(":")[0] for i in range(N)}
    assert "qm9" in sources and sources & {"moses", "rdkit"}
    s = ds[0]
    assert (s.charge, s.spin) == (0, 1) and s.info["mol"] == 0 and s.energy < 0
    assert np.abs(s.forces).max() < 50
    assert [m.source for m in seed_molecules(4, 0)] == [ds[4 * k].info["source"] for k in range(4)]


def test_stored_labels_match_fresh_xtb_and_finite_differences(generated):
    ds = open_dataset(generated[0])
    for i in (0, 13):
        e, f = fresh_label(ds[i])
        assert e == pytest.approx(ds[i].energy, abs=1e-8)
        np.testing.assert_allclose(f, ds[i].forces, atol=1e-8)
    s = min((ds[i] for i in range(N)), key=len)
    h = 1e-4  # Angstrom
    for atom in (0, len(s) - 1):
        for c in range(3):
            xp, xm = s.positions.copy(), s.positions.copy()
            xp[atom, c] += h
            xm[atom, c] -= h
            fd = -(gfn2_single_point(s.numbers, xp)[0] - gfn2_single_point(s.numbers, xm)[0]) / (2 * h)
            assert fd == pytest.approx(s.forces[atom, c], abs=5e-3)


def rows(path):
    ds = open_dataset(path)
    return [(ds[i].positions.tobytes(), ds[i].energy, ds[i].forces.tobytes(), ds[i].info) for i in range(len(ds))]


def test_interrupted_generation_resumes_to_the_same_file(generated, tmp_path):
    path = tmp_path / "resume.aselmdb"
    first = generate_dataset(path, 6, workers=0, seed=0, progress=False)  # stops inside molecule 1
    assert first.n_structures == 6
    second = generate_dataset(path, N, workers=0, seed=0, progress=False)
    assert second.resumed_from == 6 and second.n_new == N - 6
    assert rows(path) == rows(generated[0])
    with pytest.raises(SymscaleError, match="seed"):
        generate_dataset(path, N + 4, workers=0, seed=1, progress=False)


@pytest.mark.slow
def test_worker_count_does_not_change_the_data(generated, tmp_path):
    generate_dataset(tmp_path / "w2.aselmdb", N, workers=2, seed=0, progress=False)
    assert rows(tmp_path / "w2.aselmdb") == rows(generated[0])


def test_builtin_dataset_is_cached(tmp_path):
    path = builtin_dataset(3, workers=0, cache_dir=tmp_path, progress=False)
    assert path.exists() and "n3-s0" in path.name and len(open_dataset(path)) == 3
    mtime = path.stat().st_mtime_ns
    assert builtin_dataset(3, workers=0, cache_dir=tmp_path) == path and path.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob("*.partial*"))


def test_mmff_integrator_conserves_energy():
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom

    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O"))
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = 7
    rdDistGeom.EmbedMolecule(mol, params)
    model = ForceFieldModel(mol)
    rng = np.random.default_rng(0)
    integ = BAOAB(model, dt_fs=0.25, temperature_k=300.0, friction=0.0)  # NVE
    state = integ.start(mol.GetConformer().GetPositions(), maxwell_boltzmann(model.masses, 300.0, rng))
    total = lambda s: model.energy(s.x) + kinetic_energy(model.masses, s.v)  # kcal/mol
    e0, drift = total(state), []
    for _ in range(400):  # 100 fs
        state = integ.step(state, rng)
        drift.append(abs(total(state) - e0))
    assert kinetic_energy(model.masses, state.v) > 1.0  # it moved
    assert max(drift) < 0.05


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is `pid` (from /proc)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append((int(proc.name), cmd))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker process through /proc")
def test_a_killed_labelling_worker_stops_the_run_with_one_line_and_keeps_what_was_written(tmp_path):
    # multiprocessing.Pool.imap waited for the killed worker's job for ever; the run must end instead
    path = tmp_path / "killed.aselmdb"
    cmd = [sys.executable, "-m", "symscale", "data", "generate", "--structures", "2000", "--out", str(path),
           "--workers", "1", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        workers: list = []
        while not workers and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = [p for p, c in _children(proc.pid) if "spawn_main" in c]
        assert workers, "no labelling worker started"
        time.sleep(3.0)  # inside the labelling: the file holds some molecules, the run has many to go
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "labelling worker process died" in last and "run the same command again to resume" in last
    written = int(re.search(r"keeps the (\d+) structures", last).group(1))
    assert 0 < written < 2000
    assert len(open_dataset(path)) == written
