"""Updating an artifact from new inputs (`prepro analyze --base OLD`): the base's kept
state joins the new inputs' statistics where the job merges its own, so the result is
the full run's over the old and the new inputs together, reading only the new ones.

    Base(root, spec, golden_rows)    checked before the job: readable, format version
                                     FORMAT_VERSION, every file's checksum, the same spec,
                                     kept state for every feature, enough golden candidates
    ReadBaseState(base, ...)         the kept state as the job's own streams:
      counts   a token state read by chunks of record batches on the workers, each chunk
               re-cut into shards as a part file (pipelines/vocabulary.write_parts), so
               no worker holds the whole state; the base's totals (documents, tokens
               seen) ride on the first chunk's part, as a read task's do
      tally    the base's row figures per token feature (rows, values, missing, ...)
      numeric  the exact sums, the exact values or the sketch, with the base's figures,
               as a part ordered before every new one
      checked  the row figures of the features with nothing to learn
      golden   the base's golden-row candidates (the smallest keys of all its rows)

Why it is exact: every statistic prepro keeps merges associatively (integer counts,
exact integer sums, multisets of values), and the base kept it whole (every distinct
token, not only the kept ones), so merging it with the new inputs' gives the full
run's. The quantile sketch merges within its rank-error bound, not identically (its
compactions depend on what arrived together): `quantiles: exact` is identical.

Every file is verified against its checksum before the job, and the numeric states and
golden candidates are parsed and checked then too. A token state's record batches are
checked by the workers that read them (size, schema, order and counts of every batch):
a well-formed-looking file whose checksum was forged into the manifest fails the job
there, naming the file, and the previous artifact stays.
"""

import hashlib
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipelines import failpoints
from pipelines.errors import InputError
from pipelines.extract import Tally
from pipelines.numeric import new_stats
from pipelines.vocabulary import PartRef, counts_schema, write_parts
from prepro import artifacts, fs, spec as spec_lib, state_files
from prepro.artifacts import ArtifactError
from prepro.stats import TokenCounts
from prepro.stats.numeric import Counters, ExactQuantiles, Moments, QuantileSketch

# Record batches of a base token state per read chunk (65,536 rows each): about 1M
# tokens, ~0.1 GB in memory while it is re-cut into shards.
BATCHES_PER_CHUNK = 16
BASE_PART = -1  # the base's numeric part sorts before every read task's (indices >= 0)


class BaseError(InputError):
    """A base artifact an update cannot start from: names the base and what is wrong
    (an InputError, so a worker's reaches the driver as the job's error)."""


_VOCABULARY_KEPT = ("token_state_file",)
_KEPT_KEYS = {"TextVectorization": _VOCABULARY_KEPT, "StringLookup": _VOCABULARY_KEPT,
              "IntegerLookup": _VOCABULARY_KEPT, "Normalization": ("moments_state_file",)}


class Base:
    """A base artifact, checked for an update with `spec` before anything runs."""

    def __init__(self, root: str, spec: spec_lib.Spec, golden_rows: int, golden_limit: int):
        if not isinstance(root, str) or not root.strip():
            # An unset shell variable (`--base "$PREVIOUS"`) must not become a full run.
            raise BaseError(f"base must be an artifact directory, got {root!r}")
        if not fs.is_remote(root):
            if os.path.basename(root) == artifacts.MANIFEST and os.path.isfile(root):
                raise BaseError(f"base {root} is a manifest file: pass its directory, {os.path.dirname(root) or '.'}")
            root = os.path.abspath(root)  # workers may run in another directory
        self.root = root
        try:
            data = artifacts.read_manifest_bytes(root)
            manifest = artifacts.validate_manifest(artifacts.parse_json(data, fs.join(root, artifacts.MANIFEST)),
                                                   fs.join(root, artifacts.MANIFEST))
        except ArtifactError as e:
            raise BaseError(f"base {root}: {e}") from None
        if manifest["format_version"] != artifacts.FORMAT_VERSION:
            raise BaseError(f"base {root}: format version {manifest['format_version']}; an update needs the kept "
                            f"state of version {artifacts.FORMAT_VERSION}: run a full job with --keep-state")
        self.manifest, self.files = manifest, artifacts.StateFiles(root, manifest)
        self._check_spec(spec)
        self._check_kept_state(spec, golden_rows, golden_limit)
        try:
            self.files.verify_all()  # a tampered base: refused before the job, naming the file
        except ArtifactError as e:
            raise BaseError(f"base {root}: {e}") from None
        provenance = manifest["provenance"]
        step = {"manifest_sha256": hashlib.sha256(data).hexdigest(), "inputs": provenance["inputs"],
                "input_format": provenance["input_format"], "rows_read": provenance["rows_read"]}
        self.lineage: List[Dict[str, Any]] = provenance.get("lineage", []) + [step]
        self.manifest_sha256 = step["manifest_sha256"]
        self.golden = self._read("golden candidates", lambda: state_files.read_golden_candidates(
            self.files.read(manifest["kept_state"]["golden_candidates_file"]),
            manifest["kept_state"]["golden_candidates_limit"])) if golden_limit else []
        self._check_token_states(spec)
        for name in sorted(n for n, f in spec.features.items() if f.is_numeric):
            numeric_part(name, self, spec)  # parsed here too, so a malformed one stops nothing running
        for name in sorted(n for n, f in spec.features.items() if f.index_policy == "stable"):
            self.vocabulary(name)  # the indices to keep

    def _check_spec(self, spec: spec_lib.Spec) -> None:
        features = self.manifest["features"]
        if set(features) != set(spec.features):
            raise BaseError(f"base {self.root}: its features {sorted(features)} are not the spec's "
                            f"{sorted(spec.features)}; an update computes the same features (a new one needs "
                            f"a full run over all the data)")
        try:
            based = spec_lib.spec_from_dict(artifacts.spec_dict(self.manifest))
        except spec_lib.SpecError as e:
            raise BaseError(f"base {self.root}: {e}") from None
        for name, feature in sorted(spec.features.items()):
            # Compared with Keras's defaults filled in: spelling one out changes nothing.
            theirs, ours = _described(based.features[name]), _described(feature)
            # index_policy is how this update treats the base's indices, not what was counted.
            differ = sorted(k for k in (set(theirs) | set(ours)) - {"index_policy"}
                            if json.dumps(theirs.get(k), sort_keys=True) != json.dumps(ours.get(k), sort_keys=True))
            if differ:
                raise BaseError(f"base {self.root}: feature '{name}' was computed with other options ({', '.join(differ)}:"
                                f" {_short({k: theirs.get(k) for k in differ})} in the base, "
                                f"{_short({k: ours.get(k) for k in differ})} in the spec); an update needs the "
                                f"base's options")

    def _check_kept_state(self, spec: spec_lib.Spec, golden_rows: int, golden_limit: int) -> None:
        if "kept_state" not in self.manifest:
            raise BaseError(f"base {self.root} has no kept state: it was not made with --keep-state (run a full "
                            f"job with --keep-state once; its updates keep state too)")
        for name, feature in sorted(spec.features.items()):
            state = self.manifest["features"][name]["state"]
            wanted = _KEPT_KEYS.get(feature.layer, ())
            if feature.layer == "Discretization" and feature.options["num_bins"] is not None:
                wanted = ("quantile_state_file" if state["quantiles"] == "exact" else "quantile_sketch_file",
                          "moments_state_file")
            missing = [k for k in wanted if k not in state]
            if missing:
                raise BaseError(f"base {self.root}: feature '{name}' has no kept state ({missing[0]})")
        limit = self.manifest["kept_state"]["golden_candidates_limit"]
        if golden_limit > limit:
            raise BaseError(f"base {self.root} kept {limit} golden-row candidates; {golden_rows} golden rows need "
                            f"{golden_limit}: update with --golden-rows {limit // max(1, golden_limit // max(1, golden_rows))} "
                            f"or fewer, or run a full job")

    def _check_token_states(self, spec: spec_lib.Spec) -> None:
        """Each token state's record batches are as many as its rows need (each batch is
        checked when a worker reads it)."""
        for name in self.token_features(spec):
            state = self.manifest["features"][name]["state"]

            def batches():
                with self.open_token_state(name) as f:
                    return pa.ipc.open_file(f).num_record_batches
            found = self._read(f"{name}'s token state", batches)
            if found != _batches_for(state["token_state_rows"]):
                raise BaseError(f"base {self.root}: {state['token_state_file']}: {found} record batches, but "
                                f"token_state_rows ({state['token_state_rows']}) needs "
                                f"{_batches_for(state['token_state_rows'])}")

    def _read(self, what: str, read):
        try:
            return read()
        except (ValueError, pa.ArrowInvalid, OSError) as e:
            raise BaseError(f"base {self.root}: its {what}: {e}") from None

    def check_unchanged(self) -> None:
        """Refuses to go on if the base's manifest is no longer the one checked: another
        job published into it meanwhile (an update in place would lose that job's rows)."""
        try:
            now = hashlib.sha256(artifacts.read_manifest_bytes(self.root)).hexdigest()
        except ArtifactError as e:
            raise BaseError(f"base {self.root} changed while the update ran: {e}") from None
        if now != self.manifest_sha256:
            raise BaseError(f"base {self.root} changed while the update ran (another job published into it); "
                            f"nothing was published: run the update again on the new base")

    def check_new_inputs(self, inputs: List[Dict[str, Any]]) -> None:
        """Refuses inputs an earlier step already counted (same path and size): an update
        adds its inputs' rows, so a repeated or retried update would count them twice."""
        seen = {(i["path"], i["bytes"]): k for k, step in enumerate(self.lineage, 1) for i in step["inputs"]}
        for i in inputs:
            if (i["path"], i["bytes"]) in seen:
                raise BaseError(f"input {i['path']} ({i['bytes']} bytes) was already counted by step "
                                f"{seen[(i['path'], i['bytes'])]} of base {self.root}: an update counts only new "
                                f"inputs (a retried update that was already published is done)")

    @property
    def token_state_bytes(self) -> int:
        """The size of its token states, the part of an update that grows with the base."""
        return sum(self.manifest["files"][entry["state"]["token_state_file"]]["bytes"]
                   for entry in self.manifest["features"].values() if "token_state_file" in entry["state"])

    def token_features(self, spec: spec_lib.Spec) -> List[str]:
        return sorted(n for n, f in spec.features.items() if not (f.is_numeric or f.is_stateless))

    def open_token_state(self, name: str):
        """The verified token state file, opened for reading record batches (its size checked)."""
        return self.files.open_checked_size(self.manifest["features"][name]["state"]["token_state_file"])

    def vocabulary(self, name: str) -> List[Any]:
        """A vocabulary feature's learned tokens in index order (bytes, or ints), read
        and checked against the manifest."""
        state = self.manifest["features"][name]["state"]
        integer = self.manifest["features"][name]["layer"] == "IntegerLookup"
        return _parsed(self, state["vocabulary_file"], lambda data: state_files.read_vocabulary(
            data, integer, state["exceptions"], state["vocabulary_size"]))

    def figures(self, name: str) -> Dict[str, Any]:
        return self.manifest["features"][name]["figures"]

    def token_chunks(self, name: str) -> List[Tuple[str, int, int]]:
        """(feature, first batch, stop batch) of every read chunk; the first chunk also
        when the state has no rows (it carries the totals)."""
        batches = _batches_for(self.manifest["features"][name]["state"]["token_state_rows"])
        return [(name, start, min(batches, start + BATCHES_PER_CHUNK))
                for start in range(0, max(batches, 1), BATCHES_PER_CHUNK)]


def _described(feature: spec_lib.FeatureSpec) -> Dict[str, Any]:
    return {**feature.to_dict(), "config": spec_lib._plain(feature.options)}


def _batches_for(rows: int) -> int:
    return -(-rows // state_files.TOKEN_STATE_BATCH)


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ReadBaseState(beam.PTransform):
    """The base's kept state -> {"counts", "tally", "numeric", "checked", "golden"}: the
    streams AnalyzeFeatures merges the new inputs' statistics in (see the module doc)."""

    def __init__(self, base: Base, spec: spec_lib.Spec, num_shards: int, work_dir: str):
        super().__init__()
        self._base, self._spec, self._num_shards, self._work_dir = base, spec, num_shards, work_dir

    def expand(self, pbegin):
        base, spec = self._base, self._spec
        token = base.token_features(spec)
        numeric = sorted(n for n, f in spec.features.items() if f.is_numeric)
        checked = sorted(n for n, f in spec.features.items() if f.is_stateless)
        chunks = [chunk for name in token for chunk in base.token_chunks(name)]
        return {
            "counts": (pbegin
                       | "TokenStateChunks" >> beam.Create(chunks)
                       | "SpreadChunks" >> beam.Reshuffle()
                       | "ReshardTokenState" >> beam.FlatMap(reshard_chunk, base, spec, self._num_shards,
                                                             self._work_dir)
                       .with_output_types(Tuple[Tuple[str, int], PartRef])),
            "tally": pbegin | "BaseTallies" >> beam.Create([(n, _tally(base.figures(n))) for n in token]),
            "checked": pbegin | "BaseChecked" >> beam.Create([(n, _tally(base.figures(n))) for n in checked]),
            "numeric": (pbegin
                        | "NumericFeatures" >> beam.Create(numeric)
                        | "ReadNumericState" >> beam.Map(numeric_part, base, spec)),
            "golden": pbegin | "BaseGoldenCandidates" >> beam.Create(base.golden),
        }


def reshard_chunk(chunk: Tuple[str, int, int], base: Base, spec: spec_lib.Spec, num_shards: int,
                  work_dir: str) -> Iterator[Tuple[Tuple[str, int], PartRef]]:
    """One chunk of a base token state -> its part file, cut into shards like a read
    task's; the first chunk carries the base's documents and tokens seen."""
    name, first, stop = chunk
    feature = spec.features[name]
    state, figures = base.manifest["features"][name]["state"], base.figures(name)
    token_type, weighted = pa.int64() if feature.is_integer else pa.binary(), feature.weight is not None
    relpath = state["token_state_file"]
    with base.open_token_state(name) as f:
        try:
            tables = list(state_files.token_state_batches(f, feature.is_integer, first, stop,
                                                          _batches_for(state["token_state_rows"]), weighted))
        except (ValueError, pa.ArrowInvalid, OSError) as e:
            raise BaseError(artifacts.one_line(f"base {base.root}: {relpath}: {e}")) from None
    schema = counts_schema(token_type, weighted)
    # Distinct tokens already, so one table: nothing to re-aggregate.
    table = pa.concat_tables(tables).combine_chunks().cast(schema) if tables else schema.empty_table()
    counts = TokenCounts(token_type, [table] if table.num_rows else [], state["documents"] if first == 0 else 0,
                         figures["tokens_seen"] if first == 0 else 0, weighted)
    for shard, ref in write_parts(name, counts, num_shards, work_dir):
        yield (name, shard), ref
    failpoints.reach("base")


def numeric_part(name: str, base: Base, spec: spec_lib.Spec):
    """A numeric feature's kept state as the part ordered first: ((feature, group), (index, stats))."""
    feature = spec.features[name]
    state, figures = base.manifest["features"][name]["state"], base.figures(name)
    stats = new_stats(feature)
    stats.counters = Counters(**{k: figures[k] for k in Counters.__dataclass_fields__})
    if feature.layer == "Normalization":
        relpath = state["moments_state_file"]
        width = int(np.prod(state["shape"], dtype=np.int64))
        sums, square_sums = _parsed(base, relpath, lambda data: state_files.read_moments_state(data, width))
        stats.moments = Moments(state["count"], sums, square_sums)
        return (name, BASE_PART), (BASE_PART, stats)
    if "moments_state_file" in state:  # a learned Discretization's moments (its profile's)
        relpath = state["moments_state_file"]
        sums, square_sums = _parsed(base, relpath, lambda data: state_files.read_moments_state(data, 1))
        stats.moments = Moments(base.manifest["features"][name]["profile"]["moments"]["count"], sums, square_sums)
    if "quantile_state_file" in state:
        relpath = state["quantile_state_file"]
        values, weights, counts = _parsed(base, relpath, lambda data: state_files.read_quantile_state(
            data, state["quantile_state_rows"]))
        stats.quantiles = ExactQuantiles.from_distinct(values, weights, counts)
    elif "quantile_sketch_file" in state:
        relpath = state["quantile_sketch_file"]
        stats.quantiles = _parsed(base, relpath, lambda data: QuantileSketch.from_bytes(feature.rank_error, data))
    return (name, BASE_PART), (BASE_PART, stats)


def _parsed(base: Base, relpath: str, parse):
    try:
        data = base.files.read(relpath)  # checked against the manifest again
        return parse(data)
    except Exception as e:  # noqa: BLE001  (tfx-bsl raises its own kinds on a malformed sketch)
        raise BaseError(artifacts.one_line(f"base {base.root}: {relpath}: {e}")) from None


def _tally(figures: Dict[str, Any]) -> Tally:
    return Tally(**{k: figures.get(k, 0) for k in Tally.__dataclass_fields__})  # (zero_weight: weighted only)
