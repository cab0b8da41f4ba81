"""Real L1000 adapters yield the documented compound and gene counts (shared data READMEs)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from drugcell.data.l1000 import load_cmap_gct, load_prnet_h5ad, select_dose
from drugcell.errors import DrugcellInputError
from tests.conftest import require_shared


def test_prnet_documented_counts():
    path = require_shared("prnet_l1000_ht115_demo", "demo.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        es = load_prnet_h5ad(path)
    # README: 354 compounds with SMILES, 978 landmark genes, 20 DMSO wells, mostly 2 wells each.
    assert es.n_compounds == 354 and es.n_genes == 978
    assert (es.smiles != "").all()
    assert list(es.control_ids) == ["DMSO"]
    assert es.n_replicates.max() == 2 and (es.n_replicates == 2).sum() > 300
    np.testing.assert_allclose(es.weights.sum(axis=0), 1.0, rtol=1e-5)
    assert es.expression.min() > 0


def test_cmap_documented_counts():
    gct = require_shared("cmap_l1000_a375_plate", "test_l1000.gct")
    table = require_shared("lincs_sciplex_compound_smiles", "lincs_drugs_smiles.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        es = load_cmap_gct(gct, table)
    # README: 978 probes; 55 treatment compounds of which 47 join to SMILES; 26 DMSO wells.
    assert es.n_compounds == 47 and es.n_genes == 978
    assert "DMSO" in list(es.control_ids)
    assert (es.n_replicates == 1).all()  # one well per compound at the dose nearest 10 uM


def test_dose_rules_by_hand():
    doses = pd.Series([1.0, 10.0, 3.0, 30.0, 9.0])
    comps = pd.Series(["a", "a", "b", "b", "b"])
    assert select_dose(doses, comps, "max").tolist() == [False, True, False, True, False]
    assert select_dose(doses, comps, "nearest:10").tolist() == [False, True, False, False, True]
    assert select_dose(doses, comps, "all").all()
    with pytest.raises(DrugcellInputError, match="dose rule"):
        select_dose(doses, comps, "median")
