"""The contest tables' column names (the official spelling), in a module that imports nothing, so
light modules (drugcell's defaults, the CLI) can name columns without loading pandas."""

COMPOUND_COL = "compound"
GENE_COL = "gene_id"
EXPRESSION_COL = "expression"
PRED_COL = "predicted_expression"
