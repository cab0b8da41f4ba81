"""The leak audit as a table: per fold the sizes, how many held-out compounds share a scaffold with
training, how near their nearest training molecule is (Tanimoto), and what was refused (audit.json).

Why on the page: a CV score means "new chemistry" only if the folds kept it apart; a reader should
see the nearest-neighbour similarities next to the ranking, not in a JSON file.
"""

from __future__ import annotations

from typing import Any

from drugcell.report.html import Section, caption, note, para, table
from drugcell.report.run import Run
from drugcell.reporting import fmt_number


def _num(d: dict[str, Any], key: str, digits: int = 2) -> str:
    v = d.get(key)
    return fmt_number(v, digits, missing="") if isinstance(v, (int, float)) else ""


def _share(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def _row(fold: dict[str, Any]) -> list[str]:
    sim = fold.get("nearest_similarity") or {}
    ge = fold.get("frac_nearest_ge") or {}
    ge_txt = ", ".join(f">= {t}: {_share(ge, t)}" for t in sorted(ge, key=float))
    shared = fmt_number(fold.get("n_test_scaffold_in_train"), missing="")
    if shared and _share(fold, "frac_test_scaffold_in_train"):
        shared += f" ({_share(fold, 'frac_test_scaffold_in_train')})"
    unparsed = (f"{fmt_number(fold.get('n_unparsed_train'), missing='?')} / "
                f"{fmt_number(fold.get('n_unparsed_test'), missing='?')}")
    return [str(fold.get("fold", fold.get("name", "?"))), fmt_number(fold.get("n_train"), missing=""),
            fmt_number(fold.get("n_test"), missing=""), shared, _num(sim, "median"),
            f"[{_num(sim, 'q05')}, {_num(sim, 'q95')}]", _num(sim, "max"), ge_txt, unparsed,
            fmt_number(fold.get("n_duplicates", len(fold.get("duplicates") or [])))]


def audit_section(run: Run) -> Section:
    """The split line, one row per fold, and what the audit refused."""
    sec = Section("audit", "Leak audit", "")
    audit = run.audit
    if audit is None:
        sec.body = note(f"No leak audit: {run.missing('audit.json')}.")
        return sec
    folds = [f for f in audit.get("folds", []) if isinstance(f, dict)]
    split = audit.get("split") if isinstance(audit.get("split"), dict) else {}
    parts = []
    if split:
        line = (f"Split: {split.get('split_used', '?')} (asked: {split.get('split_requested', '?')}), "
                f"{split.get('n_folds', len(folds))} folds, seed {split.get('seed', '?')}; fold sizes "
                f"{split.get('fold_sizes', '?')}; {fmt_number(split.get('n_scaffolds'), missing='?')} scaffolds, "
                f"{fmt_number(split.get('n_acyclic'), missing='?')} acyclic, "
                f"{fmt_number(split.get('n_unparsed'), missing='?')} unparsed SMILES.")
        parts.append(para(line))
        if split.get("warning"):
            parts.append(note(f"Warning from the split: {split['warning']}"))
    header = ["fold", "train", "held out", "held out sharing a scaffold with train", "nearest Tanimoto median",
              "[q05, q95]", "max", "share with nearest >= t", "unparsed train / held out", "duplicates refused"]
    parts.append(table(header, [_row(f) for f in folds], numeric_from=1))
    n_dup = sum(int(f.get("n_duplicates", 0) or 0) for f in folds)
    parts.append(caption(
        "Nearest Tanimoto: each held-out compound's similarity to its nearest training molecule (Morgan r=2, "
        "2048 bits). What the audit refuses: a held-out compound that duplicates a training molecule or id stops "
        f"the run before anything is fitted. This run had {n_dup} duplicate(s) in {len(folds)} audited folds"
        + (", so nothing was refused." if n_dup == 0 else ".")))
    sec.body = "\n".join(parts)
    return sec
