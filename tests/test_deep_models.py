"""Deep predictors (mlp, fusion): loss and ensemble arithmetic pinned by hand, the low-rank basis
(centred on the mean or on wmean), the per-compound contest loss, retrieval support without self-leakage on the shared search, heads that own their loss and
warm-up, a composition without overrides, determinism, state round trip, and two behaviour tests
on small chemistry-driven data (fusion beats the mean under a scaffold split; predicted std
ranks planted heteroscedastic noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from scipy.stats import spearmanr

from drugcell.chem.fingerprints import search_similar, tanimoto, top_k_similar
from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.models import make_predictor
from drugcell.models.baselines import weighted_mean_profile
from drugcell.models.deep.ensemble import EnsembleAccumulator, ensemble_moments
from drugcell.models.deep.features import EmbeddingFeatures
from drugcell.models.deep.heads import MeanHead, MeanVarianceHead, gaussian_nll
from drugcell.models.deep.lowrank import ResidualBasis, mejia_gene_scale
from drugcell.models.deep.predictor import LowRankDeepPredictor
from drugcell.models.deep.retrieval import RetrievalSupport, support_scalars
from drugcell.models.deep.weighting import CompoundWeightedLoss
from drugcell.models.fusion import FUSION_DEFAULTS
from drugcell.splits.folds import make_folds

# ----------------------------------------------------------------------------- small chemistry
# Responses depend on substituents shared across ring systems; each ring system (= Murcko
# scaffold) adds its own unpredictable offset, so a scaffold split tests transfer of substructure
# effects to unseen chemotypes.
SCAFFOLDS = ["c1ccccc1", "c1ccncc1", "c1ccc2ccccc2c1", "C1CCCCC1", "c1ccsc1", "c1ccoc1",
             "C1CCNCC1", "c1cnccn1", "c1ccc2[nH]ccc2c1", "C1CCOCC1", "c1ccc(cc1)-c1ccccc1",
             "c1cc[nH]c1", "C1CCCC1", "c1ncncn1", "c1ccc2ncccc2c1", "C1CCC2CCCCC2C1",
             "c1cnc2ccccc2n1", "C1CC1", "c1ccc2occc2c1", "c1ccc2sccc2c1"]
SUBS = ["F", "Cl", "Br", "N", "O", "C(=O)O", "C(F)(F)F", "OC", "C#N", "C(N)=O", "CC", "CCCC"]


def _attach(scaffold: str, subs: list[str], rng) -> str | None:
    mol = Chem.RWMol(Chem.MolFromSmiles(scaffold))
    sites = [a.GetIdx() for a in mol.GetAtoms() if a.GetTotalNumHs() > 0 and a.GetSymbol() == "C"]
    for site, sub in zip(rng.choice(sites, size=min(len(subs), len(sites)), replace=False), subs):
        offset = mol.GetNumAtoms()
        mol = Chem.RWMol(Chem.CombineMols(mol, Chem.MolFromSmiles(sub)))
        mol.AddBond(int(site), offset, Chem.BondType.SINGLE)
    out = mol.GetMol()
    try:
        Chem.SanitizeMol(out)
    except Exception:
        return None
    return Chem.MolToSmiles(out)


def make_chem_data(n=320, n_genes=60, seed=0, noise=0.1, hetero=False, scaffold_effect=0.1):
    """(ExpressionSet, true per-compound noise std). Hetero: F/Cl compounds are 8x noisier."""
    rng = np.random.default_rng(seed)
    rows, seen = [], set()
    while len(rows) < n:
        scaf = int(rng.integers(len(SCAFFOLDS)))
        subs = [int(s) for s in rng.choice(len(SUBS), size=int(rng.integers(1, 4)), replace=False)]
        smi = _attach(SCAFFOLDS[scaf], [SUBS[s] for s in subs], rng)
        if smi and smi not in seen:
            seen.add(smi)
            rows.append((smi, scaf, subs))
    programs = rng.normal(size=(5, n_genes))
    loading = rng.normal(size=(len(SUBS), 5))
    offsets = rng.normal(size=(len(SCAFFOLDS), n_genes)) * scaffold_effect
    base = rng.uniform(3, 6, size=n_genes)
    expr, sd = [], []
    for _smi, scaf, subs in rows:
        s = noise * (8.0 if hetero and (0 in subs or 1 in subs) else 1.0)
        sd.append(s)
        expr.append(base + 0.4 * loading[subs].sum(0) @ programs + offsets[scaf]
                    + rng.normal(size=n_genes) * s)
    expr = np.maximum(np.asarray(expr, np.float32), 0)
    w = rng.uniform(0.5, 1.5, size=(n_genes, n)).astype(np.float32)
    es = ExpressionSet(
        compounds=[f"c{i}" for i in range(n)], genes=[f"g{j:03d}" for j in range(n_genes)],
        expression=expr, weights=w / w.sum(0), n_replicates=np.full(n, 2), control=base,
        smiles=[r[0] for r in rows], inchikey=[""] * n)
    return es, np.asarray(sd)


def wmse(es: ExpressionSet, idx: np.ndarray, pred: np.ndarray) -> float:
    """Plain contest formula: mean over compounds of sum_g W[g, c] (pred - truth)^2."""
    w = es.weights[:, idx].T.astype(np.float64)
    return float(np.mean(np.sum(w * (pred - es.expression[idx]) ** 2, axis=1)))


SMALL = {"rank": 8, "hidden": [64], "epochs": 30, "patience": 5, "batch_size": 64, "lr": 3e-3,
         "inner_folds": 5}


@pytest.fixture(scope="module")
def chem_split():
    es, sd = make_chem_data(hetero=True)
    folds = make_folds(list(es.smiles), "scaffold", n_folds=4, seed=0).folds
    return es, sd, np.where(folds != 0)[0], np.where(folds == 0)[0]


@pytest.fixture(scope="module")
def fitted_fusion(chem_split):
    es, _, tr, _ = chem_split
    return make_predictor("fusion", **SMALL, n_members=3, warmup_epochs=3).fit(es.subset(tr), seed=1)


# ----------------------------------------------------------------------------- arithmetic
def test_gaussian_nll_matches_hand_formula_and_torch():
    mu = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    var = torch.tensor([[1.0, 4.0], [0.25, 2.0]])
    y = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # by hand: 0.5*(log v + (y-mu)^2/v) per element
    hand = [0.5 * (0 + 1), 0.5 * (math.log(4) + 0), 0.5 * (math.log(0.25) + 4.0), 0.5 * (math.log(2) + 0.5)]
    assert float(gaussian_nll(mu, var, y)) == pytest.approx(sum(hand) / 4, abs=1e-6)
    # torch's GaussianNLLLoss (full=False, mean reduction) is the same parametrisation
    ref = torch.nn.GaussianNLLLoss(full=False, eps=1e-6, reduction="mean")(mu, y, var)
    assert float(gaussian_nll(mu, var, y)) == pytest.approx(float(ref), abs=1e-6)
    # beta-NLL multiplies each element by var**beta
    beta = sum(h * v ** 0.5 for h, v in zip(hand, [1.0, 4.0, 0.25, 2.0])) / 4
    assert float(gaussian_nll(mu, var, y, beta=0.5)) == pytest.approx(beta, abs=1e-6)


def test_ensemble_variance_by_hand():
    means = np.array([[1.0, 0.0], [3.0, 0.0]])          # 2 members, 2 cells
    variances = np.array([[0.5, 1.0], [1.5, 3.0]])
    mu, total, ale, epi = ensemble_moments(means, variances)
    np.testing.assert_allclose(mu, [2.0, 0.0])
    np.testing.assert_allclose(ale, [1.0, 2.0])          # mean of member variances
    np.testing.assert_allclose(epi, [1.0, 0.0])          # ((1-2)^2 + (3-2)^2) / 2
    np.testing.assert_allclose(total, [2.0, 2.0])
    rng = np.random.default_rng(0)
    m, v = rng.normal(5, 1, size=(5, 3, 4)), rng.uniform(0.1, 1, size=(5, 3, 4))
    acc = EnsembleAccumulator()
    for i in range(5):
        acc.add(m[i], v[i])
    for got, want in zip(acc.result(), ensemble_moments(m, v)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- low-rank basis
def test_residual_basis_reconstructs_and_maps_variance():
    rng = np.random.default_rng(1)
    n, g = 80, 30
    Y = (rng.normal(size=(n, 3)) @ rng.normal(size=(3, g)) + 4).astype(np.float32)
    scale = rng.uniform(0.5, 2, size=g).astype(np.float32)
    b = ResidualBasis.fit(Y, rank=3, gene_scale=scale)
    np.testing.assert_allclose(b.decode(b.encode(Y)), Y, atol=1e-4)
    assert b.resid_var.max() < 1e-8
    # decode_var against the plain sum over components
    zvar = rng.uniform(0.1, 1, size=(2, 3)).astype(np.float32)
    slow = np.array([[sum(zvar[i, k] * (b.components[k, j] / scale[j]) ** 2 for k in range(3))
                      for j in range(g)] for i in range(2)])
    np.testing.assert_allclose(b.decode_var(zvar, include_resid=False), slow, rtol=1e-5)
    # with noise outside the basis: resid_var is the per-gene mean square outside, q averages 1
    Yn = Y + rng.normal(size=Y.shape).astype(np.float32) * np.linspace(0.1, 1, n)[:, None]
    bn = ResidualBasis.fit(Yn, rank=3)
    E = (Yn - bn.mean) - (Yn - bn.mean) @ bn.components.T @ bn.components
    np.testing.assert_allclose(bn.resid_var, (E ** 2).mean(0), rtol=1e-4)
    q = bn.outside_ratio(Yn)
    assert q.mean() == pytest.approx(1.0, abs=1e-3)
    assert spearmanr(q, np.arange(n)).statistic > 0.9   # noisier rows have larger q
    state = bn.get_state()
    np.testing.assert_array_equal(ResidualBasis.from_state(state).decode(bn.encode(Yn)),
                                  bn.decode(bn.encode(Yn)))


def test_basis_around_another_centre_keeps_the_mean_offset():
    """Around a centre that is not the mean, the residuals (offset included) are what the SVD
    sees: an offset outside the span of the variation takes one direction of the basis."""
    rng = np.random.default_rng(4)
    n, g = 60, 25
    center = rng.uniform(2, 5, size=g).astype(np.float32)
    offset = rng.normal(size=g).astype(np.float32)          # the mean residual around the centre
    Y = (center + offset + rng.normal(size=(n, 3)) @ rng.normal(size=(3, g))).astype(np.float32)
    b = ResidualBasis.fit(Y, rank=4, center=center)
    np.testing.assert_array_equal(b.mean, center)
    np.testing.assert_allclose(b.decode(b.encode(Y)), Y, atol=1e-4)
    assert b.resid_var.max() < 1e-8
    np.testing.assert_allclose(b.decode(np.zeros((1, 4)))[0], center)
    # the default centre is the plain mean, computed as before (float64 accumulation)
    np.testing.assert_array_equal(ResidualBasis.fit(Y, rank=4).mean,
                                  Y.mean(axis=0, dtype=np.float64).astype(np.float32))


def test_mejia_gene_scale_means_one_and_follows_weights():
    w = np.array([[0.1, 0.3], [0.4, 0.6], [0.5, 0.1]], np.float32)   # (G=3, C=2)
    s = mejia_gene_scale(w, power=0.5)
    raw = np.sqrt(w.mean(1))
    np.testing.assert_allclose(s, raw / raw.mean(), rtol=1e-6)
    np.testing.assert_allclose(mejia_gene_scale(w, power=0.0), 1.0)


# ----------------------------------------------------------------------------- per-compound loss
def _tiny_weighted_problem(seed=5, n=6, g=9, k=3):
    rng = np.random.default_rng(seed)
    Y = rng.uniform(1, 4, size=(n, g)).astype(np.float32)
    W = rng.uniform(0, 1, size=(g, n)).astype(np.float32) ** 3
    W /= W.sum(axis=0)
    basis = ResidualBasis.fit(Y, rank=k, gene_scale=mejia_gene_scale(W),
                              center=weighted_mean_profile(Y, W))
    return Y, W, basis


def test_compound_loss_is_the_contest_loss_by_hand():
    Y, W, basis = _tiny_weighted_problem()
    n, g = Y.shape
    k, z_scale = basis.rank, 0.7
    loss = CompoundWeightedLoss(Y, W, basis, z_scale)
    mu = torch.tensor(np.random.default_rng(1).normal(size=(4, k)), dtype=torch.float32, requires_grad=True)
    rows = torch.tensor([3.0, 0.0, 5.0, 3.0])                 # the target column carries the row
    got = loss(mu, rows)
    value = float(got.detach())
    # by hand: the contest loss of each row under its own weights, predicting decode(mu * z_scale)
    pred = basis.mean + (mu.detach().numpy() * z_scale) @ (basis.components / basis.scale)
    r = rows.long().numpy()
    hand = np.mean([sum(W[j, c] * (pred[i, j] - Y[c, j]) ** 2 for j in range(g)) for i, c in enumerate(r)])
    assert value == pytest.approx(hand * g / (k * z_scale ** 2), rel=1e-5)
    # its gradient is the contest loss's: 2 L (W * (pred - y)) per row, in coefficient units
    got.backward()
    L = basis.components / basis.scale
    grad = np.stack([2 * z_scale * (L * W[:, c]) @ (pred[i] - Y[c]) for i, c in enumerate(r)])
    np.testing.assert_allclose(mu.grad.numpy(), grad * g / (k * z_scale ** 2) / len(r), rtol=1e-4, atol=1e-6)
    # chunked (validation-sized batches) and whole agree
    assert float(loss(mu, rows, chunk=1).detach()) == pytest.approx(value, rel=1e-6)
    # the wmean centre is this loss's best constant: zero coefficients beat any shift
    all_rows = torch.arange(n, dtype=torch.float32)
    zero = float(loss(torch.zeros(n, k), all_rows))
    for _ in range(5):
        shift = torch.tensor(np.random.default_rng(_).normal(size=(1, k)) * 0.1, dtype=torch.float32)
        assert float(loss(shift.expand(n, k), all_rows)) > zero


def test_compound_loss_gene_sample_is_unbiased():
    Y, W, basis = _tiny_weighted_problem(n=8, g=40, k=4)
    loss = CompoundWeightedLoss(Y, W, basis, 1.0, n_genes=10)
    mu = torch.tensor(np.random.default_rng(2).normal(size=(8, 4)), dtype=torch.float32)
    rows = torch.arange(8, dtype=torch.float32)
    full = float(loss(mu, rows))                               # sample=False: every gene
    torch.manual_seed(0)
    draws = np.array([float(loss(mu, rows, sample=True)) for _ in range(4000)])
    assert draws.std() > 0 and abs(draws.mean() - full) < 4 * draws.std() / math.sqrt(len(draws))
    assert CompoundWeightedLoss(Y, W, basis, 1.0, n_genes=40).n_genes == 0   # >= G: all genes


@torch.no_grad()
def test_heads_fit_their_mean_to_the_compound_loss():
    Y, W, basis = _tiny_weighted_problem()
    metric = CompoundWeightedLoss(Y, W, basis, 1.0)
    torch.manual_seed(0)
    h, rows = torch.randn(6, 5), torch.arange(6, dtype=torch.float32)[:, None]
    head = MeanHead(5, 3)
    head.metric_loss = metric
    mu, _ = head(h)
    target = torch.cat([torch.randn(6, 3), rows], dim=1)      # plain coefficients, then the row
    head.train()
    assert float(head.loss(mu, None, target, epoch=0)) == pytest.approx(float(metric(mu, rows[:, 0])))
    head.eval()
    assert head.val_criterion(mu, None, target, epoch=0) == pytest.approx(float(metric(mu, rows[:, 0])))
    assert float(head.mean_mse(mu, target)) == pytest.approx(float(torch.mean((mu - target[:, :3]) ** 2)))

    mv = MeanVarianceHead(5, 3, beta=0.5, warmup_epochs=1)
    mv.metric_loss = metric
    mu, var = mv(h)
    target = torch.cat([torch.randn(6, 4), rows], dim=1)      # + the outside-basis column
    mu_full = torch.cat([mu, torch.zeros(6, 1)], dim=1)
    assert float(mv.loss(mu, var, target, epoch=0)) == pytest.approx(float(metric(mu, rows[:, 0])))
    want = 0.5 * float(metric(mu, rows[:, 0])) + float(gaussian_nll(mu_full, var, target[:, :4], beta=0.5))
    assert float(mv.loss(mu, var, target, epoch=1)) == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------- retrieval support
def test_support_scalars_match_rdkit_and_exclude_self():
    smiles = ["CCO", "CCN", "CCCO", "c1ccccc1O", "c1ccccc1N", "CC(=O)O", "CCO"]
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [gen.GetFingerprint(m) for m in mols]
    bits = np.array([gen.GetFingerprintAsNumPy(m) for m in mols], np.uint8)
    got = support_scalars(bits, bits, k=2, threshold=0.3, exclude_self=True, block_rows=3)
    for i in range(len(smiles)):
        sims = np.array([DataStructs.TanimotoSimilarity(fps[i], fps[j]) for j in range(len(smiles)) if j != i])
        top = np.sort(sims)[::-1][:2]
        assert got[i, 0] == pytest.approx(top[0], abs=1e-6)
        assert got[i, 1] == pytest.approx(top.mean(), abs=1e-6)
        assert got[i, 2] == pytest.approx(math.log1p((sims >= 0.3).sum()), abs=1e-6)
    # the duplicate "CCO" sees its twin (another training compound) but never itself
    assert got[0, 0] == pytest.approx(1.0) and got[1, 0] < 1.0
    # without exclusion every compound's max is itself
    np.testing.assert_allclose(support_scalars(bits, bits, k=2)[:, 0], 1.0)


def test_search_counts_in_the_same_pass_as_top_k():
    rng = np.random.default_rng(3)
    bits = (rng.random((40, 64)) < 0.2).astype(np.uint8)
    sims = tanimoto(bits, bits)
    np.fill_diagonal(sims, -1.0)
    found = search_similar(bits, bits, 5, exclude_self=True, count_at_least=0.25, block_rows=7)
    np.testing.assert_array_equal(found.n_at_least, (sims >= 0.25).sum(axis=1))
    idx, sim = top_k_similar(bits, bits, 5, exclude_self=True)
    np.testing.assert_array_equal(found.indices, idx)
    np.testing.assert_array_equal(found.similarities, sim)
    assert search_similar(bits, bits, 5).n_at_least is None


# ----------------------------------------------------------------------------- heads
@torch.no_grad()
def test_heads_own_their_loss_and_warm_up():
    torch.manual_seed(0)
    h = torch.randn(6, 4)
    target = torch.randn(6, 4)                       # 3 coefficients + the outside-basis column
    mean_head = MeanHead(4, 3)
    mu, var = mean_head(h)
    assert var is None and not MeanHead.predicts_variance and set(mean_head.state_dict()) == {"weight", "bias"}
    mse = torch.mean((mu - target[:, :3]) ** 2)
    assert float(mean_head.loss(mu, var, target, epoch=0)) == pytest.approx(float(mse))
    assert mean_head.judges(0) and mean_head.val_criterion(mu, var, target, epoch=0) == pytest.approx(float(mse))

    mv = MeanVarianceHead(4, 3, beta=0.5, warmup_epochs=2)
    mu, var = mv(h)
    assert MeanVarianceHead.predicts_variance and var.shape == (6, 4) and bool((var > 0).all())
    mu_full = torch.cat([mu, torch.zeros(6, 1)], dim=1)   # the outside-basis column has mean 0
    for epoch in (0, 1):                               # warm-up: MSE of the means, not judged
        assert not mv.judges(epoch)
        assert float(mv.loss(mu, var, target, epoch=epoch)) == pytest.approx(float(torch.mean((mu - target[:, :3]) ** 2)))
    assert mv.judges(2)
    assert float(mv.loss(mu, var, target, epoch=2)) == pytest.approx(float(gaussian_nll(mu_full, var, target, beta=0.5)))
    assert mv.val_criterion(mu, var, target, epoch=2) == pytest.approx(float(gaussian_nll(mu_full, var, target)))


# ----------------------------------------------------------------------------- models
def test_params_are_validated():
    with pytest.raises(DrugcellInputError, match="hidden"):
        make_predictor("mlp", hidden=[])
    with pytest.raises(DrugcellInputError, match="baseline"):
        make_predictor("mlp", baseline="median")
    with pytest.raises(DrugcellInputError, match="loss_weighting"):
        make_predictor("fusion", loss_weighting="genes")
    with pytest.raises(DrugcellInputError, match="loss_genes"):
        make_predictor("mlp", loss_genes=-1)
    with pytest.raises(DrugcellInputError, match="support_threshold"):
        make_predictor("fusion", support_threshold=0)


def test_mlp_is_deterministic_for_a_seed_on_cpu(chem_split):
    es, _, tr, te = chem_split
    small = {**SMALL, "epochs": 4}
    sub = es.subset(tr[:150])
    smiles = list(es.smiles[te[:20]])
    a = make_predictor("mlp", **small).fit(sub, seed=3).predict(smiles).mean
    b = make_predictor("mlp", **small).fit(sub, seed=3).predict(smiles).mean
    c = make_predictor("mlp", **small).fit(sub, seed=4).predict(smiles).mean
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


def test_mean_baseline_with_gene_loss_is_the_earlier_model(chem_split):
    """baseline="mean", loss_weighting="gene" reproduce the model before both params existed:
    predictions of that model (commit 8f1b38c, same data, seed and settings) pinned here; on the
    machine that recorded them the new code matched them bit for bit (mlp and fusion)."""
    es, _, tr, te = chem_split
    tiny = {"rank": 4, "hidden": [16], "epochs": 2, "patience": 2, "batch_size": 64, "inner_folds": 5}
    model = make_predictor("mlp", **tiny, baseline="mean", loss_weighting="gene").fit(es.subset(tr[:120]), seed=0)
    pred = model.predict(list(es.smiles[te[:4]])).mean
    before = np.array([[4.153245, 4.7723675, 3.2398744, 5.9150887, 5.9832525, 4.6530724],
                       [3.4024386, 4.700269, 3.7069345, 5.2997108, 5.892037, 4.9110985],
                       [3.3928335, 4.696538, 3.5993237, 5.279172, 5.9362473, 4.9046288],
                       [4.0111265, 4.6816463, 3.9308858, 5.6609316, 5.7384324, 4.9054914]])
    np.testing.assert_allclose(pred[:, :6], before, rtol=1e-4)
    np.testing.assert_allclose(pred.mean(axis=1), [4.327714, 4.3948927, 4.393488, 4.3652196], rtol=1e-4)
    np.testing.assert_array_equal(model._basis.mean, es.expression[tr[:120]].mean(axis=0, dtype=np.float64).astype(np.float32))


def test_wmean_baseline_centres_the_basis(chem_split, fitted_fusion):
    es, _, tr, _ = chem_split
    train = es.subset(tr)
    wmean = weighted_mean_profile(train.expression, train.weights)
    assert fitted_fusion.params["baseline"] == "wmean" and fitted_fusion.params["loss_weighting"] == "compound"
    np.testing.assert_array_equal(fitted_fusion._basis.mean, wmean)
    # zero coefficients (what the network gives a compound it cannot read) predict wmean
    np.testing.assert_allclose(fitted_fusion._basis.decode(np.zeros((1, fitted_fusion._basis.rank)))[0], wmean)
    np.testing.assert_allclose(fitted_fusion.predict(["not a smiles"]).mean[0], np.maximum(wmean, 0), atol=1e-6)
    # the training data are not kept with the fitted nets
    assert all(net.head.metric_loss is None for net in fitted_fusion._nets)


def test_state_round_trip_predicts_identically(chem_split, fitted_fusion):
    es, _, _, te = chem_split
    smiles = list(es.smiles[te[:25]]) + ["not a smiles"]
    ref = fitted_fusion.predict(smiles)
    twin = make_predictor("fusion", **fitted_fusion.get_config())
    twin.set_state(fitted_fusion.get_state())
    out = twin.predict(smiles)
    np.testing.assert_array_equal(out.mean, ref.mean)
    np.testing.assert_array_equal(out.std, ref.std)
    assert ref.info["n_fallback"] == 1.0
    # the unparseable compound falls back to the training mean profile
    np.testing.assert_allclose(ref.mean[-1], np.maximum(fitted_fusion._basis.mean, 0), atol=1e-5)


def test_fusion_beats_mean_under_scaffold_split(chem_split, fitted_fusion):
    es, _, tr, te = chem_split
    mean_pred = make_predictor("mean").fit(es.subset(tr)).predict(list(es.smiles[te])).mean
    fus = fitted_fusion.predict(list(es.smiles[te]))
    assert fus.std is not None and np.all(fus.std > 0)
    # substituent effects transfer across scaffolds: well below the mean baseline
    assert wmse(es, te, fus.mean) < 0.5 * wmse(es, te, mean_pred)


def test_predicted_std_ranks_planted_noise(chem_split, fitted_fusion):
    es, sd, _, te = chem_split
    std = fitted_fusion.predict(list(es.smiles[te])).std
    rho = spearmanr(std.mean(axis=1), sd[te]).statistic
    assert rho > 0.3, rho


def test_a_new_composition_needs_no_override(chem_split, fitted_fusion):
    """Providers and head are declarations: retrieval support with a mean head is a new model."""
    es, _, tr, te = chem_split

    class SupportMLP(LowRankDeepPredictor):
        defaults = FUSION_DEFAULTS
        providers = (EmbeddingFeatures, RetrievalSupport)
        head_type = MeanHead

    model = SupportMLP(**{**SMALL, "epochs": 3, "n_members": 2}).fit(es.subset(tr[:150]), seed=0)
    smiles = list(es.smiles[te[:10]])
    out = model.predict(smiles)
    assert out.std is None and out.mean.shape == (10, es.expression.shape[1]) and len(model.history_) == 2
    twin = SupportMLP(**model.get_config())
    twin.set_state(model.get_state())
    np.testing.assert_array_equal(twin.predict(smiles).mean, out.mean)
    # the state layout of the earlier single-class models is kept (plus the training set size)
    state = fitted_fusion.get_state()
    assert {"x_mean", "x_std", "z_scale", "n_members", "ref_bits_packed", "ref_n_bits", "basis.components",
            "net0.body.0.weight", "net0.head.mean.weight", "net0.head.raw_var.weight", "n_train_"} <= set(state)
    assert any(k.startswith("embedder.") for k in state)
    assert "net0.head.weight" in model.get_state()
