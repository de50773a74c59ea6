"""Evidence-based promotion: the `champion` alias moves only when a candidate passes every gate and
beats the current champion on the same data by a margin.

`decide` is a pure function of the evidence and the policy; `promote` gathers the evidence from the
registry (re-evaluating the champion on the current data when it was judged on other data), applies
the decision (aliases, tags) and records it with its reasons. Re-running `promote` for the same
pipeline run when nothing else has changed returns the recorded decision and writes nothing.

Only versions whose parent run carries the registration completion mark (registry.REGISTRATION_TAG,
written after the last version) are candidates: a run stopped mid-registration is ignored and named.
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from portfolio_mlops import registry
from portfolio_mlops.config import PromotionPolicy
from portfolio_mlops.errors import PromotionError
from portfolio_mlops.registry import CHALLENGER, CHAMPION, PARENT_TAG, REGISTRATION_TAG, registration_complete


@dataclass(frozen=True)
class Evidence:
    """What promotion knows about one model version, measured on one data set (`data_digest`)."""

    version: str
    algorithm: str
    data_digest: str
    net_sharpe: float
    icir: float
    ic_tstat: float
    excess_vs_equal_weight: float
    # Newey-West t of the daily rank IC; NaN for versions registered before it was recorded (legacy).
    ic_hac_tstat: float = float("nan")
    legacy: bool = False  # no ic_hac_tstat tag: the gate falls back to ic_tstat and says so

    def score(self, rank_by: str) -> float:
        value = getattr(self, rank_by)
        return value if math.isfinite(value) else -math.inf

    def label(self) -> str:
        return f"v{self.version} ({self.algorithm})"


@dataclass
class Decision:
    promoted: bool
    champion_before: str | None
    champion_after: str | None
    challenger: str | None
    best_candidate: str | None
    reasons: list[str]
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)  # version -> {decision, reasons}
    policy: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        verdict = (f"promoted v{self.champion_after} to {CHAMPION}" if self.promoted
                   else f"{CHAMPION} unchanged ({'v' + self.champion_before if self.champion_before else 'none'})")
        return f"promotion: {verdict}: " + "; ".join(self.reasons)


STATISTIC_NAMES = {"ic_hac_tstat": "IC HAC t", "ic_tstat": "IC t-stat"}


def ic_threshold(policy: PromotionPolicy, candidates: int) -> tuple[float, str]:
    """The gate's threshold for the best of `candidates`, and how it was derived (for the reason text).

    Bonferroni: a positive threshold z is a one-sided level alpha = 1 - Phi(z); picking the best of K
    candidates tests K hypotheses, so the threshold becomes Phi^-1(1 - alpha / K). Thresholds <= 0
    (permissive policies) are not a significance level and stay as given.
    """
    z = policy.min_ic_tstat
    if policy.deflation == "none" or candidates <= 1 or not (z > 0) or not math.isfinite(z):
        return z, ""
    normal = NormalDist()
    alpha = 1.0 - normal.cdf(z)
    deflated = normal.inv_cdf(1.0 - alpha / candidates) if alpha > 0 else z
    return deflated, f" ({z:.2f} deflated for {candidates} candidates, Bonferroni)"


def gate_failures(candidate: Evidence, policy: PromotionPolicy, candidates: int = 1) -> list[str]:
    failures = []
    if not math.isfinite(getattr(candidate, policy.rank_by)):
        failures.append(f"{policy.rank_by.replace('_', ' ')} is not a number")
    statistic = policy.statistic
    note = ""
    if statistic == "ic_hac_tstat" and candidate.legacy:
        statistic, note = "ic_tstat", " (registered before ic_hac_tstat was recorded: non-overlapping IC t used)"
    value = getattr(candidate, statistic)
    threshold, how = ic_threshold(policy, candidates)
    if not (value >= threshold):
        failures.append(f"{STATISTIC_NAMES[statistic]} {value:.2f} < {threshold:.2f}{how}{note}")
    if not (candidate.excess_vs_equal_weight > policy.min_excess_vs_equal_weight):
        failures.append(f"net excess over equal weight {candidate.excess_vs_equal_weight:+.2%} <= "
                        f"{policy.min_excess_vs_equal_weight:+.2%}")
    return failures


def ic_gate_text(candidate: Evidence, policy: PromotionPolicy, candidates: int) -> str:
    """How a passing candidate cleared the signal gate, e.g. 'IC HAC t 3.24 >= 2.53 (2.00 deflated ...)'."""
    statistic = "ic_tstat" if policy.statistic == "ic_hac_tstat" and candidate.legacy else policy.statistic
    threshold, how = ic_threshold(policy, candidates)
    note = " (registered before ic_hac_tstat was recorded)" if statistic != policy.statistic else ""
    return f"{STATISTIC_NAMES[statistic]} {getattr(candidate, statistic):.2f} >= {threshold:.2f}{how}{note}"


def decide(candidates: list[Evidence], champion: Evidence | None, policy: PromotionPolicy) -> Decision:
    """Pure decision. `champion`, when given, must be measured on the candidates' data."""
    if not candidates:
        raise PromotionError("no candidate model versions to judge")
    rank_name = policy.rank_by.replace("_", " ")
    ranked = sorted(candidates, key=lambda c: (-c.score(policy.rank_by), int(c.version)))
    verdicts: dict[str, dict[str, Any]] = {}
    for candidate in ranked:
        failures = gate_failures(candidate, policy, len(candidates))
        verdicts[candidate.version] = {"algorithm": candidate.algorithm,
                                       "decision": "refused" if failures else "eligible", "reasons": failures}
    eligible = [c for c in ranked if not verdicts[c.version]["reasons"]]
    before = champion.version if champion else None
    promoted, after = False, before
    if not eligible:
        reasons = ["no candidate passed the gates: " + "; ".join(
            f"{c.label()}: {', '.join(verdicts[c.version]['reasons'])}" for c in ranked)]
    else:
        best = eligible[0]
        best_text = f"{best.label()} {rank_name} {best.score(policy.rank_by):.3f}"
        if champion is None:
            promoted, after = True, best.version
            reasons = [f"no {CHAMPION} yet; {best_text} passes every gate: {ic_gate_text(best, policy, len(candidates))}"]
        elif champion.version == best.version:
            reasons = [f"{best.label()} is already {CHAMPION}"]
        elif best.score(policy.rank_by) >= champion.score(policy.rank_by) + policy.margin:
            promoted, after = True, best.version
            reasons = [f"{best_text} beats {CHAMPION} {champion.label()} "
                       f"({champion.score(policy.rank_by):.3f} on the same data) by >= {policy.margin:g}; "
                       f"{ic_gate_text(best, policy, len(candidates))}"]
        else:
            reasons = [f"{best_text} does not beat {CHAMPION} {champion.label()} "
                       f"({champion.score(policy.rank_by):.3f} on the same data) by the margin {policy.margin:g}"]
        for candidate in eligible:
            verdict = verdicts[candidate.version]
            if candidate.version == after:
                verdict["decision"] = "promoted" if promoted else CHAMPION
                verdict["reasons"] = reasons
            elif candidate is best:
                verdict["decision"], verdict["reasons"] = "not promoted", reasons
            else:
                verdict["decision"], verdict["reasons"] = "not promoted", [f"ranked below {best.label()}"]
    challenger = next((c.version for c in ranked if c.version != after), None)
    return Decision(promoted, before, after, challenger, ranked[0].version, reasons, verdicts, policy.model_dump())


def evidence_from_tags(version: str, tags: dict[str, str]) -> Evidence:
    def number(key: str) -> float:
        return registry.tag_number(tags, key)

    return Evidence(version, tags.get(registry.ALGORITHM, "?"), tags.get(registry.DATA_DIGEST, ""), number("net_sharpe"),
                    number("icir"), number("ic_tstat"), number("excess_vs_equal_weight"),
                    number("ic_hac_tstat"), "ic_hac_tstat" not in tags)


# (champion's config JSON, the candidates' config JSON) -> the champion's metrics on the current data,
# under the candidates' evaluation settings (walk-forward schedule, portfolio, costs, validation).
Reevaluate = Callable[[str, str], dict[str, float]]


def promote(model_name: str, parent_run_id: str, policy: PromotionPolicy, reevaluate: Reevaluate | None = None,
            client=None) -> Decision:
    """Judge the versions registered by `parent_run_id` against the champion; apply and record.

    A signal is acted on before the aliases and tags are written or after, never in between
    (interrupts.deferred; an interrupted sqlite write can keep the store locked)."""
    from portfolio_mlops import interrupts

    with interrupts.deferred():
        return _promote(model_name, parent_run_id, policy, reevaluate, client)


def _promote(model_name: str, parent_run_id: str, policy: PromotionPolicy, reevaluate: Reevaluate | None,
             client) -> Decision:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from portfolio_mlops import interrupts

    client = client or MlflowClient()
    parent = client.get_run(parent_run_id)
    recorded = parent.data.tags.get(registry.PROMOTION_RESULT)
    current_champion = _alias_version(client, model_name, CHAMPION)
    if recorded:
        try:
            previous = json.loads(recorded)
        except json.JSONDecodeError:
            previous = {}  # an unreadable record: decide again
        if previous.get("champion_after") == current_champion and previous.get("policy") == policy.model_dump():
            return Decision(**previous)  # same inputs as last time: nothing to change

    versions = [v for v in client.search_model_versions(f"name='{model_name}'")
                if v.tags.get(PARENT_TAG) == parent_run_id]
    if not versions:
        raise PromotionError(f"run {parent_run_id} registered no versions of {model_name!r}; nothing to promote")
    if not registration_complete(parent):
        raise PromotionError(incomplete_note(parent_run_id, len(versions)))
    candidates = [evidence_from_tags(str(v.version), v.tags) for v in versions]
    digest = candidates[0].data_digest
    settings = versions[0].tags.get(registry.EVALUATION_DIGEST, "")
    champion = None
    notes = []
    if current_champion is not None and current_champion not in {c.version for c in candidates}:
        champion_version = client.get_model_version(model_name, current_champion)
        champion = evidence_from_tags(current_champion, champion_version.tags)
        # Comparable only on the same data AND under the same evaluation settings: the same model
        # judged at lower assumed costs or over another window must not beat itself.
        if champion.data_digest != digest or champion_version.tags.get(registry.EVALUATION_DIGEST, "") != settings:
            if reevaluate is None:
                raise PromotionError(f"{CHAMPION} v{current_champion} was evaluated on other data or settings "
                                     f"({champion.data_digest[:19]}...); re-evaluation on the current data is needed")
            measured = reevaluate(champion_version.tags[registry.CONFIG], versions[0].tags[registry.CONFIG])
            champion = Evidence(current_champion, champion.algorithm, digest, measured["net_sharpe"],
                                measured["icir"], measured["ic_tstat"], measured["excess_vs_equal_weight"],
                                measured.get("ic_hac_tstat", float("nan")), "ic_hac_tstat" not in measured)
            notes.append(f"{CHAMPION} {champion.label()} re-evaluated on the current data and settings: "
                         f"{policy.rank_by.replace('_', ' ')} {champion.score(policy.rank_by):.3f}")
            for key, value in measured.items():
                client.set_model_version_tag(model_name, current_champion, registry.reevaluated_tag(digest, key), repr(value))
    elif current_champion is not None:
        champion = next(c for c in candidates if c.version == current_champion)

    decision = decide(candidates, champion, policy)
    decision.reasons = notes + decision.reasons
    interrupts.raise_if_interrupted("before promotion moved any alias")
    try:
        if decision.promoted:
            client.set_registered_model_alias(model_name, CHAMPION, decision.champion_after)
        if decision.challenger:
            client.set_registered_model_alias(model_name, CHALLENGER, decision.challenger)
        elif _alias_version(client, model_name, CHALLENGER) is not None:
            client.delete_registered_model_alias(model_name, CHALLENGER)  # a stale challenger misleads
    except MlflowException as exc:
        raise PromotionError(f"could not move the aliases of {model_name!r}: {exc}") from exc
    for version, verdict in decision.candidates.items():
        client.set_model_version_tag(model_name, version, registry.PROMOTION_DECISION, verdict["decision"])
        client.set_model_version_tag(model_name, version, registry.PROMOTION_REASONS,
                                     "; ".join(verdict["reasons"])[:4900] or "-")
    client.set_tag(parent_run_id, registry.PROMOTION_DECISION, "promoted" if decision.promoted else "not promoted")
    client.set_tag(parent_run_id, registry.PROMOTION_REASONS, "; ".join(decision.reasons)[:4900])
    client.set_tag(parent_run_id, registry.PROMOTION_CHAMPION, decision.champion_after or "none")
    client.set_tag(parent_run_id, registry.PROMOTION_RESULT, json.dumps(decision.to_dict())[:7900])
    return decision


def incomplete_note(parent_run_id: str, count: int) -> str:
    return (f"ignored {count} version{'s' if count != 1 else ''} of run {parent_run_id}: registration incomplete "
            f"(no completion mark {REGISTRATION_TAG}; the run was stopped while registering)")


def incomplete_registrations(model_name: str, client=None) -> dict[str, list[str]]:
    """Parent run id -> versions it registered, for every parent without the completion mark."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{model_name}'")
    except MlflowException:
        return {}
    by_parent: dict[str, list[str]] = {}
    for v in versions:
        if v.tags.get(PARENT_TAG):
            by_parent.setdefault(v.tags[PARENT_TAG], []).append(str(v.version))
    out = {}
    for run_id, numbers in by_parent.items():
        try:
            complete = registration_complete(client.get_run(run_id))
        except MlflowException:
            complete = False
        if not complete:
            out[run_id] = sorted(numbers, key=int)
    return out


def _alias_version(client, model_name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def list_versions(model_name: str, client=None) -> list[dict[str, Any]]:
    """Every version with its aliases, key metrics and recorded decision, newest first."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    try:
        model = client.get_registered_model(model_name)
    except MlflowException:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for v in client.search_model_versions(f"name='{model_name}'"):
        tags = v.tags
        rows.append({
            "version": int(v.version), "aliases": sorted(aliases.get(str(v.version), [])),
            "algorithm": tags.get(registry.ALGORITHM, "?"), "net_sharpe": tags.get("net_sharpe"),
            "ic_tstat": tags.get("ic_tstat"), "ic_hac_tstat": tags.get("ic_hac_tstat"),
            "excess_vs_equal_weight": tags.get("excess_vs_equal_weight"),
            "data_digest": tags.get(registry.DATA_DIGEST, ""), "decision": tags.get(registry.PROMOTION_DECISION, "-"),
            "reasons": tags.get(registry.PROMOTION_REASONS, ""), "run_id": v.run_id,
        })
    return sorted(rows, key=lambda r: -r["version"])
