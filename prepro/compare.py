"""What changed between two versions of an artifact, from their recorded state alone:
`prepro diff OLD NEW` and `prepro.diff(old, new)` (docs/report.md).

Per vocabulary feature: tokens added and dropped (with their counts), tokens whose index
moved, the share of NEW's token occurrences that OLD's vocabulary leaves out of
vocabulary (the OOV rate a model deployed with OLD sees on NEW's data) and the
Jensen-Shannon divergence of the two token distributions. Per numeric feature: the
mean's shift in OLD's standard deviations and, for a learned Discretization, the
population stability index over OLD's buckets. `failing(expression)` is the gate.
"""

import ast
import dataclasses
import json
import math
from typing import Any, Dict, List, Optional

import numpy as np

from prepro import profile as profile_lib

VOCABULARY_LAYERS = ("TextVectorization", "StringLookup", "IntegerLookup")
# The names `--fail-on` knows, each a number per feature (absent where it does not apply).
METRICS = {
    "oov_rate": "share of NEW's token occurrences outside OLD's vocabulary (upper bound when not exact)",
    "js": "Jensen-Shannon divergence of the token distributions, in bits (0 same, 1 disjoint)",
    "added": "tokens in NEW's vocabulary and not in OLD's",
    "dropped": "tokens in OLD's vocabulary and not in NEW's",
    "moved": "tokens in both whose index differs",
    "psi": "population stability index of NEW's values over OLD's Discretization buckets",
    "mean_shift": "largest |NEW mean - OLD mean| in OLD's standard deviations",
    "missing_rate": "NEW's share of rows with the value missing",
}
SHOWN = 20  # tokens listed per kind of change


@dataclasses.dataclass
class FeatureDiff:
    name: str
    layer: str
    metrics: Dict[str, float]
    details: Dict[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        return {"layer": self.layer, **self.metrics, **self.details}


@dataclasses.dataclass
class Diff:
    """A plain object: `features` per name, `only_in_old` / `only_in_new` feature names."""
    old: str
    new: str
    features: Dict[str, FeatureDiff]
    only_in_old: List[str]
    only_in_new: List[str]

    def to_dict(self) -> Dict[str, Any]:
        return {"old": self.old, "new": self.new, "only_in_old": self.only_in_old, "only_in_new": self.only_in_new,
                "features": {name: f.to_dict() for name, f in sorted(self.features.items())}}

    def to_json(self) -> str:
        return json.dumps(_finite(self.to_dict()), indent=1, ensure_ascii=False)

    def failing(self, expression: str) -> List[str]:
        """The features for which `expression` (e.g. "psi > 0.2 or oov_rate > 0.05") holds."""
        test = Gate(expression)
        return [name for name, f in sorted(self.features.items()) if test(f.metrics)]

    def lines(self) -> List[str]:
        out = [f"{self.old} -> {self.new}"]
        for name in self.only_in_old:
            out.append(f"{name}: only in OLD")
        for name in self.only_in_new:
            out.append(f"{name}: only in NEW")
        for name, f in sorted(self.features.items()):
            out.append("")
            out.append(f"{name}  ({f.layer})")
            out.extend("  " + line for line in _feature_lines(f))
        return out


def diff(old, new) -> Diff:
    """Compares two artifacts (paths or `prepro.Artifacts`), feature by feature."""
    from prepro.layers import Artifacts, load
    old = old if isinstance(old, Artifacts) else load(old)
    new = new if isinstance(new, Artifacts) else load(new)
    common = sorted(set(old.features) & set(new.features))
    features = {name: feature_diff(old, new, name) for name in common}
    return Diff(old.root, new.root, features, sorted(set(old.features) - set(new.features)),
                sorted(set(new.features) - set(old.features)))


def feature_diff(old, new, name: str) -> FeatureDiff:
    o, n = old.manifest["features"][name], new.manifest["features"][name]
    metrics: Dict[str, float] = {}
    details: Dict[str, Any] = {}
    g = n["figures"]
    metrics["missing_rate"] = g["missing"] / g["rows"] if g["rows"] else 0.0
    details["old_missing_rate"] = o["figures"]["missing"] / o["figures"]["rows"] if o["figures"]["rows"] else 0.0
    if o["layer"] != n["layer"]:
        details["layer_changed"] = [o["layer"], n["layer"]]
    elif n["layer"] in VOCABULARY_LAYERS:
        _vocabulary_diff(old, new, name, metrics, details)
    elif n["layer"] == "Normalization":
        (old_mean, old_variance), (new_mean, new_variance) = old.moments(name), new.moments(name)
        if old_mean.shape == new_mean.shape:
            shift = profile_lib.mean_shift(old_mean, old_variance, new_mean)
            metrics["mean_shift"] = float(np.max(np.abs(shift))) if shift.size else 0.0
            details.update(old_mean=_list(old_mean), new_mean=_list(new_mean), old_variance=_list(old_variance),
                           new_variance=_list(new_variance))
        else:
            details["shape_changed"] = [list(old_mean.shape), list(new_mean.shape)]
    elif n["layer"] == "Discretization" and "profile" in o and "profile" in n:
        _discretization_diff(old, new, name, metrics, details)
    return FeatureDiff(name, n["layer"], metrics, details)


def _vocabulary_diff(old, new, name: str, metrics: Dict[str, float], details: Dict[str, Any]) -> None:
    old_array, new_array = old.vocabulary_array(name), new.vocabulary_array(name)  # (same layer: same type)
    old_tokens, new_tokens = _Tokens(old_array), _Tokens(new_array)
    old_counts, new_counts = _counts(old, name), _counts(new, name)
    at_old, at_new = _positions(old_array, new_array)
    added, dropped = np.isnan(at_old), np.isnan(at_new)
    both = ~added
    moved = both & (at_old != np.arange(len(new_tokens)))
    start_old, start_new = old.manifest["features"][name]["state"]["token_start"], \
        new.manifest["features"][name]["state"]["token_start"]
    if start_old != start_new:  # every index moves with the reserved slots
        moved = both
    metrics.update(added=int(added.sum()), dropped=int(dropped.sum()), moved=int(moved.sum()))
    details["old_size"], details["new_size"] = len(old_tokens), len(new_tokens)
    details["top_added"] = _listed(new_tokens, new_counts, np.flatnonzero(added))
    details["top_dropped"] = _listed(old_tokens, old_counts, np.flatnonzero(dropped))
    details["top_moved"] = [[_shown(new_tokens[i]), int(at_old[i]) + start_old, int(i) + start_new]
                            for i in np.flatnonzero(moved)[:SHOWN]]
    if new_counts is None or old_counts is None:
        details["not_measured"] = "oov_rate and js need format version 4 counts in both artifacts"
        return
    total_new = new.count_distribution(name).occurrences
    covered = int(new_counts[both].sum())
    unknown = _unmeasured_mass(new, name, new_counts, int(dropped.sum()), total_new)
    exact = unknown == 0
    if not exact and "token_state_file" in new.manifest["features"][name]["state"]:
        covered, unknown, exact = _covered_by_state(new, name, old_array), 0, True
    metrics["oov_rate"] = 1.0 - covered / total_new if total_new else 0.0
    details["oov_rate_exact"] = exact
    details["oov_rate_low"] = max(0.0, 1.0 - (covered + unknown) / total_new) if total_new else 0.0
    # Over the union of both vocabularies, each side's other tokens pooled in one bucket.
    total_old = old.count_distribution(name).occurrences
    p_old_shared = np.zeros(len(new_tokens), np.int64)
    p_old_shared[both] = old_counts[at_old[both].astype(np.int64)]
    p = np.concatenate([p_old_shared, old_counts[dropped], [total_old - old_counts.sum()]])
    q = np.concatenate([new_counts, np.zeros(int(dropped.sum())), [total_new - new_counts.sum()]])
    metrics["js"] = profile_lib.jensen_shannon(p, q)


def _positions(old_array, new_array):
    """For each NEW token its index in OLD, and for each OLD token its index in NEW
    (NaN: not there). One dictionary encoding of both (one hash pass, not two lookups);
    none when they are the same tokens in the same order."""
    import pyarrow as pa
    if old_array.equals(new_array):
        same = np.arange(len(old_array), dtype=np.float64)
        return same, same.copy()
    codes = pa.chunked_array([old_array, new_array], old_array.type).dictionary_encode().combine_chunks().indices
    codes = codes.to_numpy(zero_copy_only=False)
    old_codes, new_codes = codes[:len(old_array)], codes[len(old_array):]
    size = int(codes.max()) + 1 if len(codes) else 0
    index_in_old, index_in_new = np.full(size, np.nan), np.full(size, np.nan)
    index_in_old[old_codes] = np.arange(len(old_codes))
    index_in_new[new_codes] = np.arange(len(new_codes))
    return index_in_old[new_codes], index_in_new[old_codes]


class _Tokens:
    """An Arrow array of tokens, shown one at a time (text decoded)."""

    def __init__(self, array):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i):
        token = self.array[int(i)].as_py()
        return token.decode("utf-8", "replace") if isinstance(token, bytes) else token


def _counts(arts, name: str) -> Optional[np.ndarray]:
    return arts.token_counts(name) if "profile" in arts.manifest["features"][name] else None


def _unmeasured_mass(new, name: str, new_counts: np.ndarray, dropped: int, total_new: int) -> int:
    """At most how many of NEW's occurrences belong to OLD tokens NEW did not keep: none
    when NEW kept every token it saw; else NEW's out-of-vocabulary occurrences, and when
    NEW's cut is by count alone, at most its smallest kept count per such token."""
    entry = new.manifest["features"][name]
    if entry["figures"]["tokens_kept"] >= entry["figures"]["distinct_tokens"] or dropped == 0:
        return 0
    outside = total_new - int(new_counts.sum())
    feature = new.spec.features[name]
    if feature.weight is None and not feature.min_document_frequency and len(new_counts):
        outside = min(outside, dropped * int(new_counts.min()))
    return outside


def _covered_by_state(new, name: str, old_array) -> int:
    """NEW's occurrences of OLD's tokens, from NEW's kept token state (every token)."""
    import pyarrow.compute as pc
    state = new.token_state(name)
    tokens = state["token"].cast(old_array.type)
    wanted = old_array
    return int(pc.sum(state["count"].filter(pc.is_in(tokens, value_set=wanted))).as_py() or 0)


def _discretization_diff(old, new, name: str, metrics: Dict[str, float], details: Dict[str, Any]) -> None:
    old_moments, new_moments = (a.manifest["features"][name]["profile"]["moments"] for a in (old, new))
    if old_moments["count"] and new_moments["count"]:
        metrics["mean_shift"] = abs(float(profile_lib.mean_shift(old_moments["mean"], old_moments["variance"],
                                                                 new_moments["mean"])))
    details.update(old_mean=old_moments["mean"], new_mean=new_moments["mean"],
                   old_variance=old_moments["variance"], new_variance=new_moments["variance"])
    boundaries = old.bin_boundaries(name)
    expected = old.quantile_profile(name).bucket_shares(boundaries)
    actual = new.quantile_profile(name).bucket_shares(boundaries)
    metrics["psi"] = profile_lib.population_stability_index(expected, actual)
    details["old_bucket_shares"], details["new_bucket_shares"] = _list(expected), _list(actual)
    state = new.manifest["features"][name]["state"]
    details["share_error_bound"] = state["rank_error_bound"] + 1 / new.manifest["features"][name]["profile"][
        "quantile_steps"]


def _listed(tokens, counts, positions) -> List[list]:
    """The SHOWN most frequent of `positions` (ranks are by count: the first ones)."""
    chosen = positions[:SHOWN]
    return [[_shown(tokens[i]), int(counts[i]) if counts is not None else None] for i in chosen]


def _shown(token):
    return token if isinstance(token, (int, str)) else str(token)


def _list(values) -> list:
    return [float(v) for v in np.asarray(values, np.float64).ravel()]


def _finite(value):
    """JSON has no inf or NaN: they become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _feature_lines(f: FeatureDiff):
    m, d = f.metrics, f.details
    if "layer_changed" in d:
        yield f"layer changed: {d['layer_changed'][0]} -> {d['layer_changed'][1]}"
    if "added" in m:
        yield (f"vocabulary       {d['old_size']:,} -> {d['new_size']:,} tokens: {m['added']:,} added, "
               f"{m['dropped']:,} dropped, {m['moved']:,} moved")
        if "oov_rate" in m:
            bound = "" if d["oov_rate_exact"] else f" (at least {d['oov_rate_low']:.2%}: NEW kept too few tokens to say)"
            yield f"OOV rate         {m['oov_rate']:.2%} of NEW's token occurrences are outside OLD's vocabulary{bound}"
            yield f"divergence       {m['js']:.4f} bits (Jensen-Shannon)"
        for key, label in (("top_added", "added"), ("top_dropped", "dropped")):
            if d[key]:
                yield f"{label:<17}" + ", ".join(f"{t!r} {c:,}" if c is not None else repr(t) for t, c in d[key])
        if d["top_moved"]:
            yield "moved            " + ", ".join(f"{t!r} {a}->{b}" for t, a, b in d["top_moved"][:10])
    if "psi" in m:
        yield f"PSI              {m['psi']:.4f} over OLD's {len(d['old_bucket_shares'])} buckets"
    if "mean_shift" in m:
        yield f"mean shift       {m['mean_shift']:.3f} OLD standard deviations"
    yield f"missing          {d['old_missing_rate']:.2%} -> {m['missing_rate']:.2%} of rows"


class Gate:
    """A `--fail-on` expression over METRICS: comparisons joined by and / or / not, e.g.
    "psi > 0.2 or oov_rate > 0.05". A comparison on a metric a feature lacks is false.
    Parsed with Python's `ast` and evaluated here: nothing of it is executed."""

    MAX_DEPTH = 32  # nested and / or / not: far beyond any gate, far below Python's recursion limit
    _COMPARE = {ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b,
                ast.GtE: lambda a, b: a >= b, ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}

    def __init__(self, expression: str):
        self.expression = expression
        try:
            self._tree = ast.parse(expression.strip(), mode="eval").body
        except SyntaxError:
            raise ValueError(f"--fail-on {expression!r}: not an expression like 'psi>0.2 or oov_rate>0.05'") from None
        except (RecursionError, MemoryError):  # the parser's own limits, on deeply nested text
            raise ValueError(f"--fail-on: nested deeper than {self.MAX_DEPTH} levels") from None
        self._check(self._tree)

    def _check(self, node, depth: int = 0) -> None:
        if depth > self.MAX_DEPTH:
            raise ValueError(f"--fail-on: nested deeper than {self.MAX_DEPTH} levels")
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value, depth + 1)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._check(node.operand, depth + 1)
        elif isinstance(node, ast.Compare) and all(type(op) in self._COMPARE for op in node.ops):
            for operand in [node.left, *node.comparators]:
                if isinstance(operand, ast.Name):
                    if operand.id not in METRICS:
                        raise ValueError(f"--fail-on: unknown metric {operand.id!r}; the metrics are "
                                         f"{', '.join(sorted(METRICS))}")
                elif _number(operand) is None:
                    raise ValueError(f"--fail-on: {ast.unparse(operand)!r} is neither a metric nor a number")
        else:
            raise ValueError(f"--fail-on: {ast.unparse(node)!r} is not a comparison (metric > number), "
                             f"and, or, not")

    def __call__(self, metrics: Dict[str, float]) -> bool:
        return self._eval(self._tree, metrics)

    def _eval(self, node, metrics) -> bool:
        if isinstance(node, ast.BoolOp):
            results = (self._eval(v, metrics) for v in node.values)
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.UnaryOp):
            return not self._eval(node.operand, metrics)
        operands = [metrics.get(o.id) if isinstance(o, ast.Name) else _number(o) for o in [node.left, *node.comparators]]
        if any(v is None for v in operands):
            return False
        return all(self._COMPARE[type(op)](a, b) for op, a, b in zip(node.ops, operands, operands[1:]))


def _number(node) -> Optional[float]:
    """The value of a number in a gate (a constant, possibly signed: -0.1), else None."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign, node = (-1 if isinstance(node.op, ast.USub) else 1), node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sign * node.value
    return None
