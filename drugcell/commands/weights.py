"""`drugcell weights export`: an ExpressionSet's Mejia weights in the official weights.parquet layout."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The official weights.parquet layout (genes x compounds).", no_args_is_help=True)


class _Dtype(str, Enum):
    float16 = "float16"
    float32 = "float32"


@app.command("export")
def weights_export(
    data: Annotated[Path, typer.Option("--data", help="ExpressionSet cache directory (from `drugcell load`).")],
    out: Annotated[Path, typer.Option("--out", help="weights.parquet to write (gene_id + one column per compound).")],
    dtype: Annotated[_Dtype, typer.Option(help="Stored float type (the official file is float16).")] = _Dtype.float16,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file at --out.")] = False,
) -> None:
    """Write an ExpressionSet's Mejia weights (library compounds and controls) in the official layout."""
    from drugcell.data.expression_set import ExpressionSet
    from drugcell.outputs import check_file_output

    check_file_output(out, overwrite)  # before reading the cache
    t = time.perf_counter()
    es = ExpressionSet.load(data, mmap=True)
    es.write_weights_parquet(out, dtype=dtype.value, overwrite=overwrite)
    typer.echo(f"wrote {out}: {es.n_genes:,} genes x {es.n_compounds + len(es.control_ids):,} compounds "
               f"({dtype.value}) in {time.perf_counter() - t:.1f} s")
