"""The real VCPI file layout as constants, the contest condition, and control detection.

Kept apart from the loader so that the simulator, the loader and the tests agree on one
spelling of every column name and on one rule for "which wells are in the contest".

Facts (spec ``contest-metric.md`` and the public contest README): the contest condition is THP-1,
24 h, library compounds at 10 uM stored as ``compound_concentration == 10000`` with unit ``nM``;
DMSO wells carry a vehicle concentration (0.15 %) and are kept whatever their concentration. The
four positive controls appear in ``user_compound_id`` with varying spellings ("Staurosporin",
"Brefeldin-A", "trichostatin a", ...), so they are matched after normalisation.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from contest_scorer.columns import GENE_COL as CONTEST_GENE_COL

if TYPE_CHECKING:  # numpy and pandas are imported where used: the CLI reads the constants at start-up
    import numpy as np
    import pandas as pd

# ---- file names a contest user holds ---------------------------------------------------------
COUNTS_FILE = "train_counts.parquet"
METADATA_FILE = "train_metadata.parquet"
CHEMISTRY_FILE = "train_chemistry.parquet"
GENE_FILTER_FILE = "gene_filter.csv"
WEIGHTS_FILE = "weights.parquet"
TEST_COMPOUNDS_FILE = "test_compounds.csv"

# ---- counts -----------------------------------------------------------------------------------
GENE_COL = CONTEST_GENE_COL  # the contest spells it once (contest_scorer)
#: long layout ``(sample, gene_id, count)``; ``sequenced_id`` is accepted for ``sample``.
LONG_SAMPLE_COLS = ("sample", "sequenced_id")
LONG_COUNT_COL = "count"

# ---- metadata (one row per sample) -------------------------------------------------------------
SAMPLE_COL = "sequenced_id"
COMPOUND_UUID_COL = "compound"          # join key to chemistry
COMPOUND_KEY_COL = "user_compound_id"   # the contest compound key ("DMSO" for vehicle wells)
CONCENTRATION_COL = "compound_concentration"
CONCENTRATION_UNIT_COL = "compound_concentration_unit"
CELL_LINE_COL = "cell_line"
TIMEPOINT_COL = "timepoint"
IS_CONTROL_COL = "is_control"
PLATE_COL = "container_id"
ROW_COL = "row_id"
COLUMN_COL = "column_id"
IS_EDGE_COL = "is_edge"
TOTAL_UMI_COL = "total_umi_count"
NGENES_COL = "ngenes3"
PERCENT_MITO_COL = "percent_mitochondrial"

#: The columns the loader needs; a metadata file without one of them is refused.
REQUIRED_METADATA_COLUMNS: tuple[str, ...] = (
    SAMPLE_COL, COMPOUND_UUID_COL, COMPOUND_KEY_COL, CONCENTRATION_COL, CELL_LINE_COL,
    TIMEPOINT_COL,
)
#: The metadata columns the spec names (the real file has 26; the others are carried along
#: untouched). Used by the simulator and by layout checks, not required by the loader.
KNOWN_METADATA_COLUMNS: tuple[str, ...] = (
    SAMPLE_COL, COMPOUND_UUID_COL, COMPOUND_KEY_COL, CONCENTRATION_COL, CONCENTRATION_UNIT_COL,
    CELL_LINE_COL, TIMEPOINT_COL, IS_CONTROL_COL, PLATE_COL, ROW_COL, COLUMN_COL, IS_EDGE_COL,
    TOTAL_UMI_COL, NGENES_COL, PERCENT_MITO_COL,
)
N_METADATA_COLUMNS_REAL = 26
# The other metadata columns: the real file carries 26; the loader ignores these, the simulator
# writes them (names chosen to read like the real release, not taken from it).
COMPOUND_NAME_COL = "compound_name"
CONTROL_TYPE_COL = "control_type"
WELL_COL = "well_id"
REPLICATE_COL = "replicate"
RELEASE_COL = "release"
BATCH_COL = "batch_id"
ORGANISM_COL = "organism"
ASSAY_COL = "assay"
TOTAL_READS_COL = "total_read_count"
PERCENT_RIBO_COL = "percent_ribosomal"
SEQUENCING_DATE_COL = "sequencing_date"

# ---- chemistry (one row per compound UUID) ---------------------------------------------------
CHEM_UUID_COL = "compound"
SMILES_COL = "smiles"
INCHIKEY_COL = "inchi_key"
REQUIRED_CHEMISTRY_COLUMNS: tuple[str, ...] = (CHEM_UUID_COL, SMILES_COL)
MOLECULAR_WEIGHT_COL = "molecular_weight"
LOG_P_COL = "log_p"
TPSA_COL = "tpsa"
KNOWN_CHEMISTRY_COLUMNS: tuple[str, ...] = (
    CHEM_UUID_COL, SMILES_COL, INCHIKEY_COL, "molecular_weight", "log_p", "tpsa",
)

# ---- test_compounds.csv (one row per held-out compound) ----------------------------------------
#: the contest compound id (the values of ``user_compound_id``), under the name ``compound``
TEST_COMPOUND_COL = "compound"
#: The file's columns in order (spec ``contest-metric.md``); only id and SMILES are required.
TEST_COMPOUNDS_COLUMNS: tuple[str, ...] = (
    TEST_COMPOUND_COL, COMPOUND_NAME_COL, CONCENTRATION_COL, CONCENTRATION_UNIT_COL, CELL_LINE_COL,
    TIMEPOINT_COL, SMILES_COL, INCHIKEY_COL,
)
REQUIRED_TEST_COLUMNS: tuple[str, ...] = (TEST_COMPOUND_COL, SMILES_COL)

# ---- the contest condition -------------------------------------------------------------------
CONTEST_CONCENTRATION_NM = 10000.0
CONTEST_CELL_LINE = "THP-1"
CONTEST_TIMEPOINT = "24h"
CONCENTRATION_UNIT_NM = "nM"
#: how test_compounds.csv states the same 10 uM
TEST_CONCENTRATION_UM = 10.0
TEST_CONCENTRATION_UNIT = "uM"

#: samples decoded per batch by the loader (about 2.5 MB each at 78,778 genes)
DEFAULT_BATCH_SIZE = 256

# ---- controls --------------------------------------------------------------------------------
DMSO = "DMSO"
#: the vehicle fraction DMSO wells carry as their concentration
DMSO_CONCENTRATION = 0.15
DMSO_CONCENTRATION_UNIT = "%"
#: canonical id -> normalised spellings seen (or plausible) in real metadata
POSITIVE_CONTROLS: dict[str, tuple[str, ...]] = {
    "Staurosporine": ("staurosporine", "staurosporin"),
    "Brefeldin A": ("brefeldina",),
    "Rigosertib": ("rigosertib",),
    "Trichostatin A": ("trichostatina",),
}
CONTROL_IDS: tuple[str, ...] = (DMSO, *POSITIVE_CONTROLS)

_UNIT_TO_NM = {"pm": 1e-3, "nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "mm": 1e6, "m": 1e9}


def normalise_name(name: object) -> str:
    """Lower-case and drop spaces, hyphens, underscores and dots: "Brefeldin-A" -> "brefeldina"."""
    return re.sub(r"[\s\-_.]+", "", str(name)).lower()


_ALIASES: dict[str, str] = {normalise_name(DMSO): DMSO}
for _canon, _spellings in POSITIVE_CONTROLS.items():
    for _s in (*_spellings, normalise_name(_canon)):
        _ALIASES[_s] = _canon


def control_id(name: object) -> str | None:
    """The canonical control id for a ``user_compound_id`` spelling, or None for a library id."""
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return None
    return _ALIASES.get(normalise_name(name))


def control_ids_of(values: pd.Series) -> pd.Series:
    """Vectorised :func:`control_id` (None where the value is a library compound)."""
    import pandas as pd

    uniq = pd.unique(values.astype(str))
    mapping = {u: control_id(u) for u in uniq}
    return values.astype(str).map(mapping)


def concentration_nm(values: pd.Series, units: pd.Series | None) -> pd.Series:
    """Concentrations in nM (unit column absent -> already nM; unknown unit -> NaN)."""
    import pandas as pd

    conc = pd.to_numeric(values, errors="coerce").astype(float)
    if units is None:
        return conc
    factor = units.astype(str).str.strip().str.lower().map(_UNIT_TO_NM)
    return conc * factor.astype(float)


def _norm_label(values: pd.Series) -> pd.Series:
    return values.astype(str).str.replace(r"\s+", "", regex=True).str.lower()


@dataclass(frozen=True)
class ConditionFilter:
    """Which wells belong to the contest condition; None switches a criterion off.

    DMSO wells are exempt from the concentration criterion (their concentration is the vehicle
    fraction, e.g. 0.15 %), as in the organisers' own query.
    """

    concentration_nm: float | None = CONTEST_CONCENTRATION_NM
    cell_line: str | None = CONTEST_CELL_LINE
    timepoint: str | None = CONTEST_TIMEPOINT

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def reasons(self, metadata: pd.DataFrame, is_dmso: pd.Series) -> dict[str, np.ndarray]:
        """Boolean masks of the rows each criterion rejects (a row may fail several)."""
        import numpy as np
        import pandas as pd

        out: dict[str, np.ndarray] = {}
        if self.cell_line is not None:
            ok = _norm_label(metadata[CELL_LINE_COL]) == _norm_label(pd.Series([self.cell_line]))[0]
            out["cell_line"] = ~ok.to_numpy()
        if self.timepoint is not None:
            ok = _norm_label(metadata[TIMEPOINT_COL]) == _norm_label(pd.Series([self.timepoint]))[0]
            out["timepoint"] = ~ok.to_numpy()
        if self.concentration_nm is not None:
            units = metadata.get(CONCENTRATION_UNIT_COL)
            conc = concentration_nm(metadata[CONCENTRATION_COL], units).to_numpy()
            ok = np.isclose(conc, self.concentration_nm, rtol=1e-6, atol=1e-9)
            out["concentration"] = ~(ok | is_dmso.to_numpy())
        return out

    def mask(self, metadata: pd.DataFrame, is_dmso: pd.Series) -> np.ndarray:
        """True for the rows in the contest condition."""
        import numpy as np

        keep = np.ones(len(metadata), dtype=bool)
        for rejected in self.reasons(metadata, is_dmso).values():
            keep &= ~rejected
        return keep
