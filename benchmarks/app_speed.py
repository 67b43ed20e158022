"""What-if page speed: server time per edit (prediction + SHAP waterfall + change from the start,
as the page's update handler computes them) and per LIME request, and the round trip of an edit
through the served page (`gradio_client`, HTTP on 127.0.0.1).

The model is a registered one from the tracking store, as `glassbox app` opens it (default: the
fraud preset's @champion, else its latest version: train it first with `glassbox train fraud`).
Edits are drawn from the test rows kept with the run: a random row, one random input set to a
random value of its training range (or category, or missing). Seeded.

Prints percentiles and one JSON line. Run:
`python benchmarks/app_speed.py [--preset fraud] [--model URI] [--edits 500] [--lime 20]`.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time

import numpy as np

from flows.config import load_config, model_name, preset_path
from whatif.inputs import MISSING, from_row
from whatif.page import edited, open_model, serve


def percentiles(ms: list[float]) -> dict[str, float]:
    q = np.percentile(ms, [50, 90, 99])
    return {
        "n": len(ms),
        "p50": round(float(q[0]), 2),
        "p90": round(float(q[1]), 2),
        "p99": round(float(q[2]), 2),
        "max": round(max(ms), 2),
        "mean": round(statistics.fmean(ms), 2),
    }


def random_edit(opened, rng: np.random.Generator) -> dict:
    """A kept test row with one input changed to another value a user could pick."""
    assert opened.rows is not None
    row = opened.rows.iloc[int(rng.integers(len(opened.rows)))]
    values = from_row(opened.form, row)
    f = opened.form[int(rng.integers(len(opened.form)))]
    if f.missing and rng.random() < 0.1:
        values[f.name] = None
    elif f.kind == "number":
        values[f.name] = float(rng.uniform(f.minimum, f.maximum))
    elif f.kind == "category":
        values[f.name] = str(rng.choice([c for c in f.choices if c != MISSING] or [MISSING]))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fraud")
    parser.add_argument("--model", default=None, help="models:/... or a run id")
    parser.add_argument("--edits", type=int, default=500)
    parser.add_argument("--lime", type=int, default=20)
    parser.add_argument("--http", type=int, default=200, help="edits through the served page")
    args = parser.parse_args()

    cfg = load_config(str(preset_path(args.preset)), {})
    began = time.perf_counter()
    opened = open_model(args.model, model_name(cfg), cfg.tracking)
    open_s = time.perf_counter() - began
    booster = opened.whatif.booster
    rng = np.random.default_rng(0)
    start = opened.whatif.explain(opened.form, from_row(opened.form, opened.rows.iloc[0]))
    state = {"explained": start, "where": "row"}
    for _ in range(20):  # warm-up
        edited(opened, state, random_edit(opened, rng), None)
    update_ms = []
    for _ in range(args.edits):
        values = random_edit(opened, rng)
        t = time.perf_counter()
        edited(opened, state, values, None)
        update_ms.append((time.perf_counter() - t) * 1000)
    lime_ms = []
    for _ in range(args.lime):
        values = random_edit(opened, rng)
        t = time.perf_counter()
        opened.lime.explain(opened.form, values, start.explained, 10)
        lime_ms.append((time.perf_counter() - t) * 1000)

    http_ms = []
    if args.http:
        from gradio_client import Client

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        page = serve(opened, port, block=False)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict(str(opened.rows.index[0]), start.explained, api_name="/load_row")
        for i in range(args.http + 10):
            values = random_edit(opened, rng)
            flat = []
            for f in opened.form:
                v = values[f.name]
                if f.kind == "category":
                    flat.append(MISSING if v is None else v)
                else:
                    flat += [f.default if v is None else v, v is None]
            t = time.perf_counter()
            client.predict(start.explained, *flat, api_name="/update")
            if i >= 10:
                http_ms.append((time.perf_counter() - t) * 1000)
        client.close()
        page.close()

    result = {
        "model": opened.ref.uri,
        "trees": booster.num_boosted_rounds(),
        "inputs": len(opened.form),
        "open_s": round(open_s, 2),
        "update_server_ms": percentiles(update_ms),
        "lime_server_ms": percentiles(lime_ms),
        "update_http_round_trip_ms": percentiles(http_ms) if http_ms else None,
    }
    print(
        f"{opened.ref.uri}: {result['trees']} trees, {result['inputs']} inputs; "
        f"opened in {open_s:.2f} s"
    )
    for key in ("update_server_ms", "lime_server_ms", "update_http_round_trip_ms"):
        if result[key]:
            r = result[key]
            print(
                f"  {key:28s} p50 {r['p50']:7.2f}  p90 {r['p90']:7.2f}  p99 {r['p99']:7.2f}  "
                f"max {r['max']:7.2f}  (n={r['n']})"
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
