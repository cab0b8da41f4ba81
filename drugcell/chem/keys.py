"""What identifies a molecule, per SMILES string, computed once per process: parsed or not, the
canonical SMILES, the InChIKey and the Bemis-Murcko scaffold.

Why: a CV run groups and audits the same molecules many times: the outer scaffold folds, the leak
audit of every fold, blend's inner scaffold folds in every outer fold, ridge's grouped inner CV in
every ridge fit. InChI plus the scaffold cost ~1.5 ms a molecule (over 20 s for the contest's
14,000 on the 2-core box), so each distinct SMILES string is parsed once and every later request
is a dictionary look-up.

The identity key is the InChIKey first block (connectivity: stereoisomers are one molecule), else
the canonical SMILES, as :func:`drugcell.splits.folds.molecule_keys` has always defined it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


class MoleculeFacts(NamedTuple):
    ok: bool          # RDKit parsed it
    canonical: str    # canonical isomeric SMILES ("" when not parsed)
    inchikey: str     # full standard InChIKey ("" when not parsed or InChI failed)
    scaffold: str     # Murcko scaffold, no stereo ("" when acyclic or not parsed)

    @property
    def block(self) -> str:
        """The InChIKey first block (connectivity; "" without an InChIKey)."""
        from drugcell.chem.molecules import inchikey_first_block

        return inchikey_first_block(self.inchikey)


_FAILED = MoleculeFacts(False, "", "", "")
_FACTS: dict[str, MoleculeFacts] = {}
_MAX = 500_000   # entries; cleared (not evicted) beyond it, like the other per-process caches


def molecule_facts(smiles: Sequence[Any]) -> list[MoleculeFacts]:
    """:class:`MoleculeFacts` per input; only strings can parse (None, NaN, numbers are failures)."""
    from drugcell.chem.molecules import parse_smiles
    from drugcell.chem.scaffolds import murcko_scaffold

    items = list(smiles)
    todo = list(dict.fromkeys(s for s in items if isinstance(s, str) and s not in _FACTS))
    if todo:
        if len(_FACTS) + len(todo) > _MAX:
            _FACTS.clear()
            todo = list(dict.fromkeys(s for s in items if isinstance(s, str)))
        parsed = parse_smiles(todo)
        scaf = murcko_scaffold(parsed)
        for i, s in enumerate(todo):
            _FACTS[s] = MoleculeFacts(True, parsed.canonical[i], parsed.inchikey[i], scaf[i]) if parsed.ok[i] else _FAILED
    return [_FACTS[s] if isinstance(s, str) else _FAILED for s in items]


def identity_keys(smiles: Sequence[Any]) -> tuple[list[str], list[str], np.ndarray]:
    """``(identity key, scaffold, parsed mask)`` per input; an unparsed input has key "" and
    scaffold "" (callers give it a key of their own), an acyclic molecule scaffold ""."""
    facts = molecule_facts(smiles)
    keys = [(f"ik:{f.block}" if f.block else f"smi:{f.canonical}") if f.ok else "" for f in facts]
    return keys, [f.scaffold for f in facts], np.array([f.ok for f in facts], dtype=bool)


def clear_keys() -> None:
    """Forget every cached molecule (tests)."""
    _FACTS.clear()
