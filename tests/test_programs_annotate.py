"""Gene symbols and compound names for the programs: a user's mapping file (CSV, TSV, parquet;
duplicates kept, missing columns named), the built-in human table, compound names from a file or
from the metadata the cache was loaded from."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from drugcell.errors import DrugcellInputError
from drugcell.programs import builtin_symbols, compound_names, gene_symbols, read_gene_symbols
from drugcell.programs.annotate import BUILTIN_SYMBOLS
from tests.conftest import require_shared

GENES = np.array(["ENSG1", "ENSG2", "ENSG3"])


def test_symbols_from_a_user_file(tmp_path):
    # landmark_geneinfo style: gene_id is Entrez, ensembl_id matches the data (the best-matching id column wins)
    f = tmp_path / "landmark.csv"
    f.write_text("gene_id,gene_symbol,ensembl_id\n10007,GNPDA1,ENSG1\n1001,CDH3,ENSG3.5\n")
    assert read_gene_symbols(f, GENES).tolist() == ["GNPDA1", "ENSG2", "CDH3"]
    ann = gene_symbols(GENES, f, builtin=False)
    assert ann.values.tolist() == ["GNPDA1", "", "CDH3"] and ann.n_mapped == 2 and ann.n_ambiguous == 0
    tsv = tmp_path / "map.tsv"
    tsv.write_text("# a comment line\nGene\tSymbol\nENSG2\tTP53\n")
    assert read_gene_symbols(tsv, GENES).tolist() == ["ENSG1", "TP53", "ENSG3"]
    pq = tmp_path / "map.parquet"
    pd.DataFrame({"ensembl_gene_id": ["ENSG3"], "hgnc_symbol": ["MYC"]}).to_parquet(pq)
    assert read_gene_symbols(pq, GENES).tolist() == ["ENSG1", "ENSG2", "MYC"]


def test_duplicates_in_a_user_file(tmp_path):
    f = tmp_path / "dup.csv"
    f.write_text("ensembl_id,symbol\nENSG1,A\nENSG1,A\nENSG2,B\nENSG2,C\nENSG3,\nENSG3,D\n")
    ann = gene_symbols(GENES, f, builtin=False)
    # the same pair twice is one pair; two symbols for one id are both kept, in file order, and counted;
    # an empty symbol is no symbol
    assert ann.values.tolist() == ["A", "B/C", "D"]
    assert ann.n_ambiguous == 1 and ann.n_mapped == 3
    # two ids with one symbol are fine: each keeps its own row
    g = tmp_path / "same.csv"
    g.write_text("ensembl_id,symbol\nENSG1,X\nENSG2,X\n")
    assert read_gene_symbols(g, GENES).tolist() == ["X", "X", "ENSG3"]


def test_bad_mapping_files_are_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("gene_id,description\nENSG1,x\n")
    with pytest.raises(DrugcellInputError, match=r"bad\.csv: no symbol column.*found \['gene_id', 'desc"):
        read_gene_symbols(bad, GENES)
    noid = tmp_path / "noid.csv"
    noid.write_text("entrez,symbol\n1,A\n")
    with pytest.raises(DrugcellInputError, match=r"noid\.csv: no id column \(ensembl_id, .*\) matches"):
        read_gene_symbols(noid, GENES)
    nomatch = tmp_path / "nomatch.csv"
    nomatch.write_text("gene_id,symbol\nX,Y\n")
    with pytest.raises(DrugcellInputError, match="matches any id of the data"):
        read_gene_symbols(nomatch, GENES)
    with pytest.raises(DrugcellInputError, match="not found"):
        read_gene_symbols(tmp_path / "missing.csv", GENES)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(DrugcellInputError, match=r"junk\.parquet: not a readable"):
        read_gene_symbols(junk, GENES)


def test_builtin_table():
    table = builtin_symbols()
    assert 39_000 < len(table) < 41_000  # org.Hs.eg.db 3.16.0: 39,708 human Ensembl gene ids
    # well-known genes
    assert (table["ENSG00000141510"], table["ENSG00000012048"], table["ENSG00000000003"]) == ("TP53", "BRCA1", "TSPAN6")
    # an id linked to two NCBI genes keeps the lower Entrez id: PMM2 (5373), not LOC100130283
    assert table["ENSG00000140650"] == "PMM2"
    ann = gene_symbols(["ENSG00000141510", "ENSG00000141510.17", "ENSGXXXX"])
    assert ann.values.tolist() == ["TP53", "TP53", ""] and "org.Hs.eg.db 3.16.0" in ann.source
    assert gene_symbols(["ENSG00000141510"], builtin=False).values.tolist() == [""]


def test_builtin_table_file_states_its_source_and_licence():
    from importlib import resources

    ref = resources.files("drugcell.data").joinpath(BUILTIN_SYMBOLS)
    head = gzip.decompress(ref.read_bytes()).decode().splitlines()[:3]
    assert "org.Hs.eg.db" in head[0] and "3.16.0-1" in head[0]
    assert "Artistic-2.0" in head[1]
    assert head[2] == "ensembl_id\tsymbol"


def test_user_file_wins_and_the_table_fills_in(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("ensembl_id,symbol\nENSG00000141510,p53\n")
    ann = gene_symbols(["ENSG00000141510", "ENSG00000012048", "ENSGXXXX"], f)
    assert ann.values.tolist() == ["p53", "BRCA1", ""]
    assert "mine.csv (1 genes)" in ann.source and "built-in" in ann.source and ann.n_mapped == 2


def test_l1000_landmark_symbols(tmp_path):
    """Real annotation as a fixture: landmark_geneinfo.csv (Entrez gene_id, ensembl_id, gene_symbol)
    as a user file, and the built-in table against it."""
    path = require_shared("transigen_lincs2020_example", "landmark_geneinfo.csv")
    lm = pd.read_csv(path, dtype=str)
    ens = lm["ensembl_id"].to_numpy()
    assert read_gene_symbols(path, ens).tolist() == lm["gene_symbol"].tolist()  # ensembl_id chosen, not gene_id
    builtin = gene_symbols(ens).values
    assert (builtin != "").all()  # all 978 landmark genes are in the table
    same = builtin == lm["gene_symbol"].to_numpy()
    assert same.sum() >= 960  # 965 agree; the rest are later HGNC renames
    renamed = dict(zip(ens[~same], builtin[~same]))
    assert renamed["ENSG00000090861"] == "AARS1"  # AARS in the LINCS 2020 table


def test_compound_names_from_a_file(tmp_path):
    comps = np.array(["101", "102", "103"])
    f = tmp_path / "test_compounds.csv"
    f.write_text('compound,compound_name,smiles\n101,aspirin,CC\n103,"2,4-dinitrophenol",C\n')
    ann = compound_names(comps, f)
    assert ann.values.tolist() == ["aspirin", "", "2,4-dinitrophenol"] and ann.n_mapped == 2
    meta = tmp_path / "meta.parquet"  # the metadata layout: UUID `compound` and the key `user_compound_id`
    pd.DataFrame({"compound": ["u1", "u2", "u2"], "user_compound_id": ["101", "102", "102"],
                  "compound_name": ["A", "B", "B"]}).to_parquet(meta)
    assert compound_names(comps, meta).values.tolist() == ["A", "B", ""]
    bad = tmp_path / "bad.csv"
    bad.write_text("compound,smiles\n101,CC\n")
    with pytest.raises(DrugcellInputError, match=r"bad\.csv: no compound name column; expected one of compound_name"):
        compound_names(comps, bad)


def test_compound_names_from_the_cache_metadata(tmp_path):
    comps = np.array(["101", "102"])
    meta = tmp_path / "train_metadata.parquet"
    pd.DataFrame({"user_compound_id": ["101", "101", "DMSO"], "compound_name": ["A", "A", "DMSO"]}).to_parquet(meta)
    ann = compound_names(comps, cache_inputs={"metadata": {"path": str(meta)}})
    assert ann.values.tolist() == ["A", ""] and ann.source == str(meta)
    gone = compound_names(comps, cache_inputs={"metadata": {"path": str(tmp_path / "moved.parquet")}})
    assert gone.n_mapped == 0 and "not found" in gone.source and "--compound-names" in gone.source
    nocol = tmp_path / "nocol.parquet"
    pd.DataFrame({"user_compound_id": ["101"]}).to_parquet(nocol)
    assert "no compound_name column" in compound_names(comps, cache_inputs={"metadata": {"path": str(nocol)}}).source
    assert compound_names(comps).n_mapped == 0  # an in-memory set names no file


def test_builtin_table_names_most_contest_genes():
    genes = pd.read_csv(require_shared("vcpi_contest_public", "gene_filter.csv"), dtype=str)["gene_id"]
    assert gene_symbols(genes).n_mapped == 11_641  # of 12,995 scored genes; the rest keep their Ensembl id

