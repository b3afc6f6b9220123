"""Plain mergeable statistics. `merge` is associative and commutative and the results
are canonical, so bundles, workers, runners and input order cannot change a byte."""

from prepro.stats.counts import TokenCounts, shard_of

__all__ = ["TokenCounts", "shard_of"]
