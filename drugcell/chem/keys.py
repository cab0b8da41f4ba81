"""Identity key and Bemis-Murcko scaffold of each SMILES string, computed once per process.

Why: a CV run groups the same molecules many times: the outer scaffold folds, blend's inner
scaffold folds in every outer fold, ridge's grouped inner CV in every ridge fit. InChI plus the
scaffold cost ~1.5 ms a molecule (over 20 s for the contest's 14,000 on the 2-core box), so each
distinct SMILES string is parsed once and every later request is a dictionary look-up.

The identity key is the InChIKey first block (connectivity: stereoisomers are one molecule), else
the canonical SMILES, as :func:`drugcell.splits.folds.molecule_keys` has always defined it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_KEYS: dict[str, tuple[bool, str, str]] = {}   # SMILES -> (parsed, identity key, scaffold)
_MAX = 500_000   # entries; cleared (not evicted) beyond it, like the other per-process caches


def identity_keys(smiles: Sequence[Any]) -> tuple[list[str], list[str], np.ndarray]:
    """``(identity key, scaffold, parsed mask)`` per input; an unparsed input has key "" and
    scaffold "" (callers give it a key of their own), an acyclic molecule scaffold ""."""
    from drugcell.chem.molecules import inchikey_first_block, parse_smiles
    from drugcell.chem.scaffolds import murcko_scaffold

    items = list(smiles)
    # only strings can parse (parse_one): None, NaN and other values are failures, never cached
    todo = list(dict.fromkeys(s for s in items if isinstance(s, str) and s not in _KEYS))
    if todo:
        if len(_KEYS) + len(todo) > _MAX:
            _KEYS.clear()
            todo = list(dict.fromkeys(s for s in items if isinstance(s, str)))
        parsed = parse_smiles(todo)
        scaf = murcko_scaffold(parsed)
        for i, s in enumerate(todo):
            if not parsed.ok[i]:
                _KEYS[s] = (False, "", "")
                continue
            block = inchikey_first_block(parsed.inchikey[i])
            _KEYS[s] = (True, f"ik:{block}" if block else f"smi:{parsed.canonical[i]}", scaf[i])
    facts = [_KEYS[s] if isinstance(s, str) else (False, "", "") for s in items]
    return [f[1] for f in facts], [f[2] for f in facts], np.array([f[0] for f in facts], dtype=bool)


def clear_keys() -> None:
    """Forget every cached key (tests)."""
    _KEYS.clear()
