"""The DRUG-seq simulator writes the exact VCPI layout, deterministically, with real chemistry signal;
the positive control separates random from scaffold splits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drugcell.data import molecules_library as lib
from drugcell.data import vcpi
from drugcell.data.simulate import METADATA_COLUMNS, simulate_vcpi
from drugcell.errors import DrugcellInputError

DATA_FILES = (
    "train_counts.parquet", "train_metadata.parquet", "train_chemistry.parquet", "gene_filter.csv",
    "test_compounds.csv", "test_truth.parquet", "test_weights.parquet", "sim_compounds.parquet", "sim_programs.parquet",
)
MINI = dict(n_compounds=30, n_genes=300, n_test=5)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate_vcpi(out, n_compounds=160, n_genes=1500, n_test=12, seed=3)
    return out


@pytest.fixture(scope="module")
def frames(sim):
    meta = pd.read_parquet(sim / "train_metadata.parquet")
    counts = pd.read_parquet(sim / "train_counts.parquet")
    chem = pd.read_parquet(sim / "train_chemistry.parquet")
    return meta, counts, chem


def _contest_mask(meta: pd.DataFrame) -> np.ndarray:
    dmso = meta["user_compound_id"] == "DMSO"
    return ((meta["timepoint"] == "24h") & ((meta["compound_concentration"] == 10000.0) | dmso)).to_numpy()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate_vcpi(a, seed=11, **MINI)
    simulate_vcpi(b, seed=11, **MINI)
    simulate_vcpi(c, seed=12, **MINI)
    for name in DATA_FILES:
        assert _digest(a / name) == _digest(b / name), name
    assert _digest(a / "train_counts.parquet") != _digest(c / "train_counts.parquet")
    assert (a / "synth_manifest.json").exists()


def test_counts_layout(sim, frames):
    meta, counts, _ = frames
    schema = pq.read_schema(sim / "train_counts.parquet")
    assert schema.names[0] == "gene_id" and schema.field("gene_id").type == pa.string()
    assert all(schema.field(n).type == pa.int32() for n in schema.names[1:])
    assert schema.names[1:] == meta["sequenced_id"].tolist()
    assert meta["sequenced_id"].map(type).eq(str).all() and meta["sequenced_id"].is_unique
    assert counts["gene_id"].is_unique and counts["gene_id"].is_monotonic_increasing
    assert counts["gene_id"].str.match(r"^ENSG\d{11}$").all()
    assert len(counts) == 1500
    assert (counts.iloc[:, 1:].to_numpy() >= 0).all()


def test_metadata_layout_plates_and_controls(frames):
    meta, _, chem = frames
    assert tuple(meta.columns) == METADATA_COLUMNS and len(METADATA_COLUMNS) == 26
    assert meta["cell_line"].eq("THP-1").all()
    lib_rows = ~meta["is_control"]
    assert meta.loc[lib_rows, "user_compound_id"].str.fullmatch(r"\d+").all()
    assert set(meta.loc[lib_rows, "compound_concentration_unit"]) == {"nM"}
    # every well joins to exactly one chemistry row on the UUID
    assert chem["compound"].is_unique
    assert set(meta["compound"]) <= set(chem["compound"])
    assert chem["inchi_key"].str.match(r"^[A-Z]{14}-[A-Z]{10}-[A-Z]$").all()
    # controls: DMSO plus the four positives, spelled several ways, one UUID each
    ctrl = meta.loc[meta["is_control"]]
    names = ctrl["user_compound_id"].map(vcpi.control_id)   # the loader's own control rule
    assert names.notna().all() and set(names) == set(lib.CONTROLS)
    assert ctrl.groupby(names)["compound"].nunique().eq(1).all()
    assert ctrl.loc[names == "Staurosporine", "user_compound_id"].nunique() > 1
    assert set(meta.loc[meta["user_compound_id"] == "DMSO", "compound_concentration_unit"]) == {"%"}
    # 384-well plates: 16 rows x 24 columns, each position used once per plate, edges flagged
    assert set(meta["row_id"]) <= set("ABCDEFGHIJKLMNOP")
    assert meta["column_id"].between(1, 24).all()
    assert not meta.duplicated(["container_id", "row_id", "column_id"]).any()
    edge = meta["row_id"].isin(["A", "P"]) | meta["column_id"].isin([1, 24])
    assert (meta["is_edge"] == edge).all() and edge.any() and (~edge).any()
    assert meta.groupby("container_id").size().max() <= 384
    assert meta["container_id"].nunique() >= 2
    # about two wells per library compound; a few wells at another condition for the filter
    contest = _contest_mask(meta)
    per = meta.loc[contest & lib_rows.to_numpy()].groupby("user_compound_id").size()
    assert 1.8 <= per.mean() <= 2.2 and per.min() >= 1
    assert (~contest).sum() == 6
    # library sizes: QC columns agree with the counts
    assert (meta["total_umi_count"] == 0).sum() == 1


def test_qc_columns_match_counts(frames):
    meta, counts, _ = frames
    mat = counts.set_index("gene_id")
    lib_size = mat.sum(axis=0)
    assert (lib_size.to_numpy() == meta["total_umi_count"].to_numpy()).all()
    assert ((mat >= 3).sum(axis=0).to_numpy() == meta["ngenes3"].to_numpy()).all()
    mito = mat.loc[mat.index.isin(["ENSG00000198804", "ENSG00000198886", "ENSG00000198888"])]
    assert mito.shape[0] == 3
    ok = lib_size.to_numpy() > 0
    pct = meta["percent_mitochondrial"].to_numpy()[ok]
    assert ((pct > 1) & (pct < 20)).mean() > 0.95


def test_gene_filter_is_mean_cpm_at_least_one(sim, frames):
    meta, counts, _ = frames
    keep = _contest_mask(meta) & (meta["total_umi_count"].to_numpy() > 0)
    ids = meta.loc[keep, "sequenced_id"].tolist()
    # plain formula, one sample at a time
    total = np.zeros(len(counts))
    for s in ids:
        col = counts[s].to_numpy(dtype=float)
        total += col / col.sum() * 1e6
    expected = counts["gene_id"][total / len(ids) >= 1.0].tolist()
    got = pd.read_csv(sim / "gene_filter.csv")["gene_id"].tolist()
    assert got == expected
    assert 0.12 <= len(got) / len(counts) <= 0.22


def test_test_files_layout(sim):
    test = pd.read_csv(sim / "test_compounds.csv", dtype={"compound": str})
    real_cols = [
        "compound", "compound_name", "compound_concentration", "compound_concentration_unit",
        "cell_line", "timepoint", "smiles", "inchi_key",
    ]
    assert list(test.columns) == real_cols and tuple(real_cols) == vcpi.TEST_COMPOUNDS_COLUMNS
    assert len(test) == 12 and test["compound"].is_unique
    truth = pd.read_parquet(sim / "test_truth.parquet")
    genes = pd.read_csv(sim / "gene_filter.csv")["gene_id"]
    assert list(truth.columns) == ["compound", "gene_id", "expression"]
    assert len(truth) == 12 * len(genes)
    assert set(truth["compound"]) == set(test["compound"])
    assert set(truth["gene_id"]) == set(genes)
    assert truth["expression"].ge(0).all() and np.isfinite(truth["expression"]).all()
    chem = pd.read_parquet(sim / "train_chemistry.parquet")
    assert not set(test["smiles"]) & set(chem["smiles"])


def _program_scores(sim: Path, frames) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Library truth (contest scorer), residual over the per-gene median, programs, compounds."""
    from contest_scorer import counts_to_expression

    meta, counts, _ = frames
    keep = _contest_mask(meta) & ~meta["is_control"].to_numpy()
    genes = pd.read_csv(sim / "gene_filter.csv")["gene_id"].tolist()
    sub = meta.loc[keep]
    truth = counts_to_expression(counts[["gene_id", *sub["sequenced_id"]]], sub,
                                 compound_col="user_compound_id", gene_filter=genes)
    mat = truth.pivot(index="compound", columns="gene_id", values="expression")
    resid = mat - mat.median(axis=0)
    programs = pd.read_parquet(sim / "sim_programs.parquet")
    compounds = pd.read_parquet(sim / "sim_compounds.parquet").set_index("user_compound_id").loc[mat.index]
    return resid, programs, compounds


def _projection_gap(resid: pd.DataFrame, loadings: pd.DataFrame, carriers: np.ndarray) -> float:
    """Mean signed response on a program's scored genes: carriers minus the others."""
    g = loadings[loadings["gene_id"].isin(resid.columns)]
    score = (resid[g["gene_id"]].to_numpy() * np.sign(g["loading"].to_numpy())).mean(axis=1)
    return float(score[carriers].mean() - score[~carriers].mean())


def test_chemistry_signal_keys_and_scaffolds(sim, frames):
    """Compounds carrying a structure key move that key's genes the programmed way (a transferable
    signal, strongest for reactive keys); compounds on one template share that template's program."""
    resid, programs, compounds = _program_scores(sim, frames)
    keys = compounds["keys"].fillna("").str.split(";")
    strength = {name: s for name, _, s in lib.PROGRAM_KEYS}
    gaps = {}
    for prog, grp in programs[programs["program"].str.startswith("key:")].groupby("program"):
        key = prog[4:]
        carriers = np.array([key in k for k in keys])
        if carriers.sum() >= 3 and grp["gene_id"].isin(resid.columns).sum() >= 3:
            gaps[key] = _projection_gap(resid, grp, carriers)
    assert len(gaps) >= 10
    assert np.mean([v > 0 for v in gaps.values()]) >= 0.8
    strong = [v for k, v in gaps.items() if strength[k] >= 1.0]
    weak = [v for k, v in gaps.items() if strength[k] < 0.5]
    assert strong and np.mean(strong) > 0.15 and np.mean(strong) > np.mean(weak)
    tgaps = []
    for t, n in compounds["template"].value_counts().items():
        if n >= 5:
            grp = programs[programs["program"] == f"scaffold:{t}"]
            tgaps.append(_projection_gap(resid, grp, compounds["template"].to_numpy() == t))
    assert len(tgaps) >= 5 and np.mean([v > 0 for v in tgaps]) >= 0.8


def test_smiles_file_and_bad_inputs(tmp_path):
    rng = np.random.default_rng(0)
    mols = lib.enumerate_molecules(60, rng)
    f = tmp_path / "mols.smi"
    f.write_text("\n".join(m.smiles for m in mols) + "\n")
    out = tmp_path / "s"
    simulate_vcpi(out, n_compounds=40, n_genes=300, n_test=8, smiles_file=str(f))
    chem = pd.read_parquet(out / "train_chemistry.parquet")
    test = pd.read_csv(out / "test_compounds.csv")
    lib_smiles = set(chem["smiles"]) - {s for s, _ in lib.CONTROLS.values()}
    assert len(lib_smiles) == 40 and lib_smiles | set(test["smiles"]) <= {m.smiles for m in mols}
    with pytest.raises(DrugcellInputError, match="distinct valid molecules"):
        simulate_vcpi(tmp_path / "t", n_compounds=80, n_genes=300, n_test=8, smiles_file=str(f))
    with pytest.raises(DrugcellInputError, match="no such file"):
        simulate_vcpi(tmp_path / "u", n_compounds=40, n_genes=300, smiles_file=str(tmp_path / "none.smi"))
    with pytest.raises(DrugcellInputError, match="preset"):
        simulate_vcpi(tmp_path / "v", preset="huge")


def test_control_names_agree_with_the_loader():
    """The simulator's controls are the loader's: the same canonical ids, every spelling recognised."""
    assert tuple(lib.CONTROLS) == vcpi.CONTROL_IDS
    for canon, (_, spellings) in lib.CONTROLS.items():
        assert [vcpi.control_id(s) for s in spellings] == [canon] * len(spellings)


def test_library_molecules_are_valid_distinct_and_druglike():
    from rdkit import Chem
    from rdkit.Chem import Descriptors
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mols = lib.enumerate_molecules(400, np.random.default_rng(1))
    smiles = [m.smiles for m in mols]
    assert len(set(smiles)) == 400
    parsed = [Chem.MolFromSmiles(s) for s in smiles]
    assert all(p is not None and Chem.MolToSmiles(p) == s for p, s in zip(parsed, smiles))
    mw = np.array([Descriptors.MolWt(p) for p in parsed])
    assert 200 < np.median(mw) < 450
    scaffolds = pd.Series([MurckoScaffold.MurckoScaffoldSmiles(s) for s in smiles]).value_counts()
    assert len(scaffolds) > 50 and scaffolds.iloc[0] > 5 * scaffolds.iloc[-1]


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from drugcell.cli import app

    res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "cli"), "--n-compounds", "20",
                                   "--n-genes", "250", "--n-test", "4", "--seed", "5"])
    assert res.exit_code == 0, res.output
    assert "train_counts.parquet" in res.output and "genes scored" in res.output
    for name in DATA_FILES:
        assert (tmp_path / "cli" / name).exists()


# ----------------------------------------------------------------------------- positive control
def _tanimoto_by_hand(smiles: list[str]) -> np.ndarray:
    """|A & B| / |A | B| on RDKit Morgan bit sets, pair by pair (independent of drugcell.chem)."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    bits = [set(gen.GetFingerprint(Chem.MolFromSmiles(s)).GetOnBits()) for s in smiles]
    n = len(bits)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            u = len(bits[i] | bits[j])
            out[i, j] = out[j, i] = len(bits[i] & bits[j]) / u if u else 0.0
    return out


def _knn_vs_mean(es, sim, test: np.ndarray, train: np.ndarray, k: int = 5) -> tuple[float, float]:
    y, w = es.expression.astype(float), es.weights.astype(float)
    mean = y[train].mean(axis=0)
    e_mean, e_knn = [], []
    for i in test:
        nb = train[np.argsort(-sim[i, train], kind="stable")[:k]]
        e_mean.append(w[:, i] @ (y[i] - mean) ** 2)
        e_knn.append(w[:, i] @ (y[i] - y[nb].mean(axis=0)) ** 2)
    return float(np.mean(e_mean)), float(np.mean(e_knn))


def test_positive_control_random_vs_scaffold_split():
    from rdkit.Chem.Scaffolds import MurckoScaffold

    from drugcell.data.positive_control import make_positive_control

    es = make_positive_control(n_compounds=200, n_genes=150, seed=0)
    assert es.expression.shape == (200, 150) and es.weights.shape == (150, 200)
    assert np.allclose(es.weights.sum(axis=0), 1.0, atol=1e-4)
    family = np.asarray(es.info["family"])
    scaf = np.array([MurckoScaffold.MurckoScaffoldSmiles(s) for s in es.smiles])
    # a family is exactly one Bemis-Murcko scaffold
    assert len(set(scaf)) == len(set(family))
    assert all(len(set(scaf[family == f])) == 1 for f in set(family))
    sim = _tanimoto_by_hand(list(es.smiles))
    rng = np.random.default_rng(0)
    idx = rng.permutation(200)
    m_rand, k_rand = _knn_vs_mean(es, sim, idx[:50], idx[50:])
    held = rng.permutation(np.unique(scaf))[: len(set(scaf)) // 4]
    te = np.flatnonzero(np.isin(scaf, held))
    tr = np.flatnonzero(~np.isin(scaf, held))
    m_scaf, k_scaf = _knn_vs_mean(es, sim, te, tr)
    assert k_rand < 0.6 * m_rand
    assert k_scaf > 0.95 * m_scaf


def test_test_weights_equal_the_contest_recipe(tmp_path):
    """test_weights.parquet equals contest_scorer.compute_mejia_weights on the simulated wells
    (library over all genes; every contest-condition well, train and test, is a sample)."""
    import contest_scorer as cs
    from drugcell.data.simulate import config_for
    from drugcell.data.simulate.world import batch_counts, build_world, gene_batches

    files = simulate_vcpi(tmp_path / "sim", preset="tiny", n_genes=400, seed=3)
    cfg = config_for("tiny", n_genes=400, seed=3)
    world = build_world(cfg)
    counts = np.hstack([batch_counts(world, g0, g1, b) for b, (g0, g1) in
                        enumerate(gene_batches(cfg.n_genes, cfg.gene_batch))])  # wells x genes
    wells = world.wells
    lib = counts.sum(axis=1)
    train = ~wells.is_test & ~world.is_off
    use = np.flatnonzero((train & (lib > 0)) | wells.is_test)
    ids = np.asarray(world.comps.lims_id, dtype=object)[wells.compound[use]].astype(str)
    frame = pd.DataFrame(counts[use].T, columns=[f"w{i}" for i in use])
    frame.insert(0, "gene_id", world.genes.ids)
    meta = pd.DataFrame({"sequenced_id": [f"w{i}" for i in use], "compound": ids})
    got = pd.read_parquet(files["test_weights"]).set_index("gene_id")
    want = cs.compute_mejia_weights(frame, meta, gene_filter=list(got.index), library="all")
    np.testing.assert_allclose(got.to_numpy(), want.loc[got.index, got.columns].to_numpy(), rtol=1e-4, atol=1e-7)


def test_no_tautomer_pairs_in_the_library():
    """Two tautomers share an InChIKey first block: the audit would call them one compound, so the
    generator must never emit both (one could land in training and the other in test)."""
    from rdkit import Chem

    mols = lib.enumerate_molecules(3000, np.random.default_rng(0))
    keys = [Chem.MolToInchiKey(Chem.MolFromSmiles(m.smiles))[:14] for m in mols]
    assert len(set(keys)) == len(keys)
