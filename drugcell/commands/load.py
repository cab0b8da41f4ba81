"""`drugcell load`: VCPI files -> an ExpressionSet cache, in one streaming pass; or any AnnData
(``--anndata FILE.h5ad``) through the generic adapter (:mod:`drugcell.data.anndata_load`)."""

from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from drugcell.data import vcpi
from drugcell.errors import DrugcellInputError


class _Library(str, Enum):
    scored = "scored"
    all = "all"


class _Level(str, Enum):
    well = "well"
    profile = "profile"


class _Scale(str, Enum):
    auto = "auto"
    log2cpm = "log2cpm"
    signed = "signed"


def _pick(given: Optional[Path], data: Optional[Path], name: str, option: str) -> Path:
    if given is not None:
        return given
    if data is not None:
        return data / name
    raise DrugcellInputError(f"pass {option} (or --data DIR holding {name})")


def load_command(
    out: Annotated[Path, typer.Option("--out", help="Cache directory to write (an ExpressionSet).")],
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Folder with the contest files under their usual names (train_counts.parquet, "
        "train_metadata.parquet, train_chemistry.parquet, gene_filter.csv); the options below override one.")] = None,
    counts: Annotated[Optional[Path], typer.Option(
        "--counts", help="Counts: wide parquet (gene_id + one column per sequenced_id) or a long "
        "(sample, gene_id, count) parquet/CSV.")] = None,
    metadata: Annotated[Optional[Path], typer.Option("--metadata", help="Per-sample metadata (parquet or CSV).")] = None,
    chemistry: Annotated[Optional[Path], typer.Option(
        "--chemistry", help="Chemistry table joined on the compound UUID (compound, smiles, inchi_key).")] = None,
    gene_filter: Annotated[Optional[Path], typer.Option(
        "--gene-filter", help="CSV with a gene_id column: the scored genes.")] = None,
    concentration_nm: Annotated[float, typer.Option(
        help="Keep library/positive-control wells at this concentration in nM (10 uM is stored as 10000 nM); "
        "DMSO wells are kept at any concentration.")] = vcpi.CONTEST_CONCENTRATION_NM,
    cell_line: Annotated[str, typer.Option(help="Keep wells of this cell line.")] = vcpi.CONTEST_CELL_LINE,
    timepoint: Annotated[str, typer.Option(help="Keep wells at this timepoint.")] = vcpi.CONTEST_TIMEPOINT,
    no_condition_filter: Annotated[bool, typer.Option(
        "--no-condition-filter", help="Keep every well whatever its concentration, cell line and timepoint.")] = False,
    weights_library: Annotated[_Library, typer.Option(
        help="Library size for the Mejia weights: 'scored' (the official build: counts restricted to the "
        "scored genes) or 'all' (every gene, as the target).")] = _Library.scored,
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", help="Use this official weights.parquet instead of computing Mejia weights. With --anndata: "
        "ttest (Mejia's t-vs-rest, the --level well default), zscore (|z| per compound, the --level profile "
        "default) or a weights.parquet.")] = None,
    batch_size: Annotated[int, typer.Option(
        help="Samples decoded per batch (about 2.5 MB each at 78,778 genes, read one batch ahead).")] = vcpi.DEFAULT_BATCH_SIZE,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing cache directory.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over sample batches.")] = True,
    anndata: Annotated[Optional[Path], typer.Option(
        "--anndata", help="Read this .h5ad instead of the VCPI files (rows: wells or one profile per compound; "
        "columns: genes); needs --compound-col and --smiles-col.")] = None,
    compound_col: Annotated[Optional[str], typer.Option(
        "--compound-col", help="With --anndata: the obs column naming each row's compound.")] = None,
    smiles_col: Annotated[Optional[str], typer.Option(
        "--smiles-col", help="With --anndata: the obs column holding each compound's SMILES.")] = None,
    control_value: Annotated[Optional[list[str]], typer.Option(
        "--control-value", help="With --anndata: rows whose compound is this value are controls (repeatable; the "
        "first is the vehicle, e.g. DMSO, whose mean is the control profile).")] = None,
    level: Annotated[Optional[_Level], typer.Option(
        "--level", help="With --anndata: well (rows are wells: per-compound mean, t-vs-rest weights; the default) "
        "or profile (one row per compound).")] = None,
    scale: Annotated[Optional[_Scale], typer.Option(
        "--scale", help="With --anndata: the values' scale: log2cpm (predictions clipped at 0), signed (z-scores, "
        "log fold changes: not clipped) or auto (signed when a value is negative or --weights zscore; the default).")
    ] = None,
    layer: Annotated[Optional[str], typer.Option(
        "--layer", help="With --anndata: read this layer instead of X.")] = None,
) -> None:
    """Stream the VCPI training files into an ExpressionSet cache: per-compound mean log2(CPM+1)
    on the scored genes, replicate counts, DMSO and positive-control profiles, Mejia weights. With
    --anndata, any h5ad instead (see the README's AnnData section)."""
    from drugcell.data.loader import LoadOptions, load_to_cache

    generic = dict(compound_col=compound_col, smiles_col=smiles_col, control_value=control_value, level=level,
                   scale=scale, layer=layer)
    if anndata is not None:
        vcpi_given = [f"--{k.replace('_', '-')}" for k, v in dict(
            data=data, counts=counts, metadata=metadata, chemistry=chemistry, gene_filter=gene_filter).items()
            if v is not None]
        if vcpi_given or no_condition_filter:
            raise DrugcellInputError(f"--anndata reads one .h5ad; {', '.join(vcpi_given or ['--no-condition-filter'])} "
                                     "belong(s) to the VCPI files: pass one or the other")
        _load_anndata(out, anndata, weights, overwrite, **generic)
        return
    given = [f"--{k.replace('_', '-')}" for k, v in generic.items() if v]
    if given:
        raise DrugcellInputError(f"{', '.join(given)} go(es) with --anndata FILE.h5ad")

    cond = (vcpi.ConditionFilter(None, None, None) if no_condition_filter
            else vcpi.ConditionFilter(concentration_nm, cell_line, timepoint))
    opts = LoadOptions(condition=cond, weights_library=weights_library.value, batch_size=batch_size,
                       weights_path=None if weights is None else str(weights))
    files = (
        _pick(counts, data, vcpi.COUNTS_FILE, "--counts"),
        _pick(metadata, data, vcpi.METADATA_FILE, "--metadata"),
        _pick(chemistry, data, vcpi.CHEMISTRY_FILE, "--chemistry"),
        _pick(gene_filter, data, vcpi.GENE_FILTER_FILE, "--gene-filter"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the summary lists them once, below
        summary = load_to_cache(out, *files, options=opts, overwrite=overwrite, progress=progress)
    typer.echo(summary.format())
    for w in summary.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {out}")


def _load_anndata(out: Path, path: Path, weights: Optional[Path], overwrite: bool, *, compound_col, smiles_col,
                  control_value, level, scale, layer) -> None:
    """`drugcell load --anndata`: the generic adapter, then the cache."""
    from drugcell.data.anndata_load import AnnDataOptions, load_anndata_to_cache

    lacking = [opt for opt, v in (("--compound-col", compound_col), ("--smiles-col", smiles_col)) if not v]
    if lacking:
        raise DrugcellInputError(f"--anndata needs {' and '.join(lacking)}: the obs columns naming each row's "
                                 "compound and its SMILES")
    options = AnnDataOptions(
        compound_col=compound_col, smiles_col=smiles_col, control_values=tuple(control_value or ()),
        weights=None if weights is None else str(weights), level=(level or _Level.well).value,
        scale=(scale or _Scale.auto).value, layer=layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the summary lists them once, below
        summary = load_anndata_to_cache(out, path, options, overwrite=overwrite)
    typer.echo(summary.format())
    for w in summary.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {out}")
