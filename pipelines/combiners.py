"""Thin Beam CombineFns around prepro's mergeable statistics."""

import apache_beam as beam

from pipelines.coders import TokenCountsCoder
from pipelines.extract import Tally
from prepro.stats import TokenCounts


@beam.typehints.with_input_types(TokenCounts)
@beam.typehints.with_output_types(TokenCounts)
class MergeTokenCounts(beam.CombineFn):
    """Exact token counts for one (feature, shard) key."""

    def __init__(self, token_types):
        self._token_types = token_types  # feature -> Arrow type, for empty accumulators

    def create_accumulator(self):
        return None

    def add_input(self, acc, counts):
        return counts if acc is None else acc.merge(counts)

    def merge_accumulators(self, accs):
        result = None
        for acc in accs:
            if acc is not None:
                result = acc if result is None else result.merge(acc)
        return result

    def extract_output(self, acc):
        return acc

    def get_accumulator_coder(self):
        return TokenCountsCoder()


class MergeTallies(beam.CombineFn):
    def create_accumulator(self):
        return Tally()

    def add_input(self, acc, tally):
        return acc.merge(tally)

    def merge_accumulators(self, accs):
        result = Tally()
        for acc in accs:
            result = result.merge(acc)
        return result

    def extract_output(self, acc):
        return acc


__all__ = ["MergeTokenCounts", "MergeTallies", "TokenCounts"]
