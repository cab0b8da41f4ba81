"""The simulator's knobs, size presets and random streams.

Why apart: every part of the model reads the config, and every part draws from its own stream;
keeping both here lets each model module be read without the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from drugcell.errors import DrugcellInputError

FULL_N_GENES = 78_778

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_compounds": 150, "n_genes": 1500, "n_test": 24},
    "small": {"n_compounds": 1500, "n_genes": 8000, "n_test": 150},
    "full": {"n_compounds": 14_026, "n_genes": FULL_N_GENES, "n_test": 1_064},
}

# Stream keys: one independent random stream per purpose (see :func:`stream`). Changing a number
# changes every data set drawn with it.
STREAM_MOLECULES = 1
STREAM_COMPOUNDS = 2
STREAM_GENES = 3
STREAM_PROGRAMS = 4
STREAM_WELLS = 5
STREAM_WORLD = 6
STREAM_SAMPLE_IDS = 7
STREAM_METADATA = 8
STREAM_COUNTS = 100     # followed by the gene-batch index


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulator; the defaults were tuned against the organisers' figures."""

    n_compounds: int = 1500
    n_genes: int = 8000
    replicates: int = 2
    n_test: int = 150
    seed: int = 0
    smiles_file: str | None = None
    #: median UMIs per well (real VCPI-like wells: about 2 M)
    median_umis: float = 2e6
    depth_sd: float = 0.30                # well-to-well lognormal depth sd
    plate_depth_sd: float = 0.35          # plate-level depth sd
    failed_fraction: float = 0.004        # wells at 0.3-20 % of their depth
    empty_wells: int = 1                  # DMSO wells with no counts at all
    scored_fraction: float = 0.167        # genes at >= 1 CPM, noise-free; realised ~0.165
    expressed_log10_mean: float = 0.9     # switched-on genes: log10 abundance (shift cancels)
    expressed_log10_sd: float = 1.05      # ... and its spread
    upper_tail: float = 0.0               # extra upper tail (tried: worsens the reference figures)
    program_abundance_bias: float = 0.0   # responsive genes ~ abundance**bias (tried: worsens them)
    mito_share: float = 0.06              # fraction of UMIs on the 13 MT genes
    dispersion: float = 0.002             # NB common dispersion
    bio_sd: float = 0.10                  # median per-gene biological log sd per well
    plate_factors: int = 4                # rank of the plate effect
    plate_sd: float = 0.15                # plate factor loading sd (log scale)
    plate_noise_sd: float = 0.05          # plate x gene independent noise
    edge_sd: float = 0.08                 # edge-well effect per gene
    effect_scale: float = 0.42            # all compound effects (the main realism knob)
    key_program_genes: float = 0.04       # fraction of expressed genes in a key/scaffold program
    scaffold_strength: float = 0.8        # chemotype (template) program: crosses Murcko splits in part
    murcko_strength: float = 0.35         # per-Murcko-scaffold factors: never transfer across a scaffold split
    idio_strength: float = 0.15           # compound-private factors (unpredictable)
    stress_strength: float = 0.7          # shared stress response ~ potency^2
    weak_potency: float = 0.18            # potency of an inactive compound
    active_threshold: float = 1.6         # latent activity where compounds turn clearly active
    n_offcondition: int = 6               # wells at 1 uM or 6 h (the loader must drop them)
    gene_batch: int = 2048                # genes drawn at once (sets the random stream: keep fixed)
    row_group_batches: int = 4            # gene batches per parquet row group


def config_for(preset: str | None = None, **overrides: Any) -> SimConfig:
    """A SimConfig from a preset name plus explicit overrides (None values are ignored)."""
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise DrugcellInputError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
        base.update(PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(base) - set(SimConfig.__dataclass_fields__))
    if unknown:
        raise DrugcellInputError(f"unknown simulator option(s) {unknown}; see drugcell.data.simulate.SimConfig")
    cfg = SimConfig(**base)
    _check_config(cfg)
    return cfg


def _check_config(cfg: SimConfig) -> None:
    if cfg.n_compounds < 10:
        raise DrugcellInputError(f"--n-compounds must be at least 10, got {cfg.n_compounds}")
    if cfg.n_genes < 200:
        raise DrugcellInputError(f"--n-genes must be at least 200, got {cfg.n_genes}")
    if cfg.replicates < 1:
        raise DrugcellInputError(f"--replicates must be at least 1, got {cfg.replicates}")
    if cfg.n_test < 1:
        raise DrugcellInputError(f"--n-test must be at least 1, got {cfg.n_test}")


def stream(seed: int, *key: int) -> np.random.Generator:
    """An independent stream per purpose, so changing one part never shifts another's draws."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))
