"""The one registry type: same rules for predictors, embeddings, metrics and feature kinds."""

from __future__ import annotations

import pytest

from drugcell.chem.embeddings import EMBEDDINGS
from drugcell.chem.features import FEATURE_KINDS
from drugcell.errors import DrugcellInputError
from drugcell.metrics import METRICS, Metric
from drugcell.models import Predictor, get_class
from drugcell.models.registry import PREDICTORS, kinds_with
from drugcell.registry import Registry


def test_every_registry_is_the_one_type():
    for reg in (PREDICTORS, EMBEDDINGS, METRICS, FEATURE_KINDS):
        assert isinstance(reg, Registry)


def test_duplicate_rules():
    reg: Registry[object] = Registry("widget", field="widget")

    class A:
        pass

    class B:
        pass

    reg.add("a", A)
    reg.add("a", A)  # the same object again: harmless
    with pytest.raises(ValueError, match=r"widget 'a' is already registered by .*A"):
        reg.add("a", B)
    with pytest.raises(DrugcellInputError, match=r"unknown widget 'z'; available widgets: a\. Fix the `widget`"):
        reg.get("z")
    assert reg.names() == ["a"] and "a" in reg and len(reg) == 1


def test_metric_registry_refuses_a_second_metric_under_a_taken_name():
    other = Metric(name="mejia", direction="lower", description="not the real one", weights=lambda *a: None)
    with pytest.raises(ValueError, match="already registered"):
        METRICS.add("mejia", other)
    assert METRICS.get("mejia") is not other


def test_capabilities_are_declared_on_the_classes():
    # which predictors can return a std is read from the classes, never from a hand-kept list
    assert set(kinds_with("returns_std")) == {"knn", "ridge_fp", "ridge_desc", "ridge_emb", "fusion"}
    assert set(kinds_with("needs_torch")) == {"mlp", "fusion"}
    ranks = {k: get_class(k).simplicity for k in ("control", "mean", "knn", "ridge_fp", "mlp", "fusion")}
    assert ranks["control"] < ranks["mean"] < ranks["knn"] < ranks["ridge_fp"] < ranks["mlp"] < ranks["fusion"]
    assert not get_class("knn")(std=False).std_enabled and get_class("knn")().std_enabled
    assert issubclass(get_class("mean"), Predictor)


def test_capabilities_match_what_predictors_return():
    """A class that says it returns a std does, and one that says it does not, does not."""
    import numpy as np

    from drugcell.data.expression_set import ExpressionSet

    smiles = ["CCO", "CCN", "CCC", "c1ccccc1", "CC(=O)O", "CCCl", "CCBr", "c1ccncc1"]
    rng = np.random.default_rng(0)
    n, g = len(smiles), 5
    es = ExpressionSet(
        compounds=np.array([f"c{i}" for i in range(n)]), genes=np.array([f"g{j}" for j in range(g)]),
        expression=rng.random((n, g)).astype(np.float32) + 1,
        weights=np.full((g, n), 1 / g, np.float32), n_replicates=np.full(n, 2, np.int32),
        control=np.ones(g, np.float32), smiles=np.array(smiles), inchikey=np.array([""] * n),
    )
    for kind in ("control", "mean", "knn", "ridge_fp", "ridge_desc"):
        pred = get_class(kind)()
        out = pred.fit(es).predict(smiles[:3])
        assert (out.std is not None) == pred.std_enabled, kind
