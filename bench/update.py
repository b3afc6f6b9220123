"""An update (`--base`) against a full recompute, on the huge-vocabulary corpus.

    python -m bench.update                  # full size: 45M rows (~21.7M distinct) + 5% new rows
    python -m bench.update --scale 0.05     # small and quick

Steps, each a fresh `prepro analyze` process under `bench.measure` (wall time, peak RSS
per process), on the default runner:
1. base:   the huge-vocabulary corpus (bench/huge_vocab.py's generator) with --keep-state;
2. update: --base the base, --input only the new rows (a new file of `--new-share` of the
           rows, another seed: new tokens and higher counts for old ones);
3. full:   --keep-state over the old and the new files together.
Then the update's state files are compared with the full run's by SHA-256 (they must be
identical) and the ratio update / full is printed.
"""

import argparse
import json
import os
import sys

from bench.huge_vocab import COLUMN, FEATURE, ID_SPACE, REPO, ROWS, _measured, _peaks, generate


def run(args) -> int:
    rows, id_space = round(ROWS * args.scale), round(ID_SPACE * args.scale)
    new_rows = round(rows * args.new_share)
    old_data = os.path.join(args.data_dir, f"huge-vocab-{rows}")
    new_data = os.path.join(args.data_dir, f"huge-vocab-new-{new_rows}")
    for data, n, files, seed in ((old_data, rows, 8, 7), (new_data, new_rows, 1, 8)):
        if not os.path.exists(os.path.join(data, "meta.json")):
            print(f"generating {data}", file=sys.stderr)
            generate(data, n, id_space, files, seed)
    workdir = os.path.join(args.data_dir, "runs", f"update-{rows}-{new_rows}")
    os.makedirs(workdir, exist_ok=True)
    spec = os.path.join(workdir, "spec.yaml")
    with open(spec, "w") as f:
        json.dump({"features": {FEATURE: {"source": COLUMN, "layer": "StringLookup"}}}, f)  # JSON is YAML
    exe = os.path.join(os.path.dirname(sys.executable), "prepro")
    out = {name: os.path.join(workdir, name) for name in ("base", "update", "full")}

    def analyze(name, inputs, *extra):
        print(f"prepro analyze: {name}", file=sys.stderr)
        return _measured(workdir, name, [exe, "analyze", "--spec", spec, *[a for i in inputs for a in ("--input", i)],
                                         "--format", "csv", "--output", out[name], "--golden-rows", "0", *extra,
                                         *args.beam_args])

    old_glob, new_glob = os.path.join(old_data, "*.csv"), os.path.join(new_data, "*.csv")
    base = analyze("base", [old_glob], "--keep-state")
    update = analyze("update", [new_glob], "--base", out["base"])
    full = analyze("full", [old_glob, new_glob], "--keep-state")
    manifests = {}
    for name in ("base", "update", "full"):
        with open(os.path.join(out[name], "manifest.json")) as f:
            manifests[name] = json.load(f)
    same = manifests["update"]["files"] == manifests["full"]["files"]
    state = manifests["full"]["features"][FEATURE]["state"]
    kept_mb = manifests["full"]["files"][state["token_state_file"]]["bytes"] / 1e6
    mb = {name: sum(i["bytes"] for i in m["provenance"]["inputs"]) / 1e6 for name, m in manifests.items()}
    print(f"\nbase {rows:,} rows ({mb['base']:,.0f} MB), new {new_rows:,} rows ({mb['update']:,.0f} MB); "
          f"full vocabulary {state['vocabulary_size']:,} tokens, kept state {kept_mb:,.0f} MB "
          f"({state['token_state_rows']:,} tokens)")
    print(f"{'step':<8}{'wall s':>8}  peak RSS per process")
    for name, measured in (("base", base), ("update", update), ("full", full)):
        print(f"{name:<8}{measured['wall_s']:>8.1f}  {_peaks(measured)}")
    print(f"update / full: {update['wall_s'] / full['wall_s']:.2f}")
    print(f"{'PASS' if same else 'FAIL'}  update's state files = full run's (sizes and SHA-256)")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"base": base, "update": update, "full": full, "same": same, "kept_mb": kept_mb}, f, indent=1)
    return 0 if same else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply rows and id space")
    parser.add_argument("--new-share", type=float, default=0.05, help="new rows, as a share of the base's")
    parser.add_argument("--data-dir", default=os.path.join(REPO, "bench", "data"))
    args, beam_args = parser.parse_known_args(argv)
    args.beam_args = beam_args
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
