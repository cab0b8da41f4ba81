"""TOML run configs -> typed, validated dataclasses.

A config file is the whole recipe of a ``drugcell cv`` run (predictors, folds, split, seed,
metrics, bootstrap, outputs), so a run can be repeated from its manifest alone. Layout::

    [cv]
    folds = 5                 # number of folds (>= 2)
    split = "scaffold"        # "scaffold" or "random"
    seed = 0
    metrics = ["mejia", "proxy", "variance"]
    bootstrap_resamples = 10000

    [output]
    save_predictions = false  # write RUN/predictions/<name>.npy (held-out rows, fold order)
    uncertainty_sample = 200000
    weights_file = ""         # official weights.parquet; "" = the ExpressionSet's own weights

    [[predictors]]
    name = "knn_k10_tanimoto"
    kind = "knn"
    k = 10                    # every other key is a constructor parameter of the predictor
    kernel = "tanimoto"

    [[predictors]]            # a sweep: lists or ranges of scalar params expand into named variants
    name = "knn"              # knn_k5_uniform, knn_k5_softmax, knn_k20_uniform, knn_k20_softmax
    kind = "knn"              # (syntax and naming rule: drugcell.sweeps)
    k = [5, 20]
    kernel = ["uniform", "softmax"]

The expanded list is the config (``RunConfig.predictors``, the manifest, ``--predictors NAME``).
Validation errors raise :class:`DrugcellInputError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drugcell.defaults import DEFAULT_BOOTSTRAP, DEFAULT_FOLDS, DEFAULT_SEED, DEFAULT_SPLIT
from drugcell.errors import DrugcellInputError
from drugcell.sweeps import Variant, expand_entry

SPLITS = ("scaffold", "random")
SELECT_RULES = ("simplest", "lowest")
DEFAULT_METRICS = ("mejia", "proxy", "variance")
DEFAULT_UNCERTAINTY_SAMPLE = 200_000
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class PredictorSpec:
    """One predictor of a run: a unique display name, a registry kind, constructor params."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **self.params}

    def build(self, metric: str | None = None):
        """An unfitted predictor; a predictor that selects under a metric (its ``defaults`` have a
        ``metric`` key) gets the run's ``metric`` unless the config set one for it."""
        from drugcell.models import get_class

        params = dict(self.params)
        if metric is not None and "metric" in get_class(self.kind).defaults and "metric" not in params:
            params["metric"] = metric
        return get_class(self.kind)(**params)


@dataclass(frozen=True)
class OutputOptions:
    save_predictions: bool = False
    uncertainty_sample: int = DEFAULT_UNCERTAINTY_SAMPLE
    weights_file: str | None = None


@dataclass(frozen=True)
class EstimateOptions:
    """The leaderboard estimate's assumptions about the test set (the contest: 6 new plates)."""

    test_plates: int = 6
    test_compounds: int = 1064        # compounds the leaderboard averages over (0: as many as the CV set)
    test_replicates: int = 0          # wells per test compound; 0 = the training median
    resamples: int = 1000


@dataclass(frozen=True)
class RunConfig:
    """Everything a CV run needs besides the data."""

    predictors: tuple[PredictorSpec, ...]
    folds: int = DEFAULT_FOLDS
    split: str = DEFAULT_SPLIT
    seed: int = DEFAULT_SEED
    metrics: tuple[str, ...] = DEFAULT_METRICS
    bootstrap_resamples: int = DEFAULT_BOOTSTRAP
    select_rule: str = "simplest"     # model choice: "simplest" unbeaten (Holm) or "lowest" mean
    select_alpha: float = 0.05        # significance level of the choice rule (Holm-corrected)
    output: OutputOptions = field(default_factory=OutputOptions)
    estimate: EstimateOptions = field(default_factory=EstimateOptions)
    source: str | None = None  # the TOML file it came from (for messages and the manifest)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (written into every manifest; :func:`config_from_dict` reads it back)."""
        return {
            "cv": {
                "folds": self.folds, "split": self.split, "seed": self.seed,
                "metrics": list(self.metrics), "bootstrap_resamples": self.bootstrap_resamples,
                "select": self.select_rule, "select_alpha": self.select_alpha,
            },
            "output": {
                "save_predictions": self.output.save_predictions,
                "uncertainty_sample": self.output.uncertainty_sample,
                "weights_file": self.output.weights_file or "",
            },
            "estimate": dataclasses.asdict(self.estimate),
            "predictors": [p.to_dict() for p in self.predictors],
            "source": self.source,
        }

    def predictor(self, name: str) -> PredictorSpec:
        for p in self.predictors:
            if p.name == name:
                return p
        names = ", ".join(p.name for p in self.predictors)
        raise DrugcellInputError(
            f"{self.source or 'config'}: no predictor named {name!r}; known: {names}"
        )

    def select(self, names: list[str]) -> RunConfig:
        """Keep only the named predictors (in the order given)."""
        return dataclasses.replace(self, predictors=tuple(self.predictor(n) for n in names))


def _where(source: str | None, key: str) -> str:
    return f"{source or 'config'}: key {key!r}"


def _check_int(value: Any, source: str | None, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DrugcellInputError(f"{_where(source, key)} must be an integer, got {value!r}")
    if value < minimum:
        raise DrugcellInputError(f"{_where(source, key)} must be >= {minimum}, got {value}")
    return value


def _known_kinds() -> set[str]:
    from drugcell.models import available  # importing the package registers every built-in kind

    return set(available())


def _check_params(spec: PredictorSpec, source: str | None, key: str, swept: dict[str, Any] | None = None) -> None:
    """Build the predictor once so a bad parameter fails now, not an hour into a run."""
    from drugcell.models import make_predictor

    try:
        make_predictor(spec.kind, **spec.params)
    except DrugcellInputError as exc:
        values = ", ".join(f"{k} = {v!r}" for k, v in (swept or {}).items())
        label = f"{spec.name}, swept {values}" if values else spec.name
        raise DrugcellInputError(f"{_where(source, key)} ({label}): {exc}") from None


def _known_metrics() -> set[str]:
    from drugcell.metrics import available

    return set(available())


def _parse_entry(entry: Any, i: int, source: str | None, kinds: set[str]) -> tuple[str, list[Variant]]:
    """One ``[[predictors]]`` table -> its kind and variants (one, or the expansion of its sweeps)."""
    from drugcell.models import get_class

    key = f"predictors[{i}]"
    if not isinstance(entry, dict):
        raise DrugcellInputError(f"{_where(source, key)} must be a table, got {entry!r}")
    entry = dict(entry)
    kind = entry.pop("kind", None)
    if not isinstance(kind, str) or not kind:
        raise DrugcellInputError(f"{_where(source, key + '.kind')} is missing or not a string")
    name = entry.pop("name", kind)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise DrugcellInputError(
            f"{_where(source, key + '.name')} must be letters, digits, '_', '-' or '.', got {name!r}"
        )
    if kind not in kinds:
        raise DrugcellInputError(
            f"{_where(source, key + '.kind')}: unknown predictor kind {kind!r}; "
            f"available: {', '.join(sorted(kinds))}"
        )
    params = entry.pop("params", {})
    if not isinstance(params, dict):
        raise DrugcellInputError(f"{_where(source, key + '.params')} must be a table")
    return kind, expand_entry(name, {**params, **entry}, get_class(kind).defaults, _where(source, key))


def _parse_predictors(raw: Any, source: str | None) -> tuple[PredictorSpec, ...]:
    """Every entry, sweeps expanded in place (drugcell.sweeps), each variant checked by building it."""
    if not isinstance(raw, list) or not raw:
        raise DrugcellInputError(
            f"{_where(source, 'predictors')} must be a non-empty array of tables "
            "([[predictors]] with name and kind)"
        )
    kinds = _known_kinds()
    specs: list[PredictorSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        key = f"predictors[{i}]"
        kind, variants = _parse_entry(entry, i, source, kinds)
        for var in variants:
            if var.name in seen:
                origin = f" (a variant of the sweep in {key})" if var.swept else ""
                raise DrugcellInputError(
                    f"{_where(source, key + '.name')}: duplicate predictor name {var.name!r}{origin}")
            seen.add(var.name)
            spec = PredictorSpec(name=var.name, kind=kind, params=var.params)
            _check_params(spec, source, key, var.swept)
            specs.append(spec)
    return tuple(specs)


def _parse_metrics(metrics: Any, source: str | None) -> list[str]:
    """cv.metrics: a non-empty list of distinct registered metric names (a bare name is a list of one)."""
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise DrugcellInputError(f"{_where(source, 'cv.metrics')} must be a non-empty list of names")
    known = _known_metrics()
    for m in metrics:
        if m not in known:
            raise DrugcellInputError(
                f"{_where(source, 'cv.metrics')}: unknown metric {m!r}; known: {', '.join(sorted(known))}"
            )
    if len(set(metrics)) != len(metrics):
        raise DrugcellInputError(f"{_where(source, 'cv.metrics')} lists a metric twice")
    return metrics


def _parse_estimate(table: Any, source: str | None) -> EstimateOptions:
    """[estimate]: the test layout the leaderboard estimate assumes."""
    if not isinstance(table, dict):
        raise DrugcellInputError(f"{_where(source, 'estimate')} must be a table")
    bad = set(table) - {"test_plates", "test_compounds", "test_replicates", "resamples"}
    if bad:
        raise DrugcellInputError(f"{_where(source, 'estimate.' + sorted(bad)[0])} is not a known option")
    d = EstimateOptions()
    return EstimateOptions(
        test_plates=_check_int(table.get("test_plates", d.test_plates), source, "estimate.test_plates", 1),
        test_compounds=_check_int(table.get("test_compounds", d.test_compounds), source,
                                  "estimate.test_compounds", 0),
        test_replicates=_check_int(table.get("test_replicates", d.test_replicates), source,
                                   "estimate.test_replicates", 0),
        resamples=_check_int(table.get("resamples", d.resamples), source, "estimate.resamples", 10),
    )


def config_from_dict(raw: dict[str, Any], source: str | None = None) -> RunConfig:
    """Validate a parsed TOML document (or a manifest's ``config``) into a :class:`RunConfig`."""
    unknown = set(raw) - {"cv", "output", "estimate", "predictors", "source"}
    if unknown:
        raise DrugcellInputError(
            f"{source or 'config'}: unknown top-level key(s) {sorted(unknown)}; "
            "expected [cv], [output], [estimate] and [[predictors]]"
        )
    cv = raw.get("cv", {})
    out = raw.get("output", {})
    for key, table in (("cv", cv), ("output", out)):
        if not isinstance(table, dict):
            raise DrugcellInputError(f"{_where(source, key)} must be a table")
    bad = set(cv) - {"folds", "split", "seed", "metrics", "bootstrap_resamples", "select", "select_alpha"}
    if bad:
        raise DrugcellInputError(f"{_where(source, 'cv.' + sorted(bad)[0])} is not a known option")
    bad = set(out) - {"save_predictions", "uncertainty_sample", "weights_file"}
    if bad:
        raise DrugcellInputError(f"{_where(source, 'output.' + sorted(bad)[0])} is not a known option")

    folds = _check_int(cv.get("folds", DEFAULT_FOLDS), source, "cv.folds", 2)
    seed = _check_int(cv.get("seed", DEFAULT_SEED), source, "cv.seed", 0)
    resamples = _check_int(cv.get("bootstrap_resamples", DEFAULT_BOOTSTRAP), source, "cv.bootstrap_resamples", 1)
    select = cv.get("select", "simplest")
    if select not in SELECT_RULES:
        raise DrugcellInputError(f"{_where(source, 'cv.select')} must be one of {SELECT_RULES}, got {select!r}")
    select_alpha = cv.get("select_alpha", 0.05)
    if isinstance(select_alpha, bool) or not isinstance(select_alpha, (int, float)) or not 0 < select_alpha < 1:
        raise DrugcellInputError(f"{_where(source, 'cv.select_alpha')} must be a number in (0, 1), "
                                 f"got {select_alpha!r}")
    split = cv.get("split", DEFAULT_SPLIT)
    if split not in SPLITS:
        raise DrugcellInputError(f"{_where(source, 'cv.split')} must be one of {SPLITS}, got {split!r}")
    metrics = _parse_metrics(cv.get("metrics", list(DEFAULT_METRICS)), source)

    save = out.get("save_predictions", False)
    if not isinstance(save, bool):
        raise DrugcellInputError(f"{_where(source, 'output.save_predictions')} must be true or false")
    sample = _check_int(out.get("uncertainty_sample", DEFAULT_UNCERTAINTY_SAMPLE), source, "output.uncertainty_sample", 0)
    wfile = out.get("weights_file", "") or None
    if wfile is not None and not isinstance(wfile, str):
        raise DrugcellInputError(f"{_where(source, 'output.weights_file')} must be a path string")

    return RunConfig(
        predictors=_parse_predictors(raw.get("predictors"), source),
        folds=folds, split=split, seed=seed, metrics=tuple(metrics),
        bootstrap_resamples=resamples, select_rule=select, select_alpha=float(select_alpha),
        output=OutputOptions(save_predictions=save, uncertainty_sample=sample, weights_file=wfile),
        estimate=_parse_estimate(raw.get("estimate", {}), source),
        source=source if source is not None else raw.get("source"),
    )


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML config file (a shipped config's name, e.g. ``default.toml``, works too)."""
    from drugcell.paths import resolve_config, shipped_configs

    path = resolve_config(path)
    if not path.is_file():
        raise DrugcellInputError(f"config file {path} not found; pass a TOML file, or the name of a shipped config "
                                 f"({', '.join(shipped_configs())}; see default.toml for the layout)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DrugcellInputError(f"{path}: not valid TOML ({exc})") from exc
    return config_from_dict(raw, source=str(path))


def with_overrides(
    config: RunConfig, *, folds: int | None = None, split: str | None = None,
    seed: int | None = None, metrics: list[str] | None = None,
    bootstrap_resamples: int | None = None, predictors: list[str] | None = None,
    save_predictions: bool | None = None, weights_file: str | None = None,
    sets: list[str] | None = None, select: str | None = None,
) -> RunConfig:
    """Apply command-line overrides and re-validate (so a bad override fails like a bad file).

    ``sets`` are ``section.key=value`` strings with a TOML value (``cv.folds=3``,
    ``output.save_predictions=true``, ``cv.metrics=["mejia"]``).
    """
    raw = config.to_dict()
    src = config.source
    for item in sets or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise DrugcellInputError(f"--set {item!r}: expected section.key=value, e.g. cv.folds=3")
        key, value = item.split("=", 1)
        section, name = key.strip().split(".", 1)
        if section not in ("cv", "output", "estimate"):
            raise DrugcellInputError(f"--set {item!r}: section must be 'cv', 'output' or 'estimate'")
        try:
            parsed = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value.strip()  # a bare word, e.g. split=random
        raw.setdefault(section, {})[name] = parsed
    cv, out = raw["cv"], raw["output"]
    for key, val in (("folds", folds), ("split", split), ("seed", seed),
                     ("metrics", metrics), ("bootstrap_resamples", bootstrap_resamples), ("select", select)):
        if val is not None:
            cv[key] = list(val) if key == "metrics" else val
    if save_predictions is not None:
        out["save_predictions"] = save_predictions
    if weights_file is not None:
        out["weights_file"] = weights_file
    new = config_from_dict(raw, source=src)
    return new.select(predictors) if predictors else new
