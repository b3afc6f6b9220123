"""Beam transforms and job entry points for prepro. Imports prepro, never the reverse.

    from pipelines import AnalyzeFeatures, ReadInputs

    result = rows | AnalyzeFeatures(spec="spec.yaml", output="gs://bucket/arts/")
    result.manifest | beam.Map(notify)

The transforms are imported on first use (PEP 562), so a process that needs only a
helper module (the Keras helper, the CLI's argument parsing) does not import Beam.
"""

_EXPORTS = {"AnalyzeFeatures": "pipelines.analyze", "AnalyzeResult": "pipelines.analyze",
            "ReadInputs": "pipelines.analyze", "ToBatches": "pipelines.elements"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_EXPORTS[name]), name)
