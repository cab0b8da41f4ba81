"""NMF gene programs: planted programs are recovered, shares match hand arithmetic, tables and
files say what the factors say, and the CLI writes the documented outputs."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from drugcell.data.expression_set import ExpressionSet
from drugcell.errors import DrugcellInputError
from drugcell.programs import (
    GenePrograms,
    fit_nmf,
    gene_programs,
    norm_shares,
    read_gene_symbols,
    residual_magnitude,
    run_programs,
)


def _planted(seed=0, C=150, G=240, k=4, size=30, noise=0.05):
    """|residual| = W H + noise with k programs on disjoint gene sets."""
    rng = np.random.default_rng(seed)
    H = np.zeros((k, G))
    perm = rng.permutation(G)
    sets = [np.sort(perm[i * size:(i + 1) * size]) for i in range(k)]
    for i, s in enumerate(sets):
        H[i, s] = rng.uniform(0.5, 1.5, size)
    W = rng.gamma(0.5, 1.0, (C, k))
    A = W @ H + np.abs(rng.normal(0, noise, (C, G)))
    return A, W, H, sets


def _jaccard(a, b):
    a, b = set(map(int, a)), set(map(int, b))
    return len(a & b) / len(a | b)


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_programs_are_recovered(seed):
    A, _, _, sets = _planted(seed)
    W, H, _ = fit_nmf(A, rank=4, seed=0)
    found = [np.argsort(-H[k])[:30] for k in range(4)]
    for s in sets:
        best = max(_jaccard(s, f) for f in found)
        assert best >= 0.8, (s, best)
    # each planted program is matched by a different found program
    match = [int(np.argmax([_jaccard(s, f) for f in found])) for s in sets]
    assert sorted(match) == [0, 1, 2, 3]


def test_noise_alone_is_not_a_program():
    """A control for the recovery test: with the planted structure shuffled away, matching fails."""
    rng = np.random.default_rng(3)
    A = np.abs(rng.normal(0, 1, (150, 240)))
    _, _, _, sets = _planted(0)
    W, H, _ = fit_nmf(A, rank=4, seed=0)
    found = [np.argsort(-H[k])[:30] for k in range(4)]
    assert max(_jaccard(s, f) for s in sets for f in found) < 0.5


def test_norm_shares_by_hand():
    # A = diag(3, 4); best rank-1 non-negative fit keeps the 4: residual norm 3, ||A|| = 5.
    A = np.array([[3.0, 0.0], [0.0, 4.0]])
    W = np.array([[0.0], [4.0]])
    H = np.array([[0.0, 1.0]])
    share, sq = norm_shares(A, W, H)
    assert share == pytest.approx(1 - 3 / 5, abs=1e-12)
    assert sq == pytest.approx(1 - 9 / 25, abs=1e-12)
    W2, H2, _ = fit_nmf(A, rank=1)
    share2, sq2 = norm_shares(A, W2, H2)
    assert share2 == pytest.approx(0.4, abs=1e-3)
    assert sq2 == pytest.approx(0.64, abs=1e-3)
    assert np.allclose(W2 @ H2, [[0, 0], [0, 4]], atol=1e-2)
    assert norm_shares(np.zeros((2, 2)), W, H) == (0.0, 0.0)


def test_exact_rank_gives_full_share():
    A = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 5.0]])  # rank 2, non-negative factors
    W, H, _ = fit_nmf(A, rank=2, max_iter=2000, tol=1e-10)
    share, sq = norm_shares(A, W, H)
    assert share == pytest.approx(1.0, abs=1e-3)
    assert sq == pytest.approx(1.0, abs=1e-5)


def test_residual_magnitude_by_hand():
    X = np.array([[1.0, 2.0], [3.0, 6.0]])
    assert np.array_equal(residual_magnitude(X), [[1.0, 2.0], [1.0, 2.0]])  # mean (2, 4)
    assert np.array_equal(residual_magnitude(X, mean=np.array([0.0, 7.0])), [[1.0, 5.0], [3.0, 1.0]])


def test_normalisation_and_order():
    A, *_ = _planted(2)
    W, H, _ = fit_nmf(A, rank=4, seed=0)
    assert np.allclose(np.linalg.norm(H, axis=1), 1.0, atol=1e-5)
    norms = np.linalg.norm(W, axis=0)
    assert np.all(np.diff(norms) <= 0)
    from sklearn.decomposition import NMF

    m = NMF(4, init="nndsvda", solver="cd", max_iter=500, tol=1e-4, random_state=0)
    Wr = m.fit_transform(A.astype(np.float32))
    assert np.allclose(W @ H, Wr @ m.components_, rtol=1e-4, atol=1e-4)  # same factorisation


def test_rank_and_input_checks():
    with pytest.raises(DrugcellInputError, match="rank"):
        fit_nmf(np.ones((3, 4)), rank=5)
    with pytest.raises(DrugcellInputError, match="non-negative"):
        fit_nmf(-np.ones((3, 4)), rank=1)


def _tiny_programs():
    W = np.array([[1.0, 0.0], [0.2, 3.0], [2.0, 0.5]], dtype=np.float32)
    H = np.array([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8]], dtype=np.float32)
    return GenePrograms(W=W, H=H, compounds=np.array(["a", "b", "c"]), genes=np.array(["g1", "g2", "g3"]),
                        symbols=np.array(["S1", "g2", "S3"]), smiles=np.array(["C", "CC", "CCC"]),
                        frobenius_share=0.5, squared_share=0.75, program_norms=np.array([2.0, 1.0]))


def test_tables_by_hand():
    p = _tiny_programs()
    g = p.genes_table(top=2)
    assert g[g.program == 1][["gene_id", "symbol"]].values.tolist() == [["g2", "g2"], ["g1", "S1"]]
    assert g[g.program == 2]["gene_id"].tolist() == ["g3", "g2"]
    assert g[g.program == 1]["share_of_program"].tolist() == pytest.approx([0.8 / 1.4, 0.6 / 1.4])
    c = p.compounds_table(top=2)
    assert c[c.program == 1]["compound"].tolist() == ["c", "a"]
    assert c[c.program == 2][["compound", "smiles"]].values.tolist() == [["b", "CC"], ["c", "CCC"]]
    assert c[c.program == 2]["activity"].tolist() == pytest.approx([3.0, 0.5])


def test_gene_symbols_mapping(tmp_path):
    genes = np.array(["ENSG1", "ENSG2", "ENSG3"])
    # landmark_geneinfo style: gene_id is Entrez, ensembl_id matches the data
    f = tmp_path / "landmark.csv"
    f.write_text("gene_id,gene_symbol,ensembl_id\n10007,GNPDA1,ENSG1\n1001,CDH3,ENSG3.5\n")
    assert read_gene_symbols(f, genes).tolist() == ["GNPDA1", "ENSG2", "CDH3"]
    f2 = tmp_path / "plain.csv"
    f2.write_text("gene_id,symbol\nENSG2,TP53\n")
    assert read_gene_symbols(f2, genes).tolist() == ["ENSG1", "TP53", "ENSG3"]
    bad = tmp_path / "bad.csv"
    bad.write_text("gene_id,description\nENSG1,x\n")
    with pytest.raises(DrugcellInputError, match="symbol column"):
        read_gene_symbols(bad, genes)
    nomatch = tmp_path / "nomatch.csv"
    nomatch.write_text("gene_id,symbol\nX,Y\n")
    with pytest.raises(DrugcellInputError, match="matches any gene"):
        read_gene_symbols(nomatch, genes)


def _es(C=40, G=30, seed=0):
    """An in-memory ExpressionSet whose residual carries two planted programs."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(2, 8, G)
    act = rng.gamma(0.5, 1.0, (C, 2))
    sign = rng.choice([-1.0, 1.0], (C, 2))
    prog = np.zeros((2, G))
    prog[0, :10] = 1.0
    prog[1, 10:20] = 1.0
    X = base + (act * sign) @ prog + rng.normal(0, 0.02, (C, G))
    return ExpressionSet(
        compounds=[f"c{i}" for i in range(C)], genes=[f"ENSG{i:04d}" for i in range(G)],
        expression=X.astype(np.float32), weights=np.full((G, C), 1.0 / G, np.float32),
        n_replicates=np.full(C, 2), control=base.astype(np.float32),
        smiles=["C" * (i % 5 + 1) for i in range(C)], inchikey=[""] * C,
    )


def test_gene_programs_on_signed_residual():
    es = _es()
    p = gene_programs(es.expression, es.compounds, es.genes, rank=2)
    tops = sorted(sorted(np.argsort(-p.H[k])[:10].tolist()) for k in range(2))
    assert tops == [list(range(10)), list(range(10, 20))]
    A = residual_magnitude(es.expression)
    assert (p.frobenius_share, p.squared_share) == pytest.approx(norm_shares(A, p.W, p.H))
    assert p.info["residual_fro_norm"] == pytest.approx(np.linalg.norm(A), rel=1e-5)


def test_run_programs_from_truth_writes_files(tmp_path):
    es = _es()
    cache = es.save(tmp_path / "cache")
    sym = tmp_path / "sym.csv"
    sym.write_text("gene_id,symbol\nENSG0000,ALPHA\n")
    res = run_programs(tmp_path / "out", data=cache, rank=2, top=10, gene_symbols=sym)
    out = tmp_path / "out"
    for name in ("programs_genes.parquet", "programs_compounds.parquet", "programs.md",
                 "programs_heatmap.png", "manifest.json"):
        assert (out / name).is_file(), name
    genes = pd.read_parquet(out / "programs_genes.parquet")
    assert len(genes) == 2 * 10 and set(genes.columns) >= {"program", "rank", "gene_id", "symbol", "loading"}
    expected = np.where(genes["gene_id"] == "ENSG0000", "ALPHA", genes["gene_id"])
    assert genes["symbol"].tolist() == expected.tolist()
    assert "ALPHA" in set(genes["symbol"])  # gene 0 is in the top 10 of its planted program
    pd.testing.assert_frame_equal(genes, res.genes)
    comps = pd.read_parquet(out / "programs_compounds.parquet")
    assert len(comps) == 20 and set(comps["compound"]) <= set(es.compounds)
    man = json.loads((out / "manifest.json").read_text())
    assert man["frobenius_share"] == pytest.approx(res.programs.frobenius_share)
    assert man["data_fingerprint"] == es.fingerprint()
    assert man["config"]["rank"] == 2
    md = (out / "programs.md").read_text()
    assert f"{res.programs.frobenius_share:.4f}" in md
    assert (out / "programs_heatmap.png").read_bytes()[:4] == b"\x89PNG"


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


def test_cli_programs(tmp_path, monkeypatch, capsys):
    from drugcell import cli

    cache = _es().save(tmp_path / "cache")
    monkeypatch.setattr(sys, "argv", ["drugcell", "programs", "--data", str(cache), "--rank", "2",
                                      "--top", "4", "--out", str(tmp_path / "p")])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code in (0, None)
    assert "norm share captured" in capsys.readouterr().out
    assert len(pd.read_parquet(tmp_path / "p" / "programs_genes.parquet")) == 8
    monkeypatch.setattr(sys, "argv", ["drugcell", "programs", "--out", str(tmp_path / "q")])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert "--data" in capsys.readouterr().err
