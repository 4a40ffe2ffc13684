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
