"""The page's pictures as HTML: a SHAP waterfall, the prediction, the change from the starting
row and LIME's weights. The browser draws them: an update costs microseconds of string building
on the server, where a matplotlib figure costs ~100 ms. Every name and value is escaped (column
and class names come from users' files).
"""

from __future__ import annotations

from html import escape
from typing import Any

from whatif.explainer import Change, Explained
from whatif.inputs import shown

UP, DOWN = "#d6204e", "#1e88e5"  # raises / lowers the output (shap's colours, a little darker)
STYLE = """
<style>
.gb-wf, .gb-pred, .gb-diff, .gb-lime {font-size: 14px; line-height: 1.35;}
.gb-wf .row {display: grid; grid-template-columns: 38% 62%; align-items: center; min-height: 24px;}
.gb-wf .name {overflow: hidden; text-overflow: ellipsis; white-space: nowrap; padding-right: 8px;
  text-align: right;}
.gb-wf .track {position: relative; height: 20px;}
.gb-wf .bar {position: absolute; top: 3px; height: 14px; border-radius: 2px;}
.gb-wf .num {position: absolute; top: 1px; font-size: 12px; white-space: nowrap;}
.gb-wf .ends {color: #666; font-size: 12px;}
.gb-wf .axis {position: absolute; top: 0; bottom: 0; border-left: 1px dashed #999;}
.gb-pred .big {font-size: 28px; font-weight: 600;}
.gb-pred .cls {display: grid; grid-template-columns: 30% 55% 15%; align-items: center;}
.gb-pred .meter {background: #eee; height: 12px; border-radius: 6px; overflow: hidden;}
.gb-pred .fill {height: 12px; background: #555;}
.gb-diff table, .gb-lime table {border-collapse: collapse; width: 100%;}
.gb-diff table td, .gb-diff table th, .gb-lime table td, .gb-lime table th {padding: 2px 6px;
  text-align: left; border: 0 !important; border-bottom: 1px solid #e5e5e5 !important;}
.gb-diff td.n, .gb-lime td.n {text-align: right; font-variant-numeric: tabular-nums;}
.gb-note {color: #666; font-size: 12px;}
</style>
"""


def _signed(value: float) -> str:
    return f"{value:+.3g}"


def _colour(value: float) -> str:
    return UP if value > 0 else DOWN if value < 0 else "#888"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def prediction(e: Explained, threshold: float | None = None) -> str:
    """The prediction: each class's probability (the explained one first), or the value."""
    if e.explained is None:
        body = f'<div class="big" data-testid="headline">{e.outputs["value"]:.6g}</div>'
        return f'<div class="gb-pred">{body}<div>predicted value</div></div>'
    classes = sorted(e.outputs, key=lambda c: (c != e.explained, -e.outputs[c]))
    head = (
        f'<div class="big" data-testid="headline">P({escape(e.explained)}) = '
        f"{_pct(e.outputs[e.explained])}</div>"
    )
    rule = f" (at the model's threshold {threshold:.3g})" if threshold is not None else ""
    said = f"<div>The model says <b>{escape(e.label)}</b>{rule}.</div>"
    bars = "".join(
        f'<div class="cls"><span>{escape(c)}</span><div class="meter"><div class="fill" '
        f'style="width:{100 * e.outputs[c]:.1f}%"></div></div><span>{_pct(e.outputs[c])}</span>'
        "</div>"
        for c in classes
    )
    return f'<div class="gb-pred">{head}{said}{bars}</div>'


def waterfall(e: Explained, top: int = 10) -> str:
    """SHAP's waterfall of one input: from the model's average output, each input's push up
    (red) or down (blue), the largest first, the rest summed, to this input's output."""
    items = sorted(e.contributions.items(), key=lambda kv: -abs(kv[1]))
    shown_items: list[tuple[str, float, str | None]] = [
        (name, value, shown(e.values.get(name))) for name, value in items[:top]
    ]
    rest = items[top:]
    if rest:
        shown_items.append((f"{len(rest)} other inputs", float(sum(v for _, v in rest)), None))
    points = [e.base]
    for _, value, _ in shown_items:
        points.append(points[-1] + value)
    lo, hi = min(points), max(points)
    pad = (hi - lo) * 0.12 or 1.0
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return 100 * (v - lo) / (hi - lo)

    rows = []
    for (name, value, text), start in zip(shown_items, points, strict=False):
        left, right = sorted((x(start), x(start + value)))
        label = escape(name) if text is None else f"{escape(name)} = <b>{escape(text)}</b>"
        # The number sits beside the bar, on the side with room.
        place = f"left:{right + 0.8:.2f}%" if right < 80 else f"right:{100 - left + 0.8:.2f}%"
        rows.append(
            f'<div class="row" data-column="{escape(name)}"><div class="name" title="'
            f'{escape(name)}">{label}</div><div class="track"><div class="bar" style="left:'
            f'{left:.2f}%;width:{max(right - left, 0.3):.2f}%;background:{_colour(value)}">'
            f'</div><span class="num" style="{place};color:{_colour(value)}">{_signed(value)}'
            "</span></div></div>"
        )
    axis = (
        f'<div class="row ends"><div class="name">average output</div><div class="track">'
        f'<span class="num" style="left:{x(e.base):.2f}%">{e.base:.3g}</span></div></div>'
    )
    end = (
        f'<div class="row ends"><div class="name">this input</div><div class="track">'
        f'<span class="num" style="left:{min(x(e.total), 75):.2f}%" data-testid="total">'
        f"<b>{e.total:.3g}</b></span></div></div>"
    )
    title = f"<div><b>Why: SHAP</b>, in {escape(e.units)} (the contributions add up exactly)</div>"
    return f'<div class="gb-wf" data-testid="waterfall">{title}{axis}{"".join(rows)}{end}</div>'


def change(start: Explained, now: Explained, changes: list[Change], where: str) -> str:
    """How far the output moved from the starting row, and which inputs moved it."""
    if now.explained:
        a, b = start.outputs[now.explained], now.outputs[now.explained]
        moved = (
            f"P({escape(now.explained)}): {_pct(a)} at the start ({escape(where)}) → "
            f"<b>{_pct(b)}</b> now ({100 * (b - a):+.1f} points)"
        )
    else:
        a, b = start.outputs["value"], now.outputs["value"]
        moved = f"{a:.6g} at the start ({escape(where)}) → <b>{b:.6g}</b> now ({b - a:+.4g})"
    if not changes:
        return f'<div class="gb-diff" data-testid="change"><div>{moved}</div>'
    rows = "".join(
        f"<tr><td>{escape(c.column)}{' <i>(edited)</i>' if c.edited else ''}</td>"
        f"<td>{escape(c.start)}</td><td>{escape(c.now)}</td>"
        f'<td class="n" style="color:{_colour(c.delta)}">{_signed(c.delta)}</td></tr>'
        for c in changes
    )
    return (
        f'<div class="gb-diff" data-testid="change"><div>{moved}</div><table><tr><th>input</th>'
        f"<th>start</th><th>now</th><th>its push, Δ {escape(now.units)}</th></tr>{rows}"
        "</table></div>"
    )


def lime(result: dict[str, Any], explained: str | None) -> str:
    """LIME's local linear fit of the current input: the weights and how well it fits."""
    what = f"P({escape(explained)})" if explained else "the value"
    rows = "".join(
        f"<tr><td>{escape(w['condition'])}</td>"
        f'<td class="n" style="color:{_colour(w["weight"])}">{_signed(w["weight"])}</td></tr>'
        for w in result["weights"]
    )
    return (
        f'<div class="gb-lime" data-testid="lime"><div><b>LIME</b> on {what}: local fit '
        f"R² <b>{result['r2']:.3f}</b> · intercept {result['intercept']:.3g} · local prediction "
        f"{result['local_prediction']:.3g} · {result['samples']:,} samples · "
        f"{result['server_ms']:.0f} ms</div><table><tr><th>condition</th><th>weight</th></tr>"
        f'{rows}</table><div class="gb-note">A low R² means no straight line fits the model '
        "near this input: trust the SHAP waterfall more.</div></div>"
    )
