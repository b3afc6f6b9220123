"""Flex Template entry point: the template's parameters become `prepro analyze` options.

Dataflow passes each template parameter as `--name=value`; everything that is not one
of prepro's own options (spec, input, format, output, shards, golden_rows) goes to Beam.
"""

import sys

from pipelines import cli

PREPRO_OPTIONS = {"spec", "input", "format", "output", "shards", "golden_rows"}


def to_cli(argv):
    """Template arguments -> `prepro analyze` arguments (`--golden_rows` -> `--golden-rows`)."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        key = name.lstrip("-")
        if arg.startswith("--") and key in PREPRO_OPTIONS:
            out += [f"--{key.replace('_', '-')}", value] if eq else [f"--{key.replace('_', '-')}"]
        else:
            out.append(arg)
    return ["analyze", *out]


if __name__ == "__main__":
    sys.exit(cli.main(to_cli(sys.argv[1:])))
