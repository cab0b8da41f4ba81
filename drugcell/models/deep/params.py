"""Parameter checks shared by the deep parts, so every part reports a bad value the same way."""

from __future__ import annotations

from typing import Any

from drugcell.errors import DrugcellInputError


def check_int(params: dict[str, Any], name: str, kind: str, minimum: int = 1) -> None:
    """``params[name]`` must be a real int (not a bool) >= ``minimum``."""
    v = params[name]
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise DrugcellInputError(f"predictor kind {kind!r}: {name} must be an integer >= {minimum}, got {v!r}")
