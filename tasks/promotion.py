"""The champion/challenger gate: a pure decision on numbers, then the registry records under a lock.

`decide` takes the champion's and the challenger's scores on the same rows and a `Rule`, and
returns a `Decision` (the verdict and every reason), testable on numbers alone. The Prefect task at
the bottom (`promote`) re-reads `@champion` under a project-wide lock, re-scores when another run
moved it meanwhile, decides, and writes aliases, version tags and the model's promotion history
through `tasks.tracking`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

from tasks.config import RetrainConfig, TaskType

# Metrics where a smaller value is better; every other metric the gate knows grows with quality.
LOWER_IS_BETTER = frozenset(
    {
        "log_loss",
        "brier_score",
        "root_mean_squared_error",
        "mean_squared_error",
        "mean_absolute_error",
        "median_absolute_error",
        "max_error",
        "mean_absolute_percentage_error",
        "false_positives",
        "false_negatives",
    }
)
DEFAULT_GUARDRAILS: dict[str, dict[str, float]] = {
    "binary": {"roc_auc": 0.01, "log_loss": 0.1},
    "multiclass": {"f1_macro": 0.02},
    "regression": {"mean_absolute_error": 0.05},
}
# Metrics the comparison table shows, per task (the gate's metrics are added to them).
COMPARED: dict[str, tuple[str, ...]] = {
    "binary": (
        "average_precision",
        "roc_auc",
        "log_loss",
        "brier_score",
        "f1_score",
        "precision_score",
        "recall_score",
    ),
    "multiclass": (
        "log_loss",
        "accuracy_score",
        "f1_macro",
        "roc_auc_macro",
        "balanced_accuracy_score",
    ),
    "regression": (
        "root_mean_squared_error",
        "mean_absolute_error",
        "r2_score",
        "median_absolute_error",
    ),
}
IMBALANCED = 0.1  # binary data with fewer positives than this is judged on average precision


@dataclass(frozen=True)
class Rule:
    """What a challenger must do to replace the champion."""

    primary: str
    min_improvement: float = 0.0  # absolute, in the primary metric's better direction
    min_relative_improvement: float = 0.0  # share of the champion's value
    guardrails: Mapping[str, float] = field(default_factory=dict)  # metric -> tolerated share
    floor: float | None = None  # a first champion's minimum on the primary metric
    confidence: float = 0.0  # the share of paired bootstrap resamples the challenger must win


def better(metric: str, new: float, old: float) -> float:
    """How much better `new` is than `old` (positive: better), in the metric's direction."""
    return old - new if metric in LOWER_IS_BETTER else new - old


def primary_metric(task: TaskType, positive_share: float | None = None) -> str:
    """The default primary metric: average precision for imbalanced binary data (ROC AUC barely
    moves when a model finds more of the rare class), ROC AUC for other binary data, log loss
    for multi-class (a proper scoring rule over every class's probability), RMSE for regression.
    """
    if task == "binary":
        rare = positive_share is not None and positive_share < IMBALANCED
        return "average_precision" if rare else "roc_auc"
    return "log_loss" if task == "multiclass" else "root_mean_squared_error"


def resolve_rule(cfg: RetrainConfig, task: TaskType, positive_share: float | None) -> Rule:
    """The configured gate with `auto` and default guardrails filled in for the task."""
    primary = (
        primary_metric(task, positive_share) if cfg.primary_metric == "auto" else cfg.primary_metric
    )
    guardrails = DEFAULT_GUARDRAILS[task] if cfg.guardrails is None else cfg.guardrails
    return Rule(
        primary=primary,
        min_improvement=cfg.min_improvement,
        min_relative_improvement=cfg.min_relative_improvement,
        guardrails={k: v for k, v in guardrails.items() if k != primary},
        floor=cfg.floor,
        confidence=cfg.confidence,
    )


@dataclass(frozen=True)
class Decision:
    """The gate's verdict with its reasons; `promote` is what the gate says, `applied` whether
    the aliases moved (not in a dry run or with the gate disabled)."""

    promote: bool
    mode: str
    primary: str
    challenger: float
    champion: float | None
    reasons: tuple[str, ...]
    deltas: Mapping[str, float] = field(default_factory=dict)  # challenger - champion
    forced: bool = False

    @property
    def applied(self) -> bool:
        return self.promote and (self.mode == "enabled" or self.forced)

    @property
    def verdict(self) -> str:
        if self.forced:
            return "promoted (forced)"
        if self.mode == "disabled":
            return "not promoted (gate disabled)"
        if self.mode == "dry_run":
            return "would promote (dry run)" if self.promote else "would keep champion (dry run)"
        return "promoted" if self.promote else "champion kept"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict, "applied": self.applied}


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    rule: Rule,
    *,
    mode: str = "enabled",
    blocked: str | None = None,
    force: bool = False,
    win_rate: float | None = None,
) -> Decision:
    """Compare a challenger with the champion on the same rows.

    Args:
        challenger, champion: metric name -> value (the champion None when there is none yet).
        rule: the gate.
        win_rate: the share of paired bootstrap resamples of the rows in which the challenger
            beat the champion on the primary metric (checked against `rule.confidence`).
        mode: `enabled`, `dry_run` or `disabled` (the verdict is computed in every mode).
        blocked: a reason that stops the promotion whatever the numbers (drifted data with
            `retrain.drift.action: block`).
        force: promote whatever the gate says (the reasons still say what it found).

    Raises:
        ValueError: the challenger lacks the primary metric.
    """
    m = rule.primary
    if m not in challenger or not math.isfinite(challenger[m]):
        raise ValueError(f"the challenger has no {m} to be judged on")
    new = float(challenger[m])
    reasons: list[str] = []
    ok = True
    deltas: dict[str, float] = {}
    if champion is None:
        if rule.floor is not None and better(m, new, rule.floor) < 0:
            ok = False
            reasons.append(f"{m} {new:.4g} misses the floor {rule.floor:.4g} for a first champion")
        else:
            floor = f" (floor {rule.floor:.4g})" if rule.floor is not None else ""
            reasons.append(f"no champion yet: first champion with {m} {new:.4g}{floor}")
    else:
        old = float(champion[m])
        deltas = {
            k: float(challenger[k]) - float(champion[k])
            for k in challenger
            if k in champion and math.isfinite(challenger[k]) and math.isfinite(champion[k])
        }
        gain = better(m, new, old)
        needed = max(rule.min_improvement, rule.min_relative_improvement * abs(old))
        if gain > needed:
            reasons.append(
                f"{m} {old:.4g} -> {new:.4g} ({gain:+.4g} better; needed > {needed:.4g})"
            )
        else:
            ok = False
            word = "worse" if gain < 0 else "better" if gain > 0 else "changed"
            reasons.append(
                f"{m} {old:.4g} -> {new:.4g} is not enough ({abs(gain):.4g} {word}; needed "
                f"> {needed:.4g} better)"
            )
        if rule.confidence > 0 and win_rate is not None:
            text = f"better in {win_rate:.0%} of paired bootstrap resamples"
            if win_rate >= rule.confidence:
                reasons.append(f"{text} (needed {rule.confidence:.0%})")
            else:
                ok = False
                reasons.append(f"only {text}: within the noise (needed {rule.confidence:.0%})")
        for metric, tolerance in rule.guardrails.items():
            if metric not in challenger or metric not in champion:
                continue
            loss = -better(metric, float(challenger[metric]), float(champion[metric]))
            allowed = tolerance * abs(float(champion[metric]))
            if loss > allowed:
                ok = False
                reasons.append(
                    f"guardrail {metric} {champion[metric]:.4g} -> {challenger[metric]:.4g} got "
                    f"worse by {loss:.4g} (tolerated {allowed:.4g})"
                )
    if blocked:
        ok = False
        reasons.append(f"blocked: {blocked}")
    if force:
        reasons.append("forced: promoted whatever the gate says")
    return Decision(
        promote=ok or force,
        mode=mode,
        primary=m,
        challenger=new,
        champion=None if champion is None else float(champion[m]),
        reasons=tuple(reasons),
        deltas=deltas,
        forced=force,
    )


# --------------------------------------------------------------------------------------------
# The registry's records, under a lock


@contextmanager
def promotion_lock(model_name: str, timeout_s: float = 600) -> Iterator[None]:
    """One promotion of `model_name` at a time, across processes: a Prefect global concurrency
    limit of 1 (created here when missing), taken strictly (a missing limit is an error, not a
    silent pass)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    from tasks.names import slug

    name = f"glassbox-promote-{slug(model_name)}"
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another process created it just now
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    with concurrency(name, occupy=1, strict=True, timeout_seconds=timeout_s):
        yield


@dataclass(frozen=True)
class Outcome:
    """What `record` did: the decision, and the champion it was judged against."""

    decision: Decision
    champion_version: str | None
    challenger_version: str
    champion_scores: dict[str, float] | None
    rescored: bool = False  # another run moved @champion meanwhile: judged against the new one


def record(
    model_name: str,
    version: str,
    challenger: dict[str, float],
    champion: tuple[str, dict[str, float], float | None] | None,
    rule: Rule,
    *,
    mode: str,
    score_version: Callable[[str], tuple[dict[str, float], float | None]],
    blocked: str | None = None,
    force: bool = False,
    context: Mapping[str, str] | None = None,
) -> Outcome:
    """Read-compare-set under the model's lock: re-read `@champion` (re-scoring, through
    `score_version`, a champion other than the one in `champion` = (version, scores, bootstrap
    win rate)), decide, then set `@challenger`, and on promotion `@previous` <- old champion
    and `@champion` <- `version`; tag the version with the decision and append it to the
    model's history.
    """
    from tasks import tracking

    with promotion_lock(model_name):
        current = tracking.alias_version(model_name, "champion")
        rescored = False
        champ_scores: dict[str, float] | None = None
        win_rate = None
        if current is None or current == version:  # none yet, or the champion itself
            pass
        elif champion is not None and champion[0] == current:
            champ_scores, win_rate = champion[1], champion[2]
        else:
            (champ_scores, win_rate), rescored = score_version(current), True
        decision = decide(
            challenger,
            champ_scores,
            rule,
            mode=mode,
            blocked=blocked,
            force=force,
            win_rate=win_rate,
        )
        if decision.mode != "dry_run" or force:
            tracking.set_alias(model_name, "challenger", version)
        if decision.applied and current != version:
            if current is not None:
                tracking.set_alias(model_name, "previous", current)
            tracking.set_alias(model_name, "champion", version)
        event = {
            "version": version,
            "against": current,
            "decision": decision.verdict,
            "mode": mode,
            "primary": decision.primary,
            "challenger": round(decision.challenger, 6),
            "champion": None if decision.champion is None else round(decision.champion, 6),
            "reasons": list(decision.reasons),
            **(context or {}),
        }
        tracking.set_version_tags(model_name, version, decision_tags(decision, current, context))
        tracking.append_history(model_name, event)
    return Outcome(decision, current, version, champ_scores, rescored)


def decision_tags(
    decision: Decision, champion_version: str | None, context: Mapping[str, str] | None
) -> dict[str, str]:
    """Model-version tags: the verdict, the reasons, the champion judged against, every delta."""
    tags = {
        "glassbox.decision": decision.verdict,
        "glassbox.decision.reasons": " | ".join(decision.reasons)[:4900],
        "glassbox.decision.primary": decision.primary,
        "glassbox.decision.against": champion_version or "none",
        f"glassbox.score.{decision.primary}": f"{decision.challenger:.6g}",
    }
    tags |= {f"glassbox.delta.{k}": f"{v:+.6g}" for k, v in decision.deltas.items()}
    return tags | dict(context or {})


def roll_back(model_name: str, context: Mapping[str, str] | None = None) -> tuple[str, str]:
    """`@champion` <- `@previous` and `@previous` <- the demoted champion (a second rollback
    undoes the first), recorded in tags and history. Returns (new champion, demoted).

    Raises:
        ValueError: the model has no `@champion` or no `@previous`.
    """
    from tasks import tracking

    with promotion_lock(model_name):
        current = tracking.alias_version(model_name, "champion")
        previous = tracking.alias_version(model_name, "previous")
        if current is None or previous is None:
            raise ValueError(
                f"{model_name} has no {'@champion' if current is None else '@previous'} to "
                "roll back (see `glassbox models " + model_name + "`)"
            )
        tracking.set_alias(model_name, "champion", previous)
        tracking.set_alias(model_name, "previous", current)
        reason = f"rollback: v{previous} restored as champion, v{current} demoted to @previous"
        tracking.set_version_tags(
            model_name, previous, {"glassbox.decision": "restored (rollback)", **(context or {})}
        )
        tracking.set_version_tags(model_name, current, {"glassbox.decision": "rolled back"})
        tracking.append_history(
            model_name,
            {
                "version": previous,
                "against": current,
                "decision": "rollback",
                "reasons": [reason],
                **(context or {}),
            },
        )
    return previous, current
