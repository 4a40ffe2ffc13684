"""GemNet-OC: triplet and quadruplet construction against brute force, symmetry, smoothness, forces, muP
multipliers, ladder."""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pytest
import torch
import yaml

from symscale.data.graph import Structure, collate
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError
from symscale.models import mup
from symscale.models.gemnet_oc import (
    BASIS_EMBEDDING,
    GemNetOC,
    Grouping,
    basis_embedding_sizes,
    channel_dims,
    nearest_edges,
    quadruplet_basis_sum,
    quadruplet_geometry,
    quadruplet_indices,
    rms_norm,
    triplets,
)
from symscale.models.ladders import BUILTIN_ELEMENTS, ladder_rungs
from symscale.models.layers import PolynomialEnvelope, edge_frames, legendre
from symscale.models.registry import build

ELEMENTS = [1, 6, 7, 8]


def model(width=8, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    return build("gemnet_oc", width, elements=ELEMENTS, **kw).to(dtype)


def batch_of(structures, dtype=torch.float64, **kw):
    return collate(structures, dtype=dtype, **kw)


def random_orthogonal(seed, reflect=False):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return torch.tensor(q, dtype=torch.float64)


def brute_triplets(edge_index):
    edges = edge_index.T.tolist()
    return {
        (a, b) for a, (k, j) in enumerate(edges) for b, (j2, i) in enumerate(edges) if j == j2 and k != i
    }  # (k -> j, j -> i)


@pytest.mark.parametrize("max_neighbors", [30, 3])
def test_triplets_equal_brute_force(max_neighbors):
    b = batch_of(toy_structures(5, seed=2, max_atoms=9), max_neighbors=max_neighbors)
    t_in, t_out = triplets(b.edge_index, b.num_atoms)
    got = list(zip(t_in.tolist(), t_out.tolist()))
    assert len(got) == len(set(got))
    assert set(got) == brute_triplets(b.edge_index)


def test_triplets_of_tiny_graphs():
    for n in (1, 2):
        b = batch_of(toy_structures(1, seed=0, min_atoms=n, max_atoms=n))
        assert triplets(b.edge_index, b.num_atoms)[0].numel() == 0
    b = batch_of(toy_structures(1, seed=0, min_atoms=3, max_atoms=3))
    assert triplets(b.edge_index, b.num_atoms)[0].numel() == 6  # each of 6 edges has one partner


def signed_dihedral(p_l, p_k, p_j, p_i):
    """IUPAC dihedral of the chain l-k-j-i (0 = cis), from explicit plane normals."""
    b1, b2, b3 = p_k - p_l, p_j - p_k, p_i - p_j
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return math.atan2(np.dot(np.cross(n1, n2), b2 / np.linalg.norm(b2)), np.dot(n1, n2))


def angle(p_a, p_center, p_b):
    v, w = p_a - p_center, p_b - p_center
    return math.acos(np.dot(v, w) / np.linalg.norm(v) / np.linalg.norm(w))


def brute_nearest(edge_index, dist, k):
    keep = set()
    for i in set(edge_index[1].tolist()):
        incoming = sorted((dist[e].item(), e) for e in range(edge_index.shape[1]) if edge_index[1, e] == i)
        keep |= {e for _, e in incoming[:k]}
    return keep


@pytest.mark.parametrize("k", [2, 4])
def test_nearest_edges_equal_brute_force(k):
    b = batch_of(toy_structures(4, seed=6, max_atoms=9))
    dist = (b.pos[b.edge_index[0]] - b.pos[b.edge_index[1]]).norm(dim=-1)
    got = torch.nonzero(nearest_edges(b.edge_index, dist, b.num_atoms, k)).flatten().tolist()
    assert got == sorted(brute_nearest(b.edge_index, dist, k))
    assert bool(nearest_edges(b.edge_index, dist, b.num_atoms, None).all())


@pytest.mark.parametrize("chiral,quad_neighbors", [(False, None), (True, None), (False, 3), (True, 2)])
def test_quadruplet_basis_sum_equals_brute_force(chiral, quad_neighbors):
    """The factorised two-pass sum equals the explicit sum over all paths l -> k -> j -> i (l != j, k != i,
    l != i) whose middle edge k -> j is among the `quad_neighbors` nearest incoming edges of j, of
    P_a(cos theta_kji) (sin theta_lkj sin theta_kji)^n cos(n phi) (and sin(n phi) when chiral) x[lk] cbf[lkj]."""
    b = batch_of(toy_structures(2, seed=5, min_atoms=5, max_atoms=6), max_neighbors=4)
    pos, ei = b.pos, b.edge_index
    vec = pos[ei[0]] - pos[ei[1]]
    dist = vec.norm(dim=-1)
    u = vec / dist[:, None]
    n_leg, q = 3, 2
    t_in, t_out = triplets(ei, b.num_atoms)
    in_quad = nearest_edges(ei, dist, b.num_atoms, quad_neighbors)
    geo = quadruplet_geometry(u, quadruplet_indices(ei, b.num_atoms, t_in, t_out, in_quad), n_leg, chiral)
    n_edges = ei.shape[1]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_edges, q, generator=g, dtype=torch.float64)
    cbf = torch.randn(geo.first_in.numel(), q, generator=g, dtype=torch.float64)
    got = quadruplet_basis_sum(x, cbf, geo, (1.0, 1.0)).numpy()  # [E, L * K, q]
    n_k = n_leg + (n_leg - 1 if chiral else 0)
    assert got.shape == (n_edges, n_leg * n_k, q)

    p = pos.numpy()
    first = {(a, c): t for t, (a, c) in enumerate(zip(geo.first_in.tolist(), geo.first.out.tolist()))}
    expected = np.zeros_like(got)
    n_quad = n_returning = 0
    for a, b_ in brute_triplets(ei):  # (l -> k, k -> j)
        if not in_quad[b_]:
            continue
        for b2, c in brute_triplets(ei):  # (k -> j, j -> i)
            if b2 != b_:
                continue
            (l, k), (_, j), (_, i) = ei[:, a].tolist(), ei[:, b_].tolist(), ei[:, c].tolist()
            if l == i:
                n_returning += 1
                continue
            n_quad += 1
            phi = signed_dihedral(p[l], p[k], p[j], p[i])
            theta1, theta2 = angle(p[l], p[k], p[j]), angle(p[k], p[j], p[i])
            leg = legendre(torch.tensor(math.cos(theta2), dtype=torch.float64), n_leg).numpy()
            feat = x[a].numpy() * cbf[first[(a, b_)]].numpy()
            for n in range(n_leg):
                radial = (math.sin(theta1) * math.sin(theta2)) ** n
                for la in range(n_leg):
                    expected[c, la * n_k + n] += leg[la] * radial * math.cos(n * phi) * feat
                    if chiral and n > 0:
                        expected[c, la * n_k + n_leg - 1 + n] += leg[la] * radial * math.sin(n * phi) * feat
    assert n_quad > (5 if quad_neighbors else 20) and n_returning > 0  # the removal of l = i is exercised
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_grouping_sum_equals_scatter():
    out = torch.tensor([2, 0, 2, 2, 1, 0])
    basis, x = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    group = Grouping.of(out, 4)
    assert group.k_max == 3 and sorted(zip(out.tolist(), group.rank.tolist())) == sorted(
        {(2, 0), (2, 1), (2, 2), (0, 0), (0, 1), (1, 0)}
    )
    expected = torch.zeros(4, 3, 4, dtype=torch.float64).index_add(0, out, basis[:, :, None] * x[:, None, :])
    torch.testing.assert_close(group.sum(basis, x), expected)


def test_edge_frames_orthonormal_and_legendre():
    u = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    e1, e2 = edge_frames(u)
    frame = torch.stack([e1, e2, u], -1)  # [n, 3, 3]
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    assert torch.allclose(frame.transpose(1, 2) @ frame, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(frame), torch.ones(50, dtype=torch.float64))
    x = torch.linspace(-1, 1, 7, dtype=torch.float64)
    assert torch.allclose(legendre(x, 4)[:, 3], (5 * x**3 - 3 * x) / 2)


def test_envelope_is_smooth_at_one():
    x = torch.tensor([0.0, 1 - 1e-4, 1.0, 1.5], dtype=torch.float64, requires_grad=True)
    env = PolynomialEnvelope(1.0, 5)(x)
    (grad,) = torch.autograd.grad(env.sum(), x)
    assert env[0] == 1 and env[2] == 0 and env[3] == 0 and abs(env[1]) < 1e-9
    assert abs(grad[1]) < 1e-5 and grad[2] == 0  # u' = O((1 - x)^2)


def rotated(b, R):
    return b.replace(pos=b.pos @ R.T)


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_rotation_invariance_and_force_equivariance(forces):
    b = batch_of(toy_structures(4, seed=3, max_atoms=10))
    net = model(forces=forces)
    out = net(b)
    assert out.forces.abs().max() > 1e-4  # not trivially zero
    for seed, reflect in [(0, False), (1, False), (2, True)]:
        R = random_orthogonal(seed, reflect)
        out_r = net(rotated(b, R))
        torch.testing.assert_close(out_r.energy, out.energy, atol=1e-9, rtol=0)
        torch.testing.assert_close(out_r.forces, out.forces @ R.T, atol=1e-9, rtol=0)


def test_chiral_model_sees_reflections_but_not_rotations():
    b = batch_of(toy_structures(4, seed=3, min_atoms=5, max_atoms=10))
    net = model(chiral=True)
    assert net.symmetry.group == "SE(3)" and not net.symmetry.reflection_equivariant
    assert GemNetOC.symmetry.reflection_equivariant  # the class default is unchanged
    out = net(b)
    R = random_orthogonal(4)
    torch.testing.assert_close(net(rotated(b, R)).energy, out.energy, atol=1e-9, rtol=0)
    mirrored = net(rotated(b, torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))))
    assert (mirrored.energy - out.energy).abs().max() > 1e-6


def test_conservative_forces_equal_finite_differences():
    s = toy_structures(1, seed=7, min_atoms=5, max_atoms=5)[0]
    net = model(forces="conservative")
    b = batch_of([s])
    forces = net(b).forces.detach()
    eps = 1e-6  # central differences: the error fell as eps^2 down to 3e-8 here (2.9e-6 at 1e-5)
    for atom, axis in [(0, 0), (2, 1), (4, 2)]:
        shift = torch.zeros_like(b.pos)
        shift[atom, axis] = eps
        e_plus = net(b.replace(pos=b.pos + shift)).energy.sum().detach()
        e_minus = net(b.replace(pos=b.pos - shift)).energy.sum().detach()
        assert abs(-(e_plus - e_minus) / (2 * eps) - forces[atom, axis]) < 1e-7


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_energy_and_forces_continuous_at_cutoff(forces):
    """Near the cutoff, removing the pair from the graph changes nothing: its messages vanish as (1 - d/c)^3,
    so an atom crossing the cutoff sees no jump in energy or forces."""
    cutoff = 3.0
    net = model(cutoff=cutoff, forces=forces)

    def with_and_without_pair(r):
        pos = np.array([[0.0, 0, 0], [1.2, 0, 0], [1.7, 1.1, 0], [math.sqrt(r**2 - 0.13), 0.3, 0.2]])
        b = batch_of([Structure(numbers=np.array([6, 8, 1, 7]), positions=pos)], cutoff=cutoff)
        src, dst = b.edge_index
        pair = ((src == 0) & (dst == 3)) | ((src == 3) & (dst == 0))  # |pos3 - pos0| = r
        assert int(pair.sum()) == 2
        return net(b), net(b.replace(edge_index=b.edge_index[:, ~pair]))

    full, cut = with_and_without_pair(cutoff - 1e-3)
    assert abs(full.energy - cut.energy).item() < 1e-8
    assert (full.forces - cut.forces).abs().max().item() < 1e-6
    full, cut = with_and_without_pair(cutoff - 0.3)
    assert abs(full.energy - cut.energy).item() > 1e-6  # the pair does contribute inside


def test_width_one_is_finite():
    out = model(width=1)(batch_of(toy_structures(2, seed=0)))
    assert torch.isfinite(out.energy).all() and torch.isfinite(out.forces).all()


def test_tiny_molecules_and_float32():
    structures = [toy_structures(1, seed=s, min_atoms=n, max_atoms=n)[0] for s, n in [(0, 1), (1, 2), (2, 3)]]
    for forces in ("direct", "conservative"):
        net = model(forces=forces, dtype=torch.float32)
        out = net(batch_of(structures, dtype=torch.float32))
        assert out.energy.shape == (3,) and out.forces.shape == (6, 3)
        assert torch.isfinite(out.energy).all() and torch.isfinite(out.forces).all()
        assert out.forces[0].abs().max() == 0  # a lone atom feels no force


def test_training_step_reduces_loss():
    b = batch_of(toy_structures(8, seed=1), dtype=torch.float32)
    net = model(width=8, dtype=torch.float32, element_energies={1: -10.7, 6: -48.8, 7: -70.9, 8: -102.5})
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = net(b)
        loss = ((out.energy - b.energy) / b.n_atoms).abs().mean() + (out.forces - b.forces).norm(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_width_scales_every_channel_dimension():
    """From base_width to 2 * base_width every parameter grows along some dims, by at most 2x (muP roles),
    except the radial x angular basis embeddings, which keep GemNet-OC's fixed sizes."""
    base = GemNetOC.base_width
    small, large = model(base), model(2 * base)
    assert channel_dims(64) == {"atom": 64, "edge": 128, "trip": 16, "aint": 16, "quad": 8}
    assert basis_embedding_sizes(base) == BASIS_EMBEDDING == {"rbf": 16, "cbf": 16, "sbf": 32}
    fixed = []
    for (name, p), (_, q) in zip(small.named_parameters(), large.named_parameters()):
        assert all(a <= b <= 2 * a for a, b in zip(p.shape, q.shape)), name
        if p.shape == q.shape:
            fixed.append(name)
    assert fixed and all(n.startswith(("rbf_embeddings.", "cbf_embeddings.", "sbf_embedding.")) for n in fixed)
    assert len(fixed) == 7 + 4 + 1
    assert [n for n, _ in small.named_parameters() if "readout" in n] == [
        "energy_readout.weight",
        "force_readout.weight",
    ]


def test_published_depth_and_bases_by_default():
    net = model(32)
    assert len(net.blocks) == 4 and len(net.outputs) == 5
    assert net.radial.centres.numel() == 128 and net.num_spherical == 7
    block = net.blocks[0]
    assert (len(block.before_skip), len(block.after_skip), len(block.after_concat), len(block.atom_emb)) == (2, 2, 1, 2)
    assert len(block.atom_update.layers) == 1 + 3 and len(net.outputs[0].after_atom) == 3
    # the dihedral basis: 7 Legendre orders of theta x 7 frequencies cos(n phi), n = 0..6 (x 13 when chiral)
    assert net.sbf_embedding.out_features == 32 * 7 * 7
    assert model(32, chiral=True).sbf_embedding.out_features == 32 * 7 * 13


@pytest.mark.parametrize("width", [64, 128])
def test_every_hidden_mup_multiplier_is_width_over_base_width(width):
    """The split edge embedding (node part and distance part) makes every hidden and output matrix's muP
    multiplier width / base_width exactly (the concatenated one measured 1.889 instead of 2)."""
    roles = mup.parameter_roles(build("gemnet_oc", width, elements=ELEMENTS))
    scaled = {n: r.width_mult for n, r in roles.items() if r.role in ("hidden", "output")}
    assert "edge_node.weight" in scaled and roles["edge_distance.weight"].role == "input"
    ratio = width / GemNetOC.base_width
    wrong = {n: m for n, m in scaled.items() if m != pytest.approx(ratio, rel=1e-12)}
    assert not wrong, wrong
    assert {r.role for r in roles.values()} == {"input", "hidden", "output", "vector"}


def test_readout_init_is_mup():
    net = model(width=128, dtype=torch.float32)
    w = net.energy_readout.weight
    assert abs(w.std().item() * 128 - 1) < 0.3  # std 1/fan_in
    hidden = net.blocks[0].dense_skip.weight
    assert abs(hidden.std().item() * math.sqrt(256) - 1) < 0.1  # std 1/sqrt(fan_in)


def test_invalid_options_are_user_errors():
    bad = [{"num_blocks": 0}, {"num_spherical": 0}, {"avg_neighbors": 0.0}, {"radial_basis": "cosine"}]
    for kw in [*bad, {"quad_neighbors": 0}, {"aeaint_neighbors": 0}, {"basis_embedding": {"rbf": 0}}]:
        with pytest.raises(SymscaleError):
            model(**kw)
    with pytest.raises(SymscaleError):
        model(bad_option=1)


def test_ladder_spans_the_required_parameter_ranges():
    text = resources.files("symscale").joinpath("configs/ladders/gemnet_oc.yaml").read_text()
    ladder = yaml.safe_load(text)
    for name, low, high in (("cpu", 5e2, 2e5), ("paper", 5e4, 2e7)):
        rungs = ladder_rungs("gemnet_oc", name, BUILTIN_ELEMENTS)
        widths, n = [r.width for r in rungs], [r.num_parameters for r in rungs]
        assert len(widths) >= 6 and widths == ladder[name]
        assert low <= n[0] and n[-1] <= high and n[-1] / n[0] >= 10**1.5, (name, n)
        for w, count in zip(widths, n):
            assert f"#   {w}: N = {count}" in text  # the comment states N
    paper = [r.num_parameters for r in ladder_rungs("gemnet_oc", "paper", BUILTIN_ELEMENTS)]
    assert paper[0] <= 0.58e6 and paper[-1] >= 13.0e6  # the reference study's range (PAPER.md)


def test_batching_consistency():
    structures = toy_structures(3, seed=9, max_atoms=8)
    net = model()
    together = net(batch_of(structures))
    offset = 0
    for k, s in enumerate(structures):
        alone = net(batch_of([s]))
        torch.testing.assert_close(alone.energy[0], together.energy[k], atol=1e-10, rtol=0)
        torch.testing.assert_close(alone.forces, together.forces[offset : offset + len(s)], atol=1e-10, rtol=0)
        offset += len(s)


def test_permutation_equivariance():
    s = toy_structures(1, seed=11, min_atoms=7, max_atoms=7)[0]
    perm = np.random.default_rng(0).permutation(len(s))
    s_perm = Structure(numbers=s.numbers[perm], positions=s.positions[perm])
    net = model()
    out, out_p = net(batch_of([s])), net(batch_of([s_perm]))
    torch.testing.assert_close(out_p.energy, out.energy, atol=1e-10, rtol=0)
    torch.testing.assert_close(out_p.forces, out.forces[perm], atol=1e-10, rtol=0)


def test_rms_norm_unit_rms_and_smooth_at_zero():
    x = torch.randn(5, 32, dtype=torch.float64) * torch.tensor([1e-3, 0.1, 1.0, 10.0, 100.0])[:, None].double()
    rms = rms_norm(x).pow(2).mean(-1).sqrt()
    assert torch.allclose(rms[2:], torch.ones(3, dtype=torch.float64), atol=1e-3)  # normalised where large
    tiny = torch.full((1, 4), 1e-9, dtype=torch.float64)
    assert torch.allclose(rms_norm(tiny), tiny / 1e-2)  # linear with gain 1/sqrt(eps) near zero, rms_norm(0) = 0
    assert rms_norm(torch.zeros(2, 3)).abs().max() == 0


@pytest.mark.parametrize("chiral", [False, True])
def test_forces_finite_and_exact_on_a_linear_chain(chiral):
    """Four collinear atoms: every dihedral is undefined (GemNet-OC's cos(phi) basis is not differentiable
    there); the sin^n-weighted basis is a polynomial of the coordinates, so forces are finite and equal
    finite differences of the energy."""
    s = Structure(
        numbers=np.array([6, 6, 8, 1]), positions=np.array([[0.0, 0, 0], [1.3, 0, 0], [2.5, 0, 0], [3.5, 0, 0]])
    )
    net = model(forces="conservative", chiral=chiral)
    b = batch_of([s])
    forces = net(b).forces.detach()
    assert torch.isfinite(forces).all() and forces.abs().max() > 1e-6
    eps = 1e-6
    for atom, axis in [(1, 1), (2, 2), (0, 0)]:  # off-axis displacements bend the chain
        shift = torch.zeros_like(b.pos)
        shift[atom, axis] = eps
        e_plus = net(b.replace(pos=b.pos + shift)).energy.sum().detach()
        e_minus = net(b.replace(pos=b.pos - shift)).energy.sum().detach()
        numeric = -(e_plus - e_minus) / (2 * eps)  # error measured falling as eps^2 (1.4e-7 on 3.2 at 1e-6)
        assert abs(numeric - forces[atom, axis]) < 1e-7 * max(1.0, abs(float(numeric)))


@pytest.mark.parametrize("sorted_rows", [True, False])
def test_grouping_sum_segment_and_padded_paths_agree(monkeypatch, sorted_rows):
    """`Grouping.sum` sums outer products with a segment sum when S * C is small and through the padded bmm
    otherwise: the two give the same sums and the same gradients (sorted rows take the CSR segment sum)."""
    import symscale.models.gemnet_oc as gemnet

    g = torch.Generator().manual_seed(1)
    out = torch.randint(0, 7, (40,), generator=g)
    out = out.sort().values if sorted_rows else out
    group = Grouping.of(out, 8)  # output 7 (and maybe others) has no rows
    basis = torch.randn(40, 5, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64, requires_grad=True)
    results = []
    for limit in (0, 10_000):  # padded, then segment
        monkeypatch.setattr(gemnet, "SEGMENT_MAX_OUTER", limit)
        y = group.sum(basis, x)
        results.append((y, *torch.autograd.grad((y * y).sum(), (basis, x))))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_graph_indices_built_once_per_batch_and_rebuilt_when_lengths_change():
    """The triplet and quadruplet index structures are cached on the batch's edge_index: a second forward of
    the same batch reuses them (same objects), the outputs are unchanged, and moved atoms rebuild them."""
    import symscale.models.gemnet_oc as gemnet

    m = model()
    b = batch_of(toy_structures(3, seed=2, min_atoms=5, max_atoms=8))
    out1 = m(b)
    cached = getattr(b.edge_index, gemnet._INDEX_ATTR)[2]
    out2 = m(b)
    assert getattr(b.edge_index, gemnet._INDEX_ATTR)[2] is cached
    torch.testing.assert_close((out1.energy, out1.forces), (out2.energy, out2.forces), rtol=0, atol=0)
    moved = b.replace(pos=b.pos * 1.01)  # same edge_index tensor, other lengths
    e3 = m(moved).energy
    assert getattr(b.edge_index, gemnet._INDEX_ATTR)[2] is not cached
    fresh = batch_of(toy_structures(3, seed=2, min_atoms=5, max_atoms=8))  # its own edge_index, no cache
    fresh = fresh.replace(pos=fresh.pos * 1.01, edge_index=b.edge_index.clone())
    torch.testing.assert_close(e3, m(fresh).energy, rtol=0, atol=0)


def test_graph_indices_cached_on_a_batch_are_freed_with_it():
    """The cache must not keep a batch alive: a training batch that is dropped after its step takes its
    indices with it (a cycle through a view's C++ link to its base kept every batch's, 14 MB a step)."""
    import gc
    import weakref

    m = model()
    b = batch_of(toy_structures(3, seed=4, min_atoms=5, max_atoms=8))
    m(b).energy.sum().backward()
    edge_index = weakref.ref(b.edge_index)
    del b
    gc.collect()
    assert edge_index() is None


def test_graph_indices_from_inference_mode_do_not_reach_training():
    """A batch first seen under inference mode (validation) and then trained on keeps working: the indices
    built as inference tensors are not handed to a forward that autograd records."""
    m = model()
    structures = toy_structures(2, seed=3, min_atoms=5, max_atoms=7)
    b = batch_of(structures)
    with torch.inference_mode():
        expected = m(b).energy
    out = m(b)
    out.energy.sum().backward()  # would raise on an inference index saved for backward
    torch.testing.assert_close(out.energy.detach(), expected, rtol=0, atol=1e-12)
    with torch.inference_mode():  # a batch made under inference mode has no version counter: not cached
        inner = batch_of(structures)
        torch.testing.assert_close(m(inner).energy, expected, rtol=0, atol=1e-12)
