"""What the `glassbox` commands print when they end: text from results (pure)."""

from __future__ import annotations

from typing import Any

# The test metrics a version is listed with, the first three of them it has.
HEADLINE_KEYS = (
    "test_average_precision",
    "test_roc_auc",
    "test_log_loss",
    "test_f1_macro",
    "test_accuracy_score",
    "test_root_mean_squared_error",
    "test_r2_score",
)


def train_summary(result: dict[str, Any], uri: str) -> str:
    """After `glassbox train`: the run, the registered model to load, the test headline and
    where to look (the platform's MLflow UI, or how to start one)."""
    lines = [
        "",
        f"MLflow run: {result['run_id']} (experiment {result['experiment_id']})",
        f"Model: models:/{result['registered_model']}/{result['model_version']}"
        " (mlflow.pyfunc.load_model takes it; predict_method=predict_proba for probabilities)",
        "Test: " + ", ".join(f"{k} {v:.4f}" for k, v in result["headline"].items()),
    ]
    exp = result["experiment_id"]
    if result["url"]:
        base = result["url"].split("/#/")[0]
        lines.append(f"Look at it: {result['url']}")
    else:
        base = "http://127.0.0.1:5000"
        lines += [
            f"Look at it: mlflow ui --backend-store-uri {uri} --port 5000, then open",
            f"  {base}/#/experiments/{exp}/runs/{result['run_id']}",
            "  (or `glassbox up`: both UIs, linked runs, a standing cluster)",
        ]
    lines.append(f"Compare runs: {base}/#/experiments/{exp}/runs?workflowType=machine_learning")
    return "\n".join(lines)


def sweep_summary(result: dict[str, Any], uri: str) -> str:
    """After `glassbox sweep`: trials, the best one, its refit as @challenger."""
    params = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in result["best_params"].items()
    )
    lines = [
        "",
        f"Sweep: MLflow run {result['run_id']} (experiment {result['experiment_id']}), "
        f"{result['trials_finished']} trials finished, {result['trials_failed']} failed, "
        f"{result['seconds']:.0f} s",
        f"Best: trial {result['best_trial']}, valid {result['metric']} "
        f"{result['best_value']:.5g}: {params}",
    ]
    refit = result["refit"]
    if refit:
        name, version = refit["registered_model"], refit["model_version"]
        lines += [
            f"Refit: MLflow run {refit['run_id']}, models:/{name}/{version} is @challenger; "
            "test: " + ", ".join(f"{k} {v:.4f}" for k, v in refit["headline"].items()),
            f"Promote it through the gate: glassbox promote {name} {version}",
        ]
    exp = result["experiment_id"]
    base = result["url"].split("/#/")[0] if result["url"] else "http://127.0.0.1:5000"
    if not result["url"]:
        lines.append(f"Look at it: mlflow ui --backend-store-uri {uri} --port 5000, then open")
    lines.append(
        f"  {base}/#/experiments/{exp}/runs?workflowType=machine_learning "
        "(expand the sweep's run to compare its trials)"
    )
    return "\n".join(lines)


def retrain_summary(result: dict[str, Any]) -> str:
    """After `glassbox retrain`: the gate's decision and its reasons, drift, the report."""
    name = result["registered_model"]
    if "challenger_version" not in result:
        return f"\n{name}: {result['decision']}: {result['drift']}"
    champ = result["champion_version"]
    lines = [
        "",
        f"{name} v{result['challenger_version']} vs champion "
        f"{'v' + champ if champ else '(none)'}: {result['decision']}",
        *[f"  - {r}" for r in result["reasons"]],
        f"  - drift: {result['drift']}",
        f"Report: comparison/ in MLflow run {result['run_id']}"
        + (f" ({result['url']})" if result["url"] else ""),
        f"Versions and decisions: glassbox models {name}",
    ]
    return "\n".join(lines)


def versions_text(name: str, versions: list[Any], events: list[dict[str, Any]]) -> str:
    """`glassbox models NAME`: each version's aliases, headline test metrics and decision,
    then the promotion history."""
    lines = [
        f"{name}",
        "",
        f"{'version':>7}  {'aliases':<28} {'test metrics (own test split)':<58} decision",
    ]
    for v in versions:
        shown = [
            f"{k.removeprefix('test_')} {v.metrics[k]:.4g}" for k in HEADLINE_KEYS if k in v.metrics
        ][:3]
        aliases = ", ".join(f"@{a}" for a in sorted(v.aliases)) or "-"
        decision = v.tags.get("glassbox.decision", "-")
        lines.append(f"{v.version:>7}  {aliases:<28} {', '.join(shown):<58} {decision}")
    if events:
        lines += ["", "history (oldest first):"]
        for e in events:
            against = f" vs v{e['against']}" if e.get("against") else ""
            lines.append(f"  {e['at']}  v{e['version']}{against}: {e['decision']}")
            lines += [f"      {r}" for r in e.get("reasons", [])]
    return "\n".join(lines)
