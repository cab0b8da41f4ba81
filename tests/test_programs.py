"""Signed NMF gene programs: planted up and down programs are recovered (and |R| would merge them),
convergence is reported honestly, shares match hand arithmetic, tables and files say what the
factors say, and the command runs end to end on tiny simulated data."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.programs import (
    GenePrograms,
    fit_nmf,
    gene_programs,
    norm_shares,
    residual_magnitude,
    run_programs,
    signed_parts,
)


def _jaccard(a, b):
    a, b = set(map(int, a)), set(map(int, b))
    return len(a & b) / len(a | b)


def _planted_signed(seed=0, C=200, G=300, size=30, noise=0.05):
    """R = a1 (b_U1 - b_D1) + a2 b_U2 - a3 b_D3 + noise: one program raising U1 while lowering D1,
    one raising U2 only, one lowering D3 only; disjoint gene sets, non-negative activities."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(G)
    sets = dict(zip(("U1", "D1", "U2", "D3"), (np.sort(perm[i * size:(i + 1) * size]) for i in range(4))))

    def loading(s):
        b = np.zeros(G)
        b[s] = rng.uniform(0.5, 1.5, size)
        return b

    a = rng.gamma(0.5, 1.0, (C, 3))
    R = (np.outer(a[:, 0], loading(sets["U1"]) - loading(sets["D1"])) + np.outer(a[:, 1], loading(sets["U2"]))
         - np.outer(a[:, 2], loading(sets["D3"])) + rng.normal(0, noise, (C, G)))
    base = np.linspace(2.0, 8.0, G)  # a mean profile, passed as `mean` so the residual is exactly R
    return base + R, base, sets


def _ids(n, prefix):
    return [f"{prefix}{i}" for i in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_up_and_down_programs_are_recovered(seed):
    X, base, sets = _planted_signed(seed)
    p = gene_programs(X, _ids(200, "c"), _ids(300, "g"), rank=3, mean=base)
    ups = [np.argsort(-p.H_up[k])[:30] for k in range(3)]
    downs = [np.argsort(-p.H_down[k])[:30] for k in range(3)]
    k1 = int(np.argmax([_jaccard(sets["U1"], u) for u in ups]))
    assert _jaccard(sets["U1"], ups[k1]) >= 0.8
    assert _jaccard(sets["D1"], downs[k1]) >= 0.8  # the same program lowers D1 while it raises U1
    k2 = int(np.argmax([_jaccard(sets["U2"], u) for u in ups]))
    k3 = int(np.argmax([_jaccard(sets["D3"], d) for d in downs]))
    assert _jaccard(sets["U2"], ups[k2]) >= 0.8 and _jaccard(sets["D3"], downs[k3]) >= 0.8
    assert sorted([k1, k2, k3]) == [0, 1, 2]
    # the up-only program has (almost) no down loading and vice versa; the mixed one is about half and half
    assert p.up_share[k2] > 0.95 and p.up_share[k3] < 0.05 and 0.3 < p.up_share[k1] < 0.7
    # the genes table says the same with a direction column and signed loadings
    t = p.genes_table(top=30)
    mine = t[t["program"] == k1 + 1]
    assert _jaccard([int(g[1:]) for g in mine[mine.direction == "down"]["gene_id"]], sets["D1"]) >= 0.8
    assert (mine[mine.direction == "down"]["loading"] < 0).all() and (mine[mine.direction == "up"]["loading"] > 0).all()


def test_unsigned_factorisation_merges_up_and_down():
    """Why signed: NMF of |R| puts U1 and D1 into one program (its top 60 genes are U1 and D1 together)
    and cannot tell them apart: its top 30 matches neither set, nor does its loading carry a sign."""
    X, base, sets = _planted_signed(0)
    fit = fit_nmf(residual_magnitude(X, mean=base), rank=3)
    both = np.r_[sets["U1"], sets["D1"]]
    k = int(np.argmax([_jaccard(both, np.argsort(-fit.H[j])[:60]) for j in range(3)]))
    assert _jaccard(both, np.argsort(-fit.H[k])[:60]) >= 0.8
    top30 = np.argsort(-fit.H[k])[:30]
    assert _jaccard(sets["U1"], top30) < 0.6 and _jaccard(sets["D1"], top30) < 0.6
    assert (fit.H >= 0).all()


def test_opposite_compounds_get_mirrored_programs():
    """Compounds pushing one gene set up and others pushing it down: two programs, up and down swapped."""
    rng = np.random.default_rng(5)
    C, G = 120, 60
    b = np.zeros(G)
    b[:15] = 1.0
    act = rng.gamma(1.0, 1.0, C) * np.where(np.arange(C) < C // 2, 1.0, -1.0)
    X = np.outer(act, b) + rng.normal(0, 0.02, (C, G))
    p = gene_programs(X, _ids(C, "c"), _ids(G, "g"), rank=2, mean=np.zeros(G))
    up_prog = int(np.argmax(p.up_share))
    assert sorted(np.argsort(-p.H_up[up_prog])[:15].tolist()) == list(range(15))
    assert sorted(np.argsort(-p.H_down[1 - up_prog])[:15].tolist()) == list(range(15))
    # the raising compounds drive the up program, the lowering ones the mirrored program
    assert (p.W[: C // 2, up_prog] >= p.W[: C // 2, 1 - up_prog]).mean() > 0.95
    assert (p.W[C // 2:, 1 - up_prog] >= p.W[C // 2:, up_prog]).mean() > 0.95


def test_signed_parts_by_hand():
    X = np.array([[1.0, 2.0], [3.0, 6.0]])  # mean (2, 4): R = [[-1, -2], [1, 2]]
    assert np.array_equal(signed_parts(X), [[0, 0, 1, 2], [1, 2, 0, 0]])
    assert np.array_equal(signed_parts(X, mean=np.array([0.0, 7.0])), [[1, 0, 0, 5], [3, 0, 0, 1]])
    R = X - X.mean(0)
    assert np.linalg.norm(signed_parts(X)) == pytest.approx(np.linalg.norm(R))  # ||A||_F = ||R||_F
    assert np.array_equal(residual_magnitude(X), [[1.0, 2.0], [1.0, 2.0]])


def test_norm_shares_by_hand():
    # A = diag(3, 4); best rank-1 non-negative fit keeps the 4: residual norm 3, ||A|| = 5.
    A = np.array([[3.0, 0.0], [0.0, 4.0]])
    W = np.array([[0.0], [4.0]])
    H = np.array([[0.0, 1.0]])
    share, sq = norm_shares(A, W, H)
    assert share == pytest.approx(1 - 3 / 5, abs=1e-12)
    assert sq == pytest.approx(1 - 9 / 25, abs=1e-12)
    fit = fit_nmf(A, rank=1)
    share2, sq2 = norm_shares(A, fit.W, fit.H)
    assert share2 == pytest.approx(0.4, abs=1e-3)
    assert sq2 == pytest.approx(0.64, abs=1e-3)
    assert np.allclose(fit.W @ fit.H, [[0, 0], [0, 4]], atol=1e-2)
    assert norm_shares(np.zeros((2, 2)), W, H) == (0.0, 0.0)


def test_signed_shares_by_hand():
    """R = [[2, -1], [-2, 1]] (mean 0): A = [[2, 0, 0, 1], [0, 1, 2, 0]], two orthogonal rank-one
    parts, so rank 1 keeps the larger (norm sqrt 5 each: either) and rank 2 keeps all."""
    X = np.array([[2.0, -1.0], [-2.0, 1.0]])
    p1 = gene_programs(X, ["a", "b"], ["g1", "g2"], rank=1, mean=np.zeros(2), max_iter=2000, tol=1e-10)
    assert p1.squared_share == pytest.approx(0.5, abs=1e-4)  # ||A||^2 = 10, error 5
    assert p1.frobenius_share == pytest.approx(1 - np.sqrt(0.5), abs=1e-4)
    assert p1.reconstruction_error == pytest.approx(np.sqrt(5), abs=1e-3)
    p2 = gene_programs(X, ["a", "b"], ["g1", "g2"], rank=2, mean=np.zeros(2), max_iter=2000, tol=1e-10)
    assert p2.frobenius_share == pytest.approx(1.0, abs=1e-3)
    up = int(np.argmax(p2.W[0]))  # compound a: g1 up, g2 down
    assert p2.H[up] / np.linalg.norm(p2.H[up]) == pytest.approx([2 / np.sqrt(5), -1 / np.sqrt(5)], abs=1e-3)


def test_convergence_is_reported_honestly():
    X, base, _ = _planted_signed(0)
    A = signed_parts(X, base)
    short = fit_nmf(A, rank=3, max_iter=2)
    assert (short.n_iter, short.max_iter, short.converged) == (2, 2, False)
    assert "Maximum number of iterations" in short.warning  # scikit-learn's own warning, captured
    done = fit_nmf(A, rank=3, max_iter=500)
    assert done.converged and done.warning is None and done.n_iter < 500 and done.error_drift is None
    from sklearn.decomposition import NMF

    ref = NMF(3, init="nndsvda", solver="cd", max_iter=500, tol=1e-4, random_state=0)
    ref.fit(A)
    assert done.n_iter == ref.n_iter_  # the count is scikit-learn's, not ours
    # the drift of a stopped fit: 10 more iterations from where it stopped, by hand
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = NMF(3, init="nndsvda", solver="cd", max_iter=2, tol=1e-4, random_state=0)
        Wa = a.fit_transform(A)
        b = NMF(3, init="custom", solver="cd", max_iter=10, tol=1e-4, random_state=0)
        Wb = b.fit_transform(A, W=Wa.copy(), H=a.components_.copy())
    e1 = np.linalg.norm(A.astype(np.float64) - Wa.astype(np.float64) @ a.components_)
    e2 = np.linalg.norm(A.astype(np.float64) - Wb.astype(np.float64) @ b.components_)
    assert short.error_drift == pytest.approx((e1 - e2) / e1, rel=1e-4) and short.error_drift > 0.01
    with pytest.warns(ConvergenceWarning, match="--max-iter"):
        p = gene_programs(X, _ids(200, "c"), _ids(300, "g"), rank=3, mean=base, max_iter=2)
    assert not p.converged and p.convergence()["n_iter"] == 2 and p.convergence()["error_drift"] > 0.01
    assert p.reconstruction_error == pytest.approx(np.linalg.norm(A - p.W @ np.hstack([p.H_up, p.H_down])), rel=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn=False: the caller reports it (the command does)
        assert not gene_programs(X, _ids(200, "c"), _ids(300, "g"), rank=3, mean=base, max_iter=2,
                                 warn=False).converged


def test_a_fit_that_starts_at_its_optimum_stops_at_the_limit_but_says_it_costs_nothing():
    """Rank 1 from nndsvda starts at the leading singular pair (the optimum for a non-negative A):
    scikit-learn's criterion, relative to the first sweep's step, is never met, and the report says
    so, with a drift of ~0 so a reader sees that more iterations would change nothing."""
    A = np.abs(np.random.default_rng(0).normal(size=(30, 20)))
    fit = fit_nmf(A, rank=1, max_iter=50)
    assert not fit.converged and fit.n_iter == 50 and "Maximum number of iterations" in fit.warning
    assert fit.error_drift == pytest.approx(0.0, abs=1e-9)
    s = np.linalg.svd(A, compute_uv=False)  # Eckart-Young (Perron-Frobenius: the best rank 1 is non-negative)
    assert np.linalg.norm(A - fit.W @ fit.H) == pytest.approx(np.sqrt((s[1:] ** 2).sum()), rel=1e-5)


def test_exact_rank_gives_full_share():
    A = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 5.0]])  # rank 2, non-negative factors
    fit = fit_nmf(A, rank=2, max_iter=2000, tol=1e-10)
    share, sq = norm_shares(A, fit.W, fit.H)
    assert share == pytest.approx(1.0, abs=1e-3)
    assert sq == pytest.approx(1.0, abs=1e-5)


def test_normalisation_and_order():
    X, base, _ = _planted_signed(2)
    A = signed_parts(X, base)
    fit = fit_nmf(A, rank=3, seed=0)
    assert np.allclose(np.linalg.norm(fit.H, axis=1), 1.0, atol=1e-5)
    assert np.all(np.diff(np.linalg.norm(fit.W, axis=0)) <= 0)
    from sklearn.decomposition import NMF

    m = NMF(3, init="nndsvda", solver="cd", max_iter=500, tol=1e-4, random_state=0)
    Wr = m.fit_transform(A)
    assert np.allclose(fit.W @ fit.H, Wr @ m.components_, rtol=1e-4, atol=1e-4)  # same factorisation


def test_rank_and_input_checks():
    with pytest.raises(DrugcellInputError, match="rank"):
        fit_nmf(np.ones((3, 4)), rank=5)
    with pytest.raises(DrugcellInputError, match="non-negative"):
        fit_nmf(-np.ones((3, 4)), rank=1)
    with pytest.raises(DrugcellInputError, match="does not match"):
        gene_programs(np.ones((3, 4)), ["a", "b"], ["g"] * 4, rank=1)


def _tiny_programs(names=None):
    W = np.array([[1.0, 0.0], [0.2, 3.0], [2.0, 0.5]], dtype=np.float32)
    H_up = np.array([[0.6, 0.0, 0.0], [0.0, 0.0, 0.6]], dtype=np.float32)
    H_down = np.array([[0.0, 0.8, 0.0], [0.0, 0.8, 0.0]], dtype=np.float32)
    return GenePrograms(W=W, H_up=H_up, H_down=H_down, compounds=np.array(["a", "b", "c"]),
                        genes=np.array(["g1", "g2", "g3"]), symbols=np.array(["S1", "g2", "S3"]),
                        smiles=np.array(["C", "CC", "CCC"]), frobenius_share=0.5, squared_share=0.75,
                        program_norms=np.array([2.0, 1.0]), names=names)


def test_tables_by_hand():
    p = _tiny_programs(names=np.array(["aspirin", "", "caffeine"], dtype=object))
    g = p.genes_table(top=2)
    p1 = g[g.program == 1]
    assert p1[["direction", "gene_id", "symbol"]].values.tolist() == [["up", "g1", "S1"], ["down", "g2", "g2"]]
    assert p1["loading"].tolist() == pytest.approx([0.6, -0.8])
    assert p1["share_of_program"].tolist() == pytest.approx([0.6 / 1.4, 0.8 / 1.4])
    assert g[g.program == 2][["direction", "gene_id"]].values.tolist() == [["up", "g3"], ["down", "g2"]]
    assert p.up_share == pytest.approx([0.36, 0.36])
    assert np.allclose(p.H, [[0.6, -0.8, 0.0], [0.0, -0.8, 0.6]])
    c = p.compounds_table(top=2)
    assert c[c.program == 1][["compound", "compound_name"]].values.tolist() == [["c", "caffeine"], ["a", "aspirin"]]
    assert c[c.program == 2][["compound", "smiles"]].values.tolist() == [["b", "CC"], ["c", "CCC"]]
    assert c[c.program == 2]["activity"].tolist() == pytest.approx([3.0, 0.5])
    assert (_tiny_programs().compounds_table()["compound_name"] == "").all()


def _es(C=40, G=30, seed=0):
    """An in-memory ExpressionSet whose residual carries two planted programs, each pushed up by
    some compounds and down by others."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(2, 8, G)
    act = rng.gamma(0.5, 1.0, (C, 2))
    sign = rng.choice([-1.0, 1.0], (C, 2))
    prog = np.zeros((2, G))
    prog[0, :10] = 1.0
    prog[1, 10:20] = 1.0
    X = base + (act * sign) @ prog + rng.normal(0, 0.02, (C, G))
    return ExpressionSet(
        compounds=[f"c{i}" for i in range(C)], genes=[f"ENSG{i:011d}" for i in range(G)],
        expression=X.astype(np.float32), weights=np.full((G, C), 1.0 / G, np.float32),
        n_replicates=np.full(C, 2), control=base.astype(np.float32),
        smiles=["C" * (i % 5 + 1) for i in range(C)], inchikey=[""] * C,
    )


def test_gene_programs_on_signed_residual():
    """Each planted set, pushed both ways, gives an up program and a down program (rank 4)."""
    es = _es()
    p = gene_programs(es.expression, es.compounds, es.genes, rank=4)
    found = sorted((d, sorted(np.argsort(-h[k])[:10].tolist()))
                   for k in range(4) for d, h in (("up", p.H_up), ("down", p.H_down)) if h[k].max() > 0.2)
    assert found == [("down", list(range(10))), ("down", list(range(10, 20))),
                     ("up", list(range(10))), ("up", list(range(10, 20)))]
    A = signed_parts(es.expression)
    assert (p.frobenius_share, p.squared_share) == pytest.approx(
        norm_shares(A, p.W, np.hstack([p.H_up, p.H_down])), abs=1e-9)
    assert p.info["residual_fro_norm"] == pytest.approx(
        np.linalg.norm(es.expression - es.expression.mean(0)), rel=1e-5)


def test_run_programs_from_truth_writes_files(tmp_path):
    es = _es()
    cache = es.save(tmp_path / "cache")
    sym = tmp_path / "sym.csv"
    sym.write_text("ensembl_id,symbol\nENSG00000000000,ALPHA\n")
    res = run_programs(tmp_path / "out", data=cache, rank=4, top=10, gene_symbols=sym)
    out = tmp_path / "out"
    genes = pd.read_parquet(out / "programs_genes.parquet")
    assert set(genes.columns) >= {"program", "direction", "rank", "gene_id", "symbol", "loading"}
    assert set(genes["direction"]) == {"up", "down"}
    # the user's file first, then the built-in table (ENSG00000000003 is TSPAN6, ...05 TNMD), else the id
    known = {"ENSG00000000000": "ALPHA", "ENSG00000000003": "TSPAN6", "ENSG00000000005": "TNMD"}
    assert genes["symbol"].tolist() == [known.get(g, g) for g in genes["gene_id"]]
    assert {"ALPHA", "TSPAN6"} <= set(genes["symbol"])
    pd.testing.assert_frame_equal(genes, res.genes)
    comps = pd.read_parquet(out / "programs_compounds.parquet")
    assert len(comps) == 4 * 10 and set(comps["compound"]) <= set(es.compounds)
    man = json.loads((out / "manifest.json").read_text())
    assert man["frobenius_share"] == pytest.approx(res.programs.frobenius_share)
    assert man["data_fingerprint"] == es.fingerprint()
    assert man["config"]["rank"] == 4 and man["config"]["max_iter"] == 500
    assert man["nmf"]["converged"] is True and man["nmf"]["n_iter"] == res.programs.n_iter < 500
    assert man["nmf"]["reconstruction_error"] == pytest.approx(res.programs.reconstruction_error)
    assert man["annotations"]["gene symbols"]["n_mapped"] == 3
    md = (out / "programs.md").read_text()
    assert f"{res.programs.frobenius_share:.4f}" in md
    assert f"NMF converged in {res.programs.n_iter} iterations" in md
    assert "| up genes | down genes |" in md
    assert (out / "programs_heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_run_programs_not_converged_says_so(tmp_path):
    cache = _es().save(tmp_path / "cache")
    res = run_programs(tmp_path / "out", data=cache, rank=4, max_iter=2)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["nmf"]["converged"] is False and man["converged"] is False
    assert man["nmf"]["n_iter"] == 2 and "Maximum number of iterations" in man["nmf"]["convergence_warning"]
    assert "NMF did not converge" in res.markdown and "--max-iter" in res.markdown


def test_out_folder_rules(tmp_path):
    cache = _es().save(tmp_path / "cache")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DrugcellInputError, match="never writes into it"):
        run_programs(mine, data=cache, rank=2, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    run_programs(tmp_path / "p", data=cache, rank=2)
    with pytest.raises(DrugcellInputError, match="--overwrite"):
        run_programs(tmp_path / "p", data=cache, rank=3)
    (tmp_path / "p" / "stale.txt").write_text("from before")
    run_programs(tmp_path / "p", data=cache, rank=3, overwrite=True)
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["config"]["rank"] == 3
    assert not (tmp_path / "p" / "stale.txt").exists()  # cleared first: never two runs mixed


def _fake_run(tmp_path, es, pred):
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    pd.DataFrame({"compound": es.compounds.astype(str), "fold": 0, "scaffold": "",
                  "smiles": es.smiles.astype(str)}).to_parquet(run / "folds.parquet")
    (run / "manifest.json").write_text(json.dumps({"data_fingerprint": es.fingerprint(),
                                                   "data_info": {"path": es.info.get("path")}}))
    np.save(run / "predictions" / "knn.npy", pred.astype(np.float32))
    return run / "predictions" / "knn.npy"


def test_run_programs_from_predictions(tmp_path):
    es = _es()
    cache = es.save(tmp_path / "cache")
    es = ExpressionSet.load(cache)
    pred = es.expression[:, ::-1].copy()  # any matrix: the programs must be of *this* one
    path = _fake_run(tmp_path, es, pred)
    res = run_programs(tmp_path / "out", predictions=path, rank=2, top=3)  # genes via the manifest
    direct = gene_programs(pred, es.compounds, es.genes, rank=2)
    assert np.allclose(res.programs.W @ res.programs.H, direct.W @ direct.H, atol=1e-5)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["config"]["source"] == "predictions:knn"

    other = _es(seed=1).save(tmp_path / "other")
    with pytest.raises(DrugcellInputError, match="fingerprint"):
        run_programs(tmp_path / "out2", predictions=path, data=other, rank=2)
    with pytest.raises(DrugcellInputError, match="predictions"):
        run_programs(tmp_path / "out3", predictions=tmp_path / "nope.npy", rank=2)
    man = path.parent.parent / "manifest.json"
    man.write_text(json.dumps({"data_fingerprint": es.fingerprint(), "data_info": {"path": "relative/cache"}}))
    with pytest.raises(DrugcellInputError, match="not found from here"):
        run_programs(tmp_path / "out4", predictions=path, rank=2)
    res4 = run_programs(tmp_path / "out4", predictions=path, data=cache, rank=2)  # --data rescues it
    assert np.allclose(res4.programs.W @ res4.programs.H, direct.W @ direct.H, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """The tiny simulated VCPI set, loaded: its metadata carries compound_name ("SIM-<id>")."""
    from drugcell.data.loader import load_to_cache
    from drugcell.data.simulate import simulate_vcpi

    root = tmp_path_factory.mktemp("tiny")
    files = simulate_vcpi(root / "sim", preset="tiny", seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the simulator's empty wells
        load_to_cache(root / "cache", files["train_counts"], files["train_metadata"], files["train_chemistry"],
                      files["gene_filter"], progress=False)
    return root / "cache", files


def _cli(monkeypatch, *args):
    from drugcell import cli

    monkeypatch.setattr(sys, "argv", ["drugcell", "programs", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return exc.value.code or 0


def test_cli_programs_end_to_end_on_tiny_data(tiny_cache, tmp_path, monkeypatch, capsys):
    cache, files = tiny_cache
    es = ExpressionSet.load(cache)
    assert _cli(monkeypatch, "--data", cache, "--rank", "4", "--top", "5", "--out", tmp_path / "p") == 0
    printed = capsys.readouterr()
    assert "NMF converged in" in printed.out and "norm share captured" in printed.out
    assert "compound names: 150 of 150 from" in printed.out
    genes = pd.read_parquet(tmp_path / "p" / "programs_genes.parquet")
    assert set(genes["direction"]) == {"up", "down"} and genes["rank"].max() <= 5
    comps = pd.read_parquet(tmp_path / "p" / "programs_compounds.parquet")
    assert len(comps) == 4 * 5
    assert (comps["compound_name"] == "SIM-" + comps["compound"]).all()  # names read from the metadata
    man = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert man["data_fingerprint"] == es.fingerprint() and man["nmf"]["converged"] is True
    assert man["annotations"]["compound names"]["source"] == str(files["train_metadata"].resolve())

    # not converged: the command says so, on stderr too, and suggests --max-iter
    assert _cli(monkeypatch, "--data", cache, "--rank", "4", "--max-iter", "2", "--out", tmp_path / "q") == 0
    printed = capsys.readouterr()
    assert "NMF did not converge" in printed.out and "--max-iter" in printed.err

    assert _cli(monkeypatch, "--out", tmp_path / "r") == 2
    assert "--data" in capsys.readouterr().err
    assert _cli(monkeypatch, "--data", cache, "--rank", "2", "--out", tmp_path / "p") == 2  # earlier output
    assert "--overwrite" in capsys.readouterr().err
