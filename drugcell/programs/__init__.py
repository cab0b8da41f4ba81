"""Gene programs a biologist can read (``drugcell programs``): signed NMF of the chemistry-driven
residual, so each program has up genes and down genes; gene symbols and compound names from
offline sources; a report that says whether the fit converged.

Modules: ``factorise`` (the signed NMF and its shares), ``annotate`` (gene symbols, compound
names), ``inputs`` (truth or a CV run's predictions), ``report`` (tables, markdown, heatmap, files).
"""

from drugcell.programs.annotate import (
    Annotation,
    builtin_symbols,
    compound_names,
    gene_symbols,
    read_gene_symbols,
)
from drugcell.programs.factorise import (
    GenePrograms,
    NMFFit,
    fit_nmf,
    gene_programs,
    norm_shares,
    residual_magnitude,
    signed_parts,
)
from drugcell.programs.inputs import ProgramInput, load_program_input
from drugcell.programs.report import (
    ProgramsResult,
    plot_programs,
    programs_markdown,
    run_programs,
    write_programs,
)

__all__ = [
    "Annotation", "GenePrograms", "NMFFit", "ProgramInput", "ProgramsResult", "builtin_symbols", "compound_names",
    "fit_nmf", "gene_programs", "gene_symbols", "load_program_input", "norm_shares", "plot_programs",
    "programs_markdown", "read_gene_symbols", "residual_magnitude", "run_programs", "signed_parts",
    "write_programs",
]
