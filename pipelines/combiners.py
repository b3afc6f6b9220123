"""Thin Beam CombineFns around prepro's mergeable statistics."""

import apache_beam as beam

from pipelines.extract import Tally


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


__all__ = ["MergeTallies"]
