"""`explanations/index.html`: the page that lists every locally explained row."""

from __future__ import annotations

from typing import Any

from tasks.names import unique_slug


def index_page(entries: list[dict[str, Any]], title: str) -> str:
    """`explanations/index.html`: one section per explained row with its id, the rules that
    chose it, label and prediction, the SHAP/LIME agreement, the waterfall and comparison
    figures embedded (the page works on its own inside MLflow's artifact viewer, which
    sandboxes it), and the paths of the row's other artifacts, linked relative to the page
    (links work where the artifacts are files: a download or `mlruns/`)."""
    import base64
    import html

    def img(png: bytes | None, alt: str) -> str:
        if not png:
            return ""
        data = base64.b64encode(png).decode()
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    rows = []
    toc = []
    for e in entries:
        anchor = f"row-{html.escape(unique_slug(str(e['row_id'])))}"
        agree = (
            f"top-{e['top_k']} overlap (Jaccard) {e['top_k_jaccard']:.2f} against "
            f"{e['top_k_jaccard_chance']:.2f} by chance, rank correlation {e['spearman']:.2f}, "
            f"LIME local R² {e['lime_score']:.2f}"
            + ("" if e["trusted"] else " <b>(too low: LIME's surrogate is not to be trusted)</b>")
            if "top_k_jaccard" in e
            else "LIME off"
        )
        links = " · ".join(
            f'<a class="file" href="{html.escape(path)}"><code>explanations/'
            f"{html.escape(path)}</code></a>"
            for path in e["files"]
        )
        toc.append(
            f'<tr><td><a href="#{anchor}">{html.escape(str(e["row_id"]))}</a></td>'
            f"<td>{html.escape(', '.join(e['rules']))}</td><td>{html.escape(e['label'])}</td>"
            f"<td>{html.escape(e['prediction'])}</td><td>{html.escape(e['explained'])}</td>"
            f"<td>{e.get('top_k_jaccard', float('nan')):.2f}</td>"
            f"<td>{e.get('top_k_jaccard_chance', float('nan')):.2f}</td>"
            f"<td>{e.get('spearman', float('nan')):.2f}</td>"
            f"<td>{e.get('lime_score', float('nan')):.2f}"
            + ("" if e.get("trusted", True) else " <b>untrusted</b>")
            + "</td></tr>"
        )
        rows.append(
            f'<section id="{anchor}"><h2>Row {html.escape(str(e["row_id"]))}</h2>'
            f"<p>Chosen as: <b>{html.escape(', '.join(e['rules']))}</b>. Label "
            f"<b>{html.escape(e['label'])}</b>, prediction <b>{html.escape(e['prediction'])}"
            f"</b>; explained: {html.escape(e['explained'])}.</p><p>SHAP vs LIME: {agree}</p>"
            f'<div class="figs">{img(e.get("waterfall"), "SHAP waterfall")}'
            f"{img(e.get('comparison'), 'SHAP vs LIME')}</div>"
            f'<p class="files">Files: {links}</p></section>'
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body {{ font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.15em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
th {{ background: #f3f3f3; }} section {{ border-top: 1px solid #ddd; margin-top: 1.5em; }}
.figs img {{ display: block; max-width: 100%; margin-bottom: 0.5em; }}
.files {{ font-size: 0.85em; color: #555; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(entries)} rows explained locally. Interactive pages (SHAP force plots, LIME) are in the
run's artifacts at the paths listed per row: select them in the MLflow artifact tree.</p>
<table><tr><th>row</th><th>chosen as</th><th>label</th><th>prediction</th><th>explained</th>
<th>top-k Jaccard</th><th>by chance</th><th>Spearman</th><th>LIME R²</th></tr>
{"".join(toc)}</table>
{"".join(rows)}
<script>
// MLflow's artifact viewer shows this page from a sandboxed blob: URL, where links relative to
// the page lead nowhere: keep the paths as text there.
if (location.protocol === "blob:") {{
  document.querySelectorAll("a.file").forEach((a) => a.removeAttribute("href"));
}}
</script>
</body></html>
"""
