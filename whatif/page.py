"""The what-if page: a model opened from the tracking store (`open_model`), its Gradio page
(`build`) and the server (`serve`). Thin: the numbers come from `whatif.explainer`, the pictures
from `whatif.render`, models and runs through `tasks.tracking`.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks import tracking
from tasks.config import ConfigError, ExplainConfig, TrackingConfig
from tasks.data import TEST_ROWS
from tasks.metrics import HEADLINE
from tasks.preprocess import describe_inputs
from tasks.row_picking import select_rows
from whatif import render
from whatif.explainer import Explained, LocalLime, WhatIf, difference, to_json
from whatif.inputs import MISSING, InputField, fields, from_row, is_missing

SHOWN = 8  # inputs in view; the rest are folded away
IMPORTANCE_ROWS = 2_000  # kept test rows the inputs' order is computed on
RULES = {
    "top_risk": "top risk",
    "false_positives": "confident false positive",
    "false_negatives": "confident false negative",
    "confident_errors": "confident error",
    "largest_residuals": "largest residual",
}


@dataclass
class Opened:
    """A model ready for the page: what it is, how to explain it, the form, the rows."""

    ref: tracking.ModelRef
    whatif: WhatIf
    form: list[InputField]
    rows: pd.DataFrame | None  # the raw test rows kept with its run (target included)
    target: str | None
    picks: list[tuple[str, str]]  # (label, row id) of the rows the run would explain
    card: str  # markdown
    lime: LocalLime | None = None
    start_label: str = "the training medians"
    ids: dict[str, Any] = field(default_factory=dict)  # row id as text -> index value

    def row(self, key: str) -> pd.Series:
        assert self.rows is not None
        return self.rows.loc[self.ids[key]]


def open_model(asked: str | None, default_name: str, cfg: TrackingConfig) -> Opened:
    """Resolve and load a model, the test rows kept with its run, and describe both.

    Raises:
        ConfigError: naming what could not be found.
    """
    tracking.configure(cfg)
    ref = tracking.resolve_model(asked, default_name)
    inner = tracking.load_pyfunc(ref.uri)
    if not hasattr(inner, "card"):
        raise ConfigError(f"model: {ref.uri} is not a Glassbox model")
    whatif = WhatIf(inner.booster, inner.card)
    rows = None
    if ref.run_id:
        with tempfile.TemporaryDirectory() as tmp:
            path = tracking.run_artifact(ref.run_id, TEST_ROWS, tmp)
            rows = pd.read_parquet(path) if path else None
    spec = inner.card.spec
    summary = getattr(inner, "inputs", None)
    if summary is None:
        if rows is None:
            raise ConfigError(
                f"model: {ref.uri} carries no description of its inputs and its run kept no "
                "test rows (trained before `glassbox app` existed): train it again"
            )
        summary = describe_inputs(rows, spec)
    target = next(
        (
            c
            for c in (rows.columns if rows is not None else [])
            if c not in {c.name for c in spec.columns}
        ),
        None,
    )
    importance = (
        whatif.importance(rows.head(IMPORTANCE_ROWS)) if rows is not None and len(rows) else {}
    )
    form = fields(spec, summary, importance)
    opened = Opened(ref, whatif, form, rows, target, [], "")
    if rows is not None and len(rows):
        opened.ids = {str(i): i for i in rows.index}
        opened.picks = _picks(whatif, rows, target)
        opened.lime = LocalLime(inner.card, inner.booster, rows.head(5_000))
    opened.card = model_card(ref, inner.card.task, cfg, rows)
    return opened


def _picks(whatif: WhatIf, rows: pd.DataFrame, target: str | None) -> list[tuple[str, str]]:
    """The kept rows a training run explains (riskiest, confident errors or largest
    residuals), labelled with what happened to them."""
    card = whatif.card
    scores = whatif.scores(rows)
    if target is None:
        return []
    if card.task == "regression":
        y = rows[target].to_numpy(dtype=float)
    else:
        known = {c: k for k, c in enumerate(card.classes)}
        y = np.array([known.get(str(v), -1) for v in rows[target]])
    rules = ExplainConfig(random_rows=0, row_ids=())
    chosen = select_rows(
        rows.index.to_numpy(),
        y,
        scores,
        card.task,  # type: ignore[arg-type]
        rules,
        card.threshold,
    )
    out = []
    position = {str(i): k for k, i in enumerate(rows.index)}
    for rule, ids in chosen.items():
        for row_id in ids:
            k = position[str(row_id)]
            if card.task == "regression":
                said = f"predicted {scores[k]:.4g}, true {y[k]:.4g}"
            elif card.task == "binary":
                said = f"P({card.classes[1]}) {scores[k]:.1%}, true {rows[target].iloc[k]}"
            else:
                guess = card.classes[int(scores[k].argmax())]
                said = f"predicted {guess}, true {rows[target].iloc[k]}"
            out.append((f"{RULES.get(rule, rule)}: row {row_id} ({said})", str(row_id)))
    return out


def model_card(
    ref: tracking.ModelRef, task: str, cfg: TrackingConfig, rows: pd.DataFrame | None
) -> str:
    """Name, version, aliases, the training run's headline test metrics and its link."""
    title = f"{ref.name} version {ref.version}" if ref.name else ref.uri
    aliases = " ".join(f"`@{a}`" for a in ref.aliases)
    lines = [f"## {title} {aliases}".rstrip(), ""]
    if ref.note:
        lines += [f"> **Note:** {ref.note}", ""]
    if ref.run_id:
        run = tracking.run_summary(ref.run_id)
        metrics = run["metrics"]
        headline = " · ".join(
            f"{k.removeprefix('test_')} **{metrics[k]:.4g}**"
            for k in HEADLINE.get(task, ())  # type: ignore[call-overload]
            if k in metrics
        )
        ui = cfg.ui_url or (cfg.uri if cfg.uri.startswith("http") else None)
        link = tracking.run_link(ref.run_id, ui)
        trained = f"[{run['name']}]({link})" if link else f"`{run['name']}` ({ref.run_id})"
        lines.append(f"{task} model · trained by run {trained} · test: {headline}")
        kept = (
            f"{len(rows):,} test rows kept with the run to start from"
            if rows is not None
            else "no test rows kept with the run (explain.app_rows: 0): start from the medians"
        )
        lines.append(f"\n{kept} · store `{cfg.uri}`")
    return "\n".join(lines)


def respond(start: Explained, now: Explained, where: str, threshold: float | None) -> list[Any]:
    """The page's answer to an input: prediction, waterfall, change from the start (HTML), and
    the numbers (JSON, with the server time this answer took)."""
    begun = time.perf_counter()
    changes = difference(start, now)
    out: list[Any] = [
        render.STYLE + render.prediction(now, threshold),
        render.waterfall(now),
        render.change(start, now, changes, where),
        to_json(now, changes),
    ]
    out[3]["server_ms"] = round(now.server_ms + (time.perf_counter() - begun) * 1000, 2)
    return out


def edited(
    opened: Opened, state: dict[str, Any], values: dict[str, Any], explained: str | None
) -> list[Any]:
    """An edit: explain the new input (for the class asked for) against the starting row."""
    whatif = opened.whatif
    now = whatif.explain(opened.form, values, explained)
    start = state["explained"]
    if start.explained != now.explained:  # another class asked for: explain the start so
        start = whatif.explain(opened.form, start.values, now.explained)
        state["explained"] = start
    threshold = whatif.card.threshold if whatif.card.task == "binary" else None
    return respond(start, now, state["where"], threshold)


# --------------------------------------------------------------------------------------------
# The Gradio page


@dataclass(frozen=True)
class Slot:
    """Where a form field's value and its "missing" box sit among the page's inputs."""

    field: InputField
    value: int
    missing: int | None


def build(opened: Opened) -> Any:
    """The page: the model card; where to start; the inputs (most important first, the rest
    folded away); the prediction, SHAP waterfall and change from the start, updated on every
    edit; LIME on a button; the numbers behind it all."""
    import gradio as gr

    form, whatif = opened.form, opened.whatif
    classes = whatif.classes
    threshold = whatif.card.threshold if whatif.card.task == "binary" else None
    components: list[Any] = []
    slots: list[Slot] = []

    def add(f: InputField) -> None:
        main: Any
        if f.kind == "number" and f.box:
            main = gr.Number(
                f.default, minimum=f.minimum, maximum=f.maximum, label=f.name, info=f.info
            )
        elif f.kind == "number":
            main = gr.Slider(
                f.minimum, f.maximum, value=f.default, step=f.step, label=f.name, info=f.info
            )
        elif f.kind == "category":
            main = gr.Dropdown(list(f.choices), value=f.default, label=f.name, info=f.info)
        else:
            main = gr.DateTime(
                value=f.default, include_time=f.time, type="string", label=f.name, info=f.info
            )
        components.append(main)
        box = None
        if f.kind != "category":
            components.append(
                gr.Checkbox(False, label=f"{f.name} missing", visible=f.missing, min_width=80)
            )
            box = len(components) - 1
        slots.append(Slot(f, len(components) - (2 if box is not None else 1), box))

    def values_of(flat: tuple[Any, ...]) -> dict[str, Any]:
        out = {}
        for s in slots:
            missing = s.missing is not None and bool(flat[s.missing])
            out[s.field.name] = None if missing else flat[s.value]
        return out

    def updates_for(values: dict[str, Any]) -> list[Any]:
        out: list[Any] = [None] * len(components)
        for s in slots:
            value = values.get(s.field.name)
            gone = is_missing(value)
            if s.field.kind == "category":
                choices = list(s.field.choices)
                if gone and MISSING not in choices:
                    choices.append(MISSING)
                out[s.value] = gr.update(value=MISSING if gone else value, choices=choices)
            else:
                out[s.value] = gr.update() if gone else gr.update(value=value)
                assert s.missing is not None
                out[s.missing] = gr.update(value=gone, visible=s.field.missing or gone)
        return out

    def show(start: Explained, now: Explained, where: str) -> list[Any]:
        return respond(start, now, where, threshold)

    labels = {key: label for label, key in opened.picks}

    def start_from(
        values: dict[str, Any], where: str, explained: str | None, key: str | None = None
    ) -> list[Any]:
        # A new start explains the positive class (binary) or the class the model predicts
        # for it; the class drop-down then picks another.
        start = whatif.explain(form, values, explained if whatif.card.task == "binary" else None)
        cls = gr.update(value=start.explained) if classes else gr.update()
        state = {"explained": start, "where": where}
        return [
            state,
            cls,
            f"Starting from **{where}**.",
            gr.update(value=labels.get(key or "")),  # the pick, when the row is one
            *updates_for(values),
            *show(start, start, where),
        ]

    def load_row(key: str, explained: str | None = None) -> list[Any]:
        key = str(key or "").strip()
        if opened.rows is None or key not in opened.ids:
            kept = f"{len(opened.rows):,} kept test rows" if opened.rows is not None else "no rows"
            raise gr.Error(f"row '{key}' is not among the {kept} of this model's run")
        row = opened.row(key)
        truth = f", true {row[opened.target]}" if opened.target else ""
        return start_from(from_row(form, row), f"test row {key}{truth}", explained, key)

    def load_random(explained: str | None) -> list[Any]:
        if opened.rows is None:
            raise gr.Error("this model's run kept no test rows")
        key = str(np.random.default_rng().choice(list(opened.ids)))
        return load_row(key, explained)

    def initial(explained: str | None = None) -> list[Any]:
        if opened.picks:
            return load_row(opened.picks[0][1], explained)
        return start_from({f.name: f.default for f in form}, opened.start_label, explained)

    def update(state: dict[str, Any], explained: str | None, *flat: Any) -> list[Any]:
        return edited(opened, state, values_of(flat), explained)

    def run_lime(explained: str | None, *flat: Any) -> str:
        if opened.lime is None:
            raise gr.Error("LIME needs the test rows kept with the run; this run kept none")
        result = opened.lime.explain(form, values_of(flat), explained or None, 10)
        return render.lime(result, explained or None)

    with gr.Blocks(
        title=f"Glassbox what-if · {opened.ref.name or opened.ref.uri}", analytics_enabled=False
    ) as page:
        gr.Markdown(opened.card)
        state = gr.State()
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown("### Start from a real row")
                pick = gr.Dropdown(
                    [label for label, _ in opened.picks],
                    value=None,
                    label="rows the training run would explain",
                    interactive=bool(opened.picks),
                )
                with gr.Row():
                    row_id = gr.Textbox(label="test row id", scale=3)
                    load = gr.Button("Load row", scale=1)
                    lucky = gr.Button("Random row", scale=1)
                status = gr.Markdown()
                gr.Markdown("### Inputs, most important first")
                for f in form[:SHOWN]:
                    add(f)
                if len(form) > SHOWN:
                    with gr.Accordion(f"{len(form) - SHOWN} more inputs", open=False):
                        for f in form[SHOWN:]:
                            add(f)
            with gr.Column(scale=3):
                prediction = gr.HTML()
                explained = gr.Dropdown(
                    classes,
                    value=whatif.default_class({c: 0.0 for c in classes}) if classes else None,
                    label="explain the probability of",
                    visible=len(classes) > 2,
                )
                waterfall = gr.HTML()
                moved = gr.HTML()
                lime_button = gr.Button("Explain this input with LIME")
                lime = gr.HTML()
                with gr.Accordion("the numbers", open=False):
                    numbers = gr.JSON()
        shown = [prediction, waterfall, moved, numbers]
        starts = [state, explained, status, pick, *components, *shown]
        by_label = dict(opened.picks)
        page.load(initial, inputs=[explained], outputs=starts, api_name="start")
        pick.input(
            lambda label, cls: load_row(by_label[label], cls),
            inputs=[pick, explained],
            outputs=starts,
            api_visibility="private",
        )
        load.click(load_row, inputs=[row_id, explained], outputs=starts, api_name="load_row")
        row_id.submit(
            load_row, inputs=[row_id, explained], outputs=starts, api_visibility="private"
        )
        lucky.click(load_random, inputs=[explained], outputs=starts, api_name="random_row")
        edits = [c.change if isinstance(c, gr.DateTime) else c.input for c in components]
        gr.on(
            [*edits, explained.input],
            update,
            inputs=[state, explained, *components],
            outputs=shown,
            api_name="update",
            trigger_mode="always_last",
            show_progress="hidden",
        )
        lime_button.click(
            run_lime, inputs=[explained, *components], outputs=[lime], api_name="lime"
        )
    return page


def serve(opened: Opened, port: int, *, block: bool = True) -> Any:
    """Serve the page on 127.0.0.1:`port` with no share link, telemetry or version check
    (Gradio's default theme carries its fonts): nothing leaves the machine. Returns the page
    (when not blocking)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    page = build(opened)
    page.queue(default_concurrency_limit=2)
    page.launch(
        server_name="127.0.0.1",
        server_port=port,
        share=False,
        inbrowser=False,
        ssr_mode=False,
        show_error=True,
        quiet=True,
        enable_monitoring=False,
        prevent_thread_lock=not block,
        footer_links=[],
        mcp_server=False,
        pwa=False,
    )
    return page
