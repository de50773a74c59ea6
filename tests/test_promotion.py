"""Promotion as a pure decision: gates, ranking, the margin over the champion, and the recorded reasons.

Every test hands `decide` made-up evidence, so each rule is checked on numbers chosen to sit on
either side of it. Defaults of `PromotionPolicy`: HAC t of the daily rank IC >= 2, raised for the best
of K candidates (Bonferroni), net excess over equal weight > 0, rank by net Sharpe, margin 0.05.
"""

import pytest

from portfolio_mlops.config import PromotionPolicy
from portfolio_mlops.errors import PromotionError
from portfolio_mlops.promotion import Evidence, decide, evidence_from_tags

POLICY = PromotionPolicy()
NAN = float("nan")


def evidence(version: str, net_sharpe: float = 1.0, *, icir: float = 0.5, ic_tstat: float = 3.0,
             excess: float = 0.05, algorithm: str = "ridge", ic_hac_tstat: float | None = None) -> Evidence:
    """A version that passes every default gate unless told otherwise (both IC statistics = ic_tstat
    unless ic_hac_tstat is given)."""
    return Evidence(version=version, algorithm=algorithm, data_digest="sha256:same-data", net_sharpe=net_sharpe,
                    icir=icir, ic_tstat=ic_tstat, excess_vs_equal_weight=excess,
                    ic_hac_tstat=ic_tstat if ic_hac_tstat is None else ic_hac_tstat)


# --- no champion yet ------------------------------------------------------------------------------------

def test_an_eligible_candidate_becomes_champion_when_there_is_none():
    decision = decide([evidence("1")], None, POLICY)

    assert decision.promoted
    assert decision.champion_before is None
    assert decision.champion_after == "1"
    assert decision.candidates["1"]["decision"] == "promoted"
    assert any("v1" in reason and "gate" in reason for reason in decision.reasons)
    assert "IC HAC t 3.00 >= 2.00" in decision.reasons[0]  # the reason names the statistic it passed


# --- gates ----------------------------------------------------------------------------------------------

def test_a_candidate_below_the_ic_tstat_gate_is_refused_with_the_gate_named():
    decision = decide([evidence("1", ic_tstat=1.99)], None, POLICY)

    assert not decision.promoted
    assert decision.candidates["1"]["decision"] == "refused"
    assert decision.candidates["1"]["reasons"] == ["IC HAC t 1.99 < 2.00"]


@pytest.mark.parametrize("excess", [0.0, -0.03])
def test_a_candidate_without_positive_net_excess_over_equal_weight_is_refused(excess):
    decision = decide([evidence("1", excess=excess)], None, POLICY)

    assert not decision.promoted
    assert decision.candidates["1"]["decision"] == "refused"
    assert len(decision.candidates["1"]["reasons"]) == 1
    assert decision.candidates["1"]["reasons"][0].startswith("net excess over equal weight")


@pytest.mark.parametrize("champion", [None, evidence("7", net_sharpe=0.2)], ids=["no champion", "champion"])
def test_when_every_candidate_fails_a_gate_nothing_is_promoted_and_the_reasons_name_each_version_and_gate(champion):
    candidates = [evidence("1", ic_tstat=0.5, algorithm="ridge"), evidence("2", excess=-0.01, algorithm="lasso")]

    decision = decide(candidates, champion, POLICY)

    assert not decision.promoted
    assert decision.champion_after == decision.champion_before == (champion.version if champion else None)
    [reason] = decision.reasons
    assert "no candidate passed the gates" in reason
    assert "v1 (ridge): IC HAC t 0.50 < 2.28 (2.00 deflated for 2 candidates, Bonferroni)" in reason
    assert "v2 (lasso): net excess over equal weight -1.00% <= +0.00%" in reason


def test_a_candidate_failing_both_gates_lists_both_failures():
    decision = decide([evidence("1", ic_tstat=-1.0, excess=-0.2)], None, POLICY)

    assert decision.candidates["1"]["reasons"] == ["IC HAC t -1.00 < 2.00",
                                                   "net excess over equal weight -20.00% <= +0.00%"]


# --- ranking --------------------------------------------------------------------------------------------

def test_the_best_eligible_candidate_by_net_sharpe_wins():
    candidates = [
        evidence("1", net_sharpe=0.8),
        evidence("2", net_sharpe=1.4),
        evidence("3", net_sharpe=2.5, ic_tstat=1.0),  # best Sharpe, but fails the IC gate
    ]

    decision = decide(candidates, None, POLICY)

    assert decision.champion_after == "2"
    assert decision.candidates["1"]["decision"] == "not promoted"
    assert decision.candidates["3"]["decision"] == "refused"


def test_ranking_by_icir_when_configured_picks_the_highest_icir_not_the_highest_sharpe():
    candidates = [evidence("1", net_sharpe=2.0, icir=0.3), evidence("2", net_sharpe=0.5, icir=0.9)]

    decision = decide(candidates, None, PromotionPolicy(rank_by="icir"))

    assert decision.champion_after == "2"


# --- the margin over the champion -----------------------------------------------------------------------

MARGIN = PromotionPolicy(margin=0.25)  # binary-exact numbers: "at least the margin" is tested exactly


def test_a_candidate_beating_the_champion_by_less_than_the_margin_is_refused():
    champion = evidence("1", net_sharpe=1.0)

    decision = decide([evidence("2", net_sharpe=1.125)], champion, MARGIN)

    assert not decision.promoted
    assert decision.champion_after == "1"
    assert "by the margin 0.25" in decision.reasons[0]
    assert decision.candidates["2"]["decision"] == "not promoted"


@pytest.mark.parametrize("candidate_sharpe", [1.25, 1.5])
def test_a_candidate_beating_the_champion_by_at_least_the_margin_is_promoted(candidate_sharpe):
    champion = evidence("1", net_sharpe=1.0)

    decision = decide([evidence("2", net_sharpe=candidate_sharpe)], champion, MARGIN)

    assert decision.promoted
    assert (decision.champion_before, decision.champion_after) == ("1", "2")
    assert "beats champion v1 (ridge)" in decision.reasons[0]


def test_a_champion_among_the_candidates_stays_champion_and_nothing_is_promoted():
    champion = evidence("1", net_sharpe=1.5)

    decision = decide([champion, evidence("2", net_sharpe=1.0)], champion, POLICY)

    assert not decision.promoted
    assert decision.champion_after == "1"
    assert decision.candidates["1"]["decision"] == "champion"
    assert decision.reasons == ["v1 (ridge) is already champion"]


# --- missing numbers ------------------------------------------------------------------------------------

def test_a_nan_ranking_metric_ranks_last_among_eligible_candidates():
    candidates = [evidence("1", net_sharpe=NAN), evidence("2", net_sharpe=-0.5)]

    decision = decide(candidates, None, POLICY)

    assert decision.champion_after == "2"
    assert list(decision.candidates) == ["2", "1"]  # the recorded verdicts follow the ranking


@pytest.mark.parametrize("gate_metric", ["ic_tstat", "excess"])
def test_a_nan_gate_metric_fails_its_gate(gate_metric):
    decision = decide([evidence("1", **{gate_metric: NAN})], None, POLICY)

    assert not decision.promoted
    assert decision.candidates["1"]["decision"] == "refused"
    assert "nan" in decision.candidates["1"]["reasons"][0]


def test_a_candidate_with_a_nan_ranking_metric_is_not_promoted_even_without_a_champion():
    decision = decide([evidence("1", net_sharpe=NAN)], None, POLICY)

    assert not decision.promoted
    assert decision.champion_after is None


def test_a_champion_with_a_nan_ranking_metric_is_beaten_by_any_eligible_candidate():
    champion = evidence("1", net_sharpe=NAN)

    decision = decide([evidence("2", net_sharpe=-1.0)], champion, POLICY)

    assert decision.promoted
    assert decision.champion_after == "2"


# --- challenger -----------------------------------------------------------------------------------------

def test_the_challenger_is_the_next_best_candidate_after_a_promotion():
    candidates = [evidence("1", net_sharpe=0.5), evidence("2", net_sharpe=2.0), evidence("3", net_sharpe=1.0)]

    decision = decide(candidates, None, POLICY)

    assert decision.champion_after == "2"
    assert decision.challenger == "3"


def test_the_challenger_is_the_best_ranked_candidate_when_the_champion_stays():
    champion = evidence("9", net_sharpe=3.0)
    candidates = [evidence("1", net_sharpe=0.5), evidence("2", net_sharpe=2.0)]

    decision = decide(candidates, champion, POLICY)

    assert decision.champion_after == "9"
    assert decision.challenger == "2"


def test_the_champion_is_never_its_own_challenger():
    champion = evidence("1", net_sharpe=2.0)

    decision = decide([champion, evidence("2", net_sharpe=1.0)], champion, POLICY)

    assert decision.challenger == "2"


def test_a_lone_candidate_that_becomes_champion_leaves_no_challenger():
    assert decide([evidence("1")], None, POLICY).challenger is None


# --- errors and summary ---------------------------------------------------------------------------------

def test_deciding_without_candidates_raises_promotion_error():
    with pytest.raises(PromotionError, match="no candidate"):
        decide([], None, POLICY)


def test_summary_line_names_the_promoted_version():
    line = decide([evidence("4")], None, POLICY).summary_line()

    assert line.startswith("promotion: promoted v4 to champion")


@pytest.mark.parametrize("champion, shown", [(None, "(none)"), (evidence("7", net_sharpe=5.0), "(v7)")])
def test_summary_line_says_the_champion_is_unchanged_and_why(champion, shown):
    line = decide([evidence("4", ic_tstat=0.0)], champion, POLICY).summary_line()

    assert line.startswith(f"promotion: champion unchanged {shown}")
    assert "IC HAC t 0.00 < 2.00" in line


def test_the_decision_records_the_policy_it_applied():
    policy = PromotionPolicy(rank_by="icir", min_ic_tstat=1.5, margin=0.1)

    decision = decide([evidence("1")], None, policy)

    assert decision.to_dict()["policy"] == policy.model_dump()


# --- the gated statistic and the deflation for the best of K ----------------------------------------------

def test_the_default_gate_judges_the_hac_t_of_the_daily_ic_not_the_monthly_t():
    powered = evidence("1", ic_tstat=1.2, ic_hac_tstat=2.6)  # same signal, more dates: only the HAC t clears 2
    weak = evidence("1", ic_tstat=2.6, ic_hac_tstat=1.2)

    assert decide([powered], None, POLICY).promoted
    assert decide([weak], None, POLICY).candidates["1"]["reasons"] == ["IC HAC t 1.20 < 2.00"]


def test_the_non_overlapping_t_can_be_chosen_as_the_gated_statistic():
    policy = PromotionPolicy(statistic="ic_tstat")

    decision = decide([evidence("1", ic_tstat=1.2, ic_hac_tstat=2.6)], None, policy)

    assert decision.candidates["1"]["reasons"] == ["IC t-stat 1.20 < 2.00"]


@pytest.mark.parametrize("k, threshold", [(1, 2.0), (2, 2.2776), (4, 2.5310)])
def test_the_threshold_rises_to_the_bonferroni_z_for_the_best_of_k_candidates(k, threshold):
    # one-sided alpha = 1 - Phi(2) = 0.02275; the best of k passes only at Phi^-1(1 - alpha / k)
    just_below = [evidence(str(i), ic_tstat=threshold - 0.001) for i in range(1, k + 1)]
    just_above = [evidence(str(i), ic_tstat=threshold + 0.001) for i in range(1, k + 1)]

    refused = decide(just_below, None, POLICY)
    assert not refused.promoted
    assert f"< {threshold:.2f}" in refused.candidates["1"]["reasons"][0]
    assert ("Bonferroni" in refused.candidates["1"]["reasons"][0]) == (k > 1)
    assert decide(just_above, None, POLICY).promoted


def test_without_deflation_the_threshold_stays_for_any_number_of_candidates():
    candidates = [evidence(str(i), ic_tstat=2.1) for i in range(1, 5)]

    assert not decide(candidates, None, POLICY).promoted
    assert decide(candidates, None, PromotionPolicy(deflation="none")).promoted


def test_a_permissive_threshold_is_not_deflated_and_passes_every_candidate():
    permissive = PromotionPolicy(min_ic_tstat=-1e9, min_excess_vs_equal_weight=-1e9)
    candidates = [evidence(str(i), ic_tstat=-50.0, excess=-0.5) for i in range(1, 5)]

    decision = decide(candidates, None, permissive)

    assert decision.promoted
    assert {v["decision"] for v in decision.candidates.values()} == {"promoted", "not promoted"}


def test_a_version_registered_before_the_hac_t_falls_back_to_the_monthly_t_and_says_so():
    old_tags = {"algorithm": "ridge", "data_digest": "sha256:d", "net_sharpe": "1.0", "icir": "0.5",
                "ic_tstat": "1.5", "excess_vs_equal_weight": "0.05"}
    new_tags = {**old_tags, "ic_hac_tstat": "2.5"}

    old = evidence_from_tags("1", old_tags)
    [reason] = decide([old], None, POLICY).candidates["1"]["reasons"]
    assert reason.startswith("IC t-stat 1.50 < 2.00")
    assert "registered before ic_hac_tstat" in reason
    passing_old = evidence_from_tags("1", {**old_tags, "ic_tstat": "2.5"})
    assert "IC t-stat 2.50 >= 2.00 (registered before ic_hac_tstat" in decide([passing_old], None, POLICY).reasons[0]
    assert decide([evidence_from_tags("1", new_tags)], None, POLICY).promoted


# --- the registry contract (portfolio_mlops/registry.py): what tracking tags, promotion reads back -------

def _summary_block(net_sharpe=0.8, icir=0.4, ic_tstat=2.5, ic_hac_tstat=2.2, excess=0.031):
    """One algorithm's block of summary.json, as report.py writes it (only the fields that matter here)."""
    return {"signal": {"ic_mean": 0.02, "icir": icir, "ic_tstat": ic_tstat, "ic_hac_tstat": ic_hac_tstat, "oos_r2": 0.001},
            "portfolio": {"net": {"sharpe": net_sharpe, "cagr": 0.09, "max_drawdown": -0.3}, "gross": {}},
            "excess": {"equal_weight": {"ann_return": excess}}}


def test_the_metrics_tracking_tags_on_a_version_are_the_evidence_promotion_reads_back():
    from portfolio_mlops import registry

    block = _summary_block(net_sharpe=0.1 + 0.2)  # a float whose repr must survive the round trip exactly
    tags = {registry.ALGORITHM: "lasso", registry.DATA_DIGEST: "sha256:d",
            **{name: registry.metric_tag(value) for name, value in registry.key_metrics(block).items()}}

    read = evidence_from_tags("3", tags)

    assert (read.algorithm, read.data_digest) == ("lasso", "sha256:d")
    assert (read.net_sharpe, read.icir, read.ic_tstat, read.ic_hac_tstat, read.excess_vs_equal_weight) == (
        0.1 + 0.2, 0.4, 2.5, 2.2, 0.031)
    assert not read.legacy


def test_a_headline_metric_the_summary_lacks_is_none_and_tags_as_nan():
    from portfolio_mlops import registry

    block = _summary_block(ic_hac_tstat=None)
    del block["excess"]["equal_weight"]

    assert registry.headline(block, "excess_vs_equal_weight") is None
    assert registry.headline(block, "ic_hac_tstat") is None
    tagged = {name: registry.metric_tag(value) for name, value in registry.key_metrics(block).items()}
    assert tagged["excess_vs_equal_weight"] == tagged["ic_hac_tstat"] == "nan"
    assert registry.headlines(block, registry.TRAIN_METRICS)["net_sharpe"] == 0.8


def test_the_evaluation_digest_changes_with_the_evaluation_settings_and_not_with_the_model():
    from portfolio_mlops import registry
    from portfolio_mlops.config import RunConfig

    base = RunConfig()
    other_model = base.with_algorithms(["lasso"])
    other_costs = base.model_copy(update={"portfolio": base.portfolio.model_copy(update={"cost_bps_per_side": 25.0})})

    assert registry.evaluation_digest(other_model) == registry.evaluation_digest(base)
    assert registry.evaluation_digest(other_costs) != registry.evaluation_digest(base)
