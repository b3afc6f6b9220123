"""`prepro report`: one self-contained HTML page per artifact, to look at before training
(docs/report.md).

Everything comes from the artifact's recorded state (`prepro.profile`), never from the
data. The page has no script and loads nothing: plots are matplotlib's SVG inlined, styles
inline, and a Content-Security-Policy forbids any request, so it opens the same from
disk, from a bucket's web view or inside a notebook. A large vocabulary is summarised
(its count distribution and top tokens), never embedded.
"""

import dataclasses
import html
import io
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np

from prepro import compare, fs, spec as spec_lib

TOP_TOKENS = 20
POSITIONS_SHOWN = 32  # Normalization positions listed per feature
BOUNDARIES_DRAWN = 200  # dashed lines per histogram at most (more: every k-th; beyond, a solid band)
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#c9d1dc}header code{background:#2c3645;color:#fff}nav a{color:#9cc7ff;margin-right:12px}
main{padding:8px 28px 40px}section.feature{background:#fff;border:1px solid #dde2e8;border-radius:8px;
margin:18px 0;padding:14px 20px}h2{margin:0 0 8px;font-size:18px}h2 small{color:#5b6575;font-weight:normal}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}table{border-collapse:collapse;font-size:13px}
td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
th{color:#5b6575;font-weight:600}figure{margin:0}figure svg{max-width:100%;height:auto}
figcaption{color:#5b6575;font-size:12px;max-width:520px}.drift{border-top:1px dashed #dde2e8;margin-top:12px;padding-top:8px}
.note{color:#8a4b00}code{background:#eef1f5;padding:0 3px;border-radius:3px}
"""
_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclasses.dataclass
class Report:
    """The page (`html`); in a notebook it displays inline."""
    html: str
    features: List[str]
    seconds: float

    def save(self, path: str) -> str:
        fs.write_bytes(path, self.html.encode("utf-8"))
        return path

    def _repr_html_(self) -> str:
        # In an iframe: the page's own styles stay out of the notebook's.
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:720px;'
                f'border:1px solid #ddd" sandbox></iframe>')


def build_report(arts, base=None) -> Report:
    """The report of `arts` (a `prepro.Artifacts`), with a drift view against `base`
    (an older version: a path or `prepro.Artifacts`) when given."""
    from prepro.layers import Artifacts, load
    started = time.perf_counter()
    if base is not None and not isinstance(base, Artifacts):
        base = load(base)
    comparison = compare.diff(base, arts) if base is not None else None
    plots = _Plots()
    sections = [_section(arts, name, plots, base, comparison) for name in arts.features]
    page = _page(arts, base, comparison, sections)
    return Report(page, arts.features, time.perf_counter() - started)


def _page(arts, base, comparison, sections: List[str]) -> str:
    prov = arts.manifest["provenance"]
    size = sum(i["bytes"] for i in prov["inputs"])
    lineage = prov.get("lineage", [])
    nav = " ".join(f'<a href="#feature-{html.escape(n)}">{html.escape(n)}</a>' for n in arts.features)
    base_line = ""
    if base is not None:
        base_line = f"<p>Drift against <code>{html.escape(base.root)}</code>"
        if comparison.only_in_old or comparison.only_in_new:
            base_line += (f"; only in the base: {html.escape(', '.join(comparison.only_in_old) or 'none')}; "
                          f"new: {html.escape(', '.join(comparison.only_in_new) or 'none')}")
        base_line += "</p>"
    versions = prov.get("versions", {})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>prepro report: {html.escape(arts.root)}</title><style>{_STYLE}</style></head>
<body><header><h1>prepro report</h1>
<p><code>{html.escape(arts.root)}</code>: {prov['rows_read']:,} rows, {size / 1e6:,.1f} MB from
{len(prov['inputs']):,} file(s){f', {len(lineage)} earlier update step(s)' if lineage else ''};
format v{arts.manifest['format_version']}; prepro {html.escape(str(versions.get('prepro')))},
Beam {html.escape(str(versions.get('apache-beam')))}</p>{base_line}
<nav>{nav}</nav></header>
<main>{''.join(sections)}</main></body></html>
"""


def _section(arts, name: str, plots: "_Plots", base, comparison) -> str:
    entry = arts.manifest["features"][name]
    layer, g = entry["layer"], entry["figures"]
    source = entry["source"] if isinstance(entry["source"], str) else ", ".join(entry["source"])
    body: List[str] = []
    if layer in compare.VOCABULARY_LAYERS:
        body += _vocabulary(arts, name, plots)
    elif layer == "Discretization":
        body += _discretization(arts, name, plots)
    elif layer == "Normalization":
        body += _normalization(arts, name)
    else:
        body.append(_table([("rows", g["rows"]), ("values", g["values"]), ("missing", g["missing"]),
                            ("invalid UTF-8 replaced", g["invalid_utf8_replaced"]),
                            ("invalid UTF-8 skipped", g["invalid_utf8_skipped"])]))
    if comparison is not None and name in comparison.features:
        body.append(_drift(arts, base, name, comparison.features[name], plots))
    return (f'<section class="feature" id="feature-{html.escape(name)}" data-feature="{html.escape(name)}" '
            f'data-layer="{layer}"><h2>{html.escape(name)} <small>{layer} &larr; {html.escape(source)}</small></h2>'
            + "".join(body) + "</section>")


# --------------------------------------------------------------------------- vocabularies

def _vocabulary(arts, name: str, plots: "_Plots") -> List[str]:
    entry = arts.manifest["features"][name]
    g, state = entry["figures"], entry["state"]
    feature = arts.spec.features[name]
    limit = spec_lib.max_learned_tokens(feature)
    rows = [("rows", g["rows"]), ("missing", g["missing"]), ("token occurrences", g["tokens_seen"]),
            ("mask/OOV tokens seen", g["special_tokens_seen"]), ("distinct tokens", g["distinct_tokens"]),
            ("tokens kept", g["tokens_kept"]), ("reserved indices", state["token_start"]),
            ("max_tokens leaves room for", "no limit" if limit is None else limit),
            ("below min_count / min_document_frequency", g["below_thresholds"]),
            ("coverage at the cut", f"{g['coverage']:.2%}"), ("OOV share at the cut", f"{1 - g['coverage']:.2%}")]
    out = ['<div class="row">', _table(rows), _top_tokens(g)]
    if "profile" not in entry:
        out.append('<p class="note">No profile: this artifact predates format version 4 (re-run the analyze '
                   'job for the plots).</p></div>')
        return out
    out.append("</div>")
    distribution = arts.count_distribution(name)
    if distribution.distinct == 0:  # (a hand-made artifact: a job refuses an empty vocabulary)
        out.append('<p class="note">No tokens: nothing to plot.</p>')
        return out
    ranks = distribution.plot_ranks()
    cut = g["tokens_kept"]
    fig, ax = plots.new()
    ax.loglog(ranks, distribution.count_at_rank(ranks), color="#2f6db5", lw=1.6, label="count at rank")
    ax.axvline(cut, color="#c0392b", ls="--", lw=1.2, label=f"cut: {cut:,} tokens")
    if limit is not None and limit != cut:
        ax.axvline(limit, color="#7f8c8d", ls=":", lw=1.2, label=f"max_tokens: {limit:,}")
    ax.set(xlabel="rank (by count)", ylabel="occurrences", title="Rank-frequency")
    ax.legend(fontsize=8)
    row = ['<div class="row">', plots.figure(fig, "rank-frequency",
                                             f"{distribution.distinct:,} distinct tokens, "
                                             f"{distribution.occurrences:,} occurrences (mask/OOV tokens aside).")]
    fig, ax = plots.new()
    sizes = np.unique(np.concatenate([ranks, [cut]]))
    ax.semilogx(sizes, 100 * distribution.coverage(sizes), color="#2f6db5", lw=1.6)
    ax.plot([cut], [100 * g["coverage"]], "o", color="#c0392b",
            label=f"cut: {cut:,} tokens, {g['coverage']:.2%} covered")
    if limit is not None and limit != cut:
        ax.axvline(limit, color="#7f8c8d", ls=":", lw=1.2, label=f"max_tokens: {limit:,}")
    if feature.min_count > 1:
        at = distribution.tokens_with_count_at_least(feature.min_count)
        ax.axvline(max(at, 1), color="#8e44ad", ls="-.", lw=1.2, label=f"min_count {feature.min_count}: {at:,}")
    ax.set(xlabel="vocabulary size (most frequent tokens)", ylabel="% of occurrences covered",
           title="Coverage", ylim=(0, 101))
    ax.legend(fontsize=8, loc="lower right")
    row.append(plots.figure(fig, "coverage", f"OOV share at the cut: {1 - g['coverage']:.2%} of token occurrences."
                            + (f" min_document_frequency {feature.min_document_frequency} also applies."
                               if feature.min_document_frequency > 1 else "")))
    if "document_frequencies_file" in state and state["vocabulary_size"]:
        row.append(_idf_plot(arts, name, plots))
    row.append("</div>")
    return out + row


def _idf_plot(arts, name: str, plots: "_Plots") -> str:
    documents = arts.manifest["features"][name]["state"]["documents"]
    frequencies = arts.document_frequencies(name)
    idf = np.log1p(documents / (1.0 + frequencies))  # Keras's weight, in float64 for the picture
    fig, ax = plots.new()
    ax.hist(idf, bins=50, color="#16a085")
    ax.set(xlabel="IDF weight  log(1 + N / (1 + df))", ylabel="tokens", title="IDF of the kept tokens")
    tallies = np.histogram(idf, bins=50)[0]
    if tallies.max() > 100 * max(tallies[tallies > 0].min(), 1):  # a long tail of rare tokens
        ax.set_yscale("log")
    return plots.figure(fig, "idf", f"{documents:,} documents; IDF from {idf.min():.3f} to {idf.max():.3f}, "
                                    f"document frequency from {frequencies.min():,} to {frequencies.max():,}.")


def _top_tokens(g: Dict[str, Any]) -> str:
    total = max(g["tokens_seen"] - g["special_tokens_seen"], 1)
    rows = "".join(f'<tr><td class="n">{i + 1}</td><td>{html.escape(repr(t))}</td><td class="n">{c:,}</td>'
                   f'<td class="n">{c / total:.2%}</td></tr>' for i, (t, c) in enumerate(g["top_tokens"][:TOP_TOKENS]))
    return (f'<table data-table="top-tokens"><tr><th>#</th><th>top token</th><th>count</th><th>share</th></tr>'
            f'{rows}</table>')


# --------------------------------------------------------------------------- numbers

def _numeric_rows(g: Dict[str, Any]) -> List[tuple]:
    return [("rows", g["rows"]), ("values", g["values"]), ("missing", g["missing"]), ("NaN skipped", g["nan"]),
            ("infinite", g["infinite"]), ("weight 0 (skipped)", g["zero_weight"])]


def _discretization(arts, name: str, plots: "_Plots") -> List[str]:
    entry = arts.manifest["features"][name]
    g, state = entry["figures"], entry["state"]
    rows = _numeric_rows(g)
    if "boundaries_file" not in state:
        boundaries = entry["config"].get("bin_boundaries") or []
        return ['<div class="row">', _table(rows + [("boundaries (from the config)", len(boundaries))]),
                _boundary_table(boundaries), "</div>"]
    boundaries = arts.bin_boundaries(name)
    rows += [("boundaries", f"{len(boundaries):,} ({state['distinct_boundaries']:,} distinct)"),
             ("quantiles", state["quantiles"]), ("rank error bound", state["rank_error_bound"])]
    if "profile" not in entry:
        return ['<div class="row">', _table(rows), _boundary_table(boundaries),
                '<p class="note">No profile: this artifact predates format version 4.</p></div>']
    moments = entry["profile"]["moments"]
    if moments["count"]:
        rows += [("mean (finite values)", f"{moments['mean']:.6g}"),
                 ("standard deviation", f"{np.sqrt(moments['variance']):.6g}")]
    profile = arts.quantile_profile(name)
    rows += [("minimum", f"{profile.values[0]:.6g}"), ("maximum", f"{profile.values[-1]:.6g}")]
    shares = profile.bucket_shares(boundaries)
    bound = state["rank_error_bound"] + 1 / profile.steps
    out = ['<div class="row">', _table(rows), _boundary_table(boundaries), "</div>", '<div class="row">']
    out.append(_histogram(plots, [(profile, "#2f6db5", None)], boundaries, "histogram",
                          f"Share of the weight per bin, read off the recorded quantiles (within {bound:.2%}); "
                          f"dashed lines: the {len(boundaries)} boundaries"
                          + (f" (every {_boundary_stride(boundaries)}th)." if _boundary_stride(boundaries) > 1 else ".")))
    fig, ax = plots.new()
    if len(shares) <= BOUNDARIES_DRAWN:
        ax.bar(np.arange(len(shares)), 100 * shares, color="#2f6db5")
    else:  # one path, not a bar per bucket
        ax.stairs(100 * shares, np.arange(len(shares) + 1) - 0.5, fill=True, color="#2f6db5")
    ax.axhline(100 / len(shares), color="#c0392b", ls="--", lw=1.2, label=f"1/num_bins = {100 / len(shares):.2f}%")
    ax.set(xlabel="bucket (Keras's output index)", ylabel="% of the weight", title="Bucket occupancy")
    ax.legend(fontsize=8)
    out.append(plots.figure(fig, "occupancy", f"Each bucket's share, within {bound:.2%}; equal by design, "
                                              f"except where values tie across a boundary."))
    out.append("</div>")
    return out


def _histogram(plots: "_Plots", profiles, boundaries, kind: str, caption: str) -> str:
    """Bars of each (profile, colour, label) over one common range, boundaries dashed.
    The range spans the boundaries and a quarter more on each side, within the values'
    0.5%-99.5% quantiles, so a long tail does not squeeze the buckets into one bar."""
    ranges = [p.display_range() for p, _, _ in profiles]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    finite = [b for b in boundaries if np.isfinite(b)]
    if finite and finite[-1] > finite[0]:
        pad = (finite[-1] - finite[0]) / 4
        low, high = max(low, finite[0] - pad), min(high, finite[-1] + pad)
        low, high = (low, high) if high > low else (finite[0] - pad, finite[-1] + pad)
    edges = np.linspace(low, high, 61)
    fig, ax = plots.new()
    for profile, colour, label in profiles:
        shares = np.diff(profile.share_below(edges))
        ax.stairs(100 * shares, edges, fill=label is None, color=colour, alpha=0.85 if label is None else 1,
                  lw=1.4, label=label)
    drawn = np.asarray(boundaries, np.float64)[::_boundary_stride(boundaries)]
    drawn = drawn[(drawn >= low) & (drawn <= high)]
    if len(drawn):  # one collection, not a Line2D per boundary (5,000 of them took seconds)
        ax.vlines(drawn, 0, 1, transform=ax.get_xaxis_transform(), color="#c0392b", ls="--", lw=0.8)
    ax.set(xlabel="value", ylabel="% of the weight per bin", title="Histogram", xlim=(low, high))
    if any(label for _, _, label in profiles):
        ax.legend(fontsize=8)
    outside = profiles[-1][0].share_below(np.array([low, high]))
    return plots.figure(fig, kind, caption + f" Shown: {low:.4g} to {high:.4g}; {outside[0]:.1%} of the weight "
                                             f"lies below, {1 - outside[1]:.1%} above.")


def _boundary_stride(boundaries) -> int:
    return -(-len(boundaries) // BOUNDARIES_DRAWN) if len(boundaries) else 1


def _boundary_table(boundaries) -> str:
    shown = list(boundaries[:40])
    rows = "".join(f'<tr><td class="n">{i}</td><td class="n">{b:.7g}</td></tr>' for i, b in enumerate(shown))
    more = f'<tr><td colspan="2">... {len(boundaries) - len(shown):,} more</td></tr>' if len(boundaries) > 40 else ""
    return f'<table data-table="boundaries"><tr><th>#</th><th>boundary</th></tr>{rows}{more}</table>'


def _normalization(arts, name: str) -> List[str]:
    entry = arts.manifest["features"][name]
    mean, variance = arts.moments(name)
    rows = _numeric_rows(entry["figures"]) + [("observations", entry["state"]["count"]),
                                              ("kept axes' shape", str(entry["state"]["shape"]))]
    flat_mean, flat_variance = mean.ravel(), variance.ravel()
    shown = min(len(flat_mean), POSITIONS_SHOWN)
    cells = "".join(f'<tr><td class="n">{i}</td><td class="n">{flat_mean[i]:.7g}</td>'
                    f'<td class="n">{flat_variance[i]:.7g}</td><td class="n">{np.sqrt(flat_variance[i]):.7g}</td></tr>'
                    for i in range(shown))
    more = (f'<tr><td colspan="4">... {len(flat_mean) - shown:,} more positions</td></tr>'
            if len(flat_mean) > shown else "")
    moments = (f'<table data-table="moments"><tr><th>position</th><th>mean</th><th>variance</th><th>std</th></tr>'
               f'{cells}{more}</table>')
    return ['<div class="row">', _table(rows), moments, "</div>"]


# --------------------------------------------------------------------------- drift

def _drift(arts, base, name: str, change: "compare.FeatureDiff", plots: "_Plots") -> str:
    m, d = change.metrics, change.details
    rows = [(k, _number(v)) for k, v in sorted(m.items())]
    if "oov_rate" in m and not d.get("oov_rate_exact", True):
        rows.append(("oov_rate at least", _number(d["oov_rate_low"])))
    out = ['<div class="drift" data-drift="1"><h3>Since the base</h3>']
    if "layer_changed" in d:
        out.append(f'<p class="note">The layer changed: {d["layer_changed"][0]} in the base, '
                   f'{d["layer_changed"][1]} now (nothing else compared).</p>')
    out += ['<div class="row">', _table(rows)]
    for key, label in (("top_added", "added"), ("top_dropped", "dropped")):
        if d.get(key):
            cells = "".join(f"<tr><td>{html.escape(repr(t))}</td><td class='n'>{'' if c is None else f'{c:,}'}</td></tr>"
                            for t, c in d[key])
            out.append(f'<table data-table="{label}"><tr><th>{label}</th><th>count</th></tr>{cells}</table>')
    out.append("</div>")
    entry, old_entry = arts.manifest["features"][name], base.manifest["features"][name]
    if "profile" in entry and "profile" in old_entry and old_entry["layer"] == change.layer \
            and change.layer in compare.VOCABULARY_LAYERS:
        old, new = base.count_distribution(name), arts.count_distribution(name)
        fig, ax = plots.new()
        for dist, colour, label in ((old, "#7f8c8d", "base"), (new, "#2f6db5", "this artifact")):
            sizes = dist.plot_ranks()
            ax.semilogx(sizes, 100 * dist.coverage(sizes), color=colour, lw=1.6, label=label)
        ax.set(xlabel="vocabulary size", ylabel="% of occurrences covered", title="Coverage, base and now",
               ylim=(0, 101))
        ax.legend(fontsize=8, loc="lower right")
        out.append('<div class="row">' + plots.figure(fig, "drift-coverage", "Each artifact's coverage of its own "
                                                      "token occurrences.") + "</div>")
    elif "psi" in m:
        boundaries = base.bin_boundaries(name)
        out.append('<div class="row">' + _histogram(
            plots, [(base.quantile_profile(name), "#7f8c8d", "base"), (arts.quantile_profile(name), "#2f6db5",
                                                                          "this artifact")],
            boundaries, "drift-histogram", f"PSI {m['psi']:.4f} over the base's {len(boundaries) + 1} buckets "
                                           f"(dashed: the base's boundaries).") + "</div>")
    out.append("</div>")
    return "".join(out)


# --------------------------------------------------------------------------- helpers

def _number(value) -> str:
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return f"{value:.4g}"


def _table(rows) -> str:
    cells = "".join(f'<tr><th>{html.escape(str(k))}</th><td class="n">'
                    f'{html.escape(f"{v:,}" if isinstance(v, int) else str(v))}</td></tr>' for k, v in rows)
    return f'<table data-table="figures">{cells}</table>'


class _Plots:
    """matplotlib figures, rendered to inline SVG (text kept as text: small and sharp)."""

    def __init__(self):
        try:
            import matplotlib
        except ImportError:
            raise RuntimeError("prepro report draws with matplotlib: pip install 'prepro[report]'") from None
        matplotlib.use("Agg", force=False)  # no display; the only backend a server has
        import matplotlib.pyplot as plt
        self._plt = plt
        self._rc = {"svg.fonttype": "none", "svg.hashsalt": "prepro", "font.size": 9, "axes.grid": True,
                    "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}

    def new(self):
        with self._plt.rc_context(self._rc):
            return self._plt.subplots(figsize=(5.2, 3.2), layout="constrained")

    def figure(self, fig, kind: str, caption: str) -> str:
        buffer = io.StringIO()
        with self._plt.rc_context(self._rc):
            fig.savefig(buffer, format="svg", metadata={"Date": None})
        self._plt.close(fig)
        svg = buffer.getvalue()
        svg = svg[svg.index("<svg"):]  # without the XML declaration and DOCTYPE
        return f'<figure data-plot="{kind}">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _check_out(out: str, sources) -> None:
    """The report never replaces a file of the artifacts it reads (their manifest.json,
    a state file) nor a directory."""
    from prepro import artifacts
    # Locally the file is renamed into place: a symlink at `out` is replaced, not followed.
    resolve = (lambda p: p.rstrip("/")) if fs.is_remote(out) else \
        (lambda p: os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(p))), os.path.basename(p)))
    target = resolve(out)
    if not fs.is_remote(out) and os.path.isdir(target):
        raise ValueError(f"--out {out}: a directory; name the HTML file to write")
    for source in sources:
        if fs.is_remote(source.root) != fs.is_remote(out):
            continue
        state_root = artifacts.state_root(source.root, source.manifest)
        protected = {resolve(fs.join(source.root, artifacts.MANIFEST))} | {
            resolve(fs.join(state_root, relpath)) for relpath in source.manifest["files"]}
        inside_state = "state_dir" in source.manifest and target.startswith(resolve(state_root) + "/")
        if target in protected or inside_state:
            raise ValueError(f"--out {out}: a file of the artifact {source.root} (its manifest or state); "
                             f"the report would replace it")


def report(arts, out: Optional[str] = None, base=None) -> Report:
    """`arts.report(...)`: the Report, saved to `out` (local or gs://) when given."""
    from prepro.layers import Artifacts, load
    if base is not None and not isinstance(base, Artifacts):
        base = load(base)
    if out is not None:
        _check_out(out, [arts] + ([base] if base is not None else []))
    result = build_report(arts, base)
    if out is not None:
        result.save(out)
    return result
