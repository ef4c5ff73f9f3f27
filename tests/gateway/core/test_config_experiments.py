"""The `experiments:` block: the issue's example loads, and every mistake is named by its
YAML path before the gateway starts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.core.config import ConfigError, parse_config

BASE: dict[str, Any] = {
    "providers": [{"name": "mock", "type": "mock"}],
    "models": [
        {"name": "gpt-4o-mini", "provider": "mock"},
        {"name": "claude-haiku", "provider": "mock"},
    ],
    "routes": [{"name": "auto", "models": ["gpt-4o-mini", "claude-haiku"]}],
}
EXAMPLE: dict[str, Any] = {
    "name": "haiku-vs-mini",
    "route": "auto",
    "arms": [
        {"name": "control", "model": "gpt-4o-mini", "share": 0.5},
        {
            "name": "challenger",
            "model": "claude-haiku",
            "share": 0.5,
            "system_prompt": "Answer briefly.",
            "params": {"temperature": 0.2},
        },
    ],
    "metric": "overall",
    "sticky_by": "conversation",
    "guards": {"max_error_rate": 0.05, "max_latency_p95_ms": 8000},
}


def with_experiment(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    experiment = copy.deepcopy(EXAMPLE)
    experiment.update(changes)
    raw["experiments"] = [experiment]
    return raw


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="gw.yaml")
    return str(info.value)


def test_the_issues_example_loads() -> None:
    config = parse_config(with_experiment())
    (experiment,) = config.experiments
    assert experiment.control_arm == "control" and experiment.shares() == [0.5, 0.5]
    assert experiment.arms[1].params == {"temperature": 0.2}
    assert experiment.guards.max_latency_p95_ms == 8000


def test_a_stated_combination_of_metrics() -> None:
    raw = with_experiment(metric="combination", combination={"overall": 1, "cost": -100})
    (experiment,) = parse_config(raw).experiments
    assert experiment.combination == {"overall": 1, "cost": -100}


def test_shares_left_out_everywhere_are_equal() -> None:
    arms = [{"name": a["name"], "model": a["model"]} for a in EXAMPLE["arms"]]
    (experiment,) = parse_config(with_experiment(arms=arms)).experiments
    assert experiment.shares() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"arms": [EXAMPLE["arms"][0], {**EXAMPLE["arms"][1], "model": "gpt-5"}]},
            "experiments[0].arms[1].model: unknown model 'gpt-5'",
        ),
        ({"route": "fast"}, "experiments[0].route: unknown route 'fast'"),
        (
            {"arms": [EXAMPLE["arms"][0], {**EXAMPLE["arms"][1], "share": 0.4}]},
            "experiments[0].arms: the shares must sum to 1, they sum to 0.9",
        ),
        (
            {"arms": [EXAMPLE["arms"][0], {**EXAMPLE["arms"][1], "share": None}]},
            "experiments[0].arms[1].share: give every arm a share, or none",
        ),
        (
            {"arms": [EXAMPLE["arms"][0], {**EXAMPLE["arms"][1], "name": "control"}]},
            "experiments[0].arms[1].name: the arm 'control' is defined twice",
        ),
        ({"arms": [EXAMPLE["arms"][0]]}, "experiments[0].arms: List should have at least 2"),
        ({"metric": "vibes"}, "experiments[0].metric: Input should be 'overall'"),
        ({"control": "nobody"}, "experiments[0].control: unknown arm 'nobody'"),
        (
            {"arms": [EXAMPLE["arms"][0], {**EXAMPLE["arms"][1], "params": {"model": "x"}}]},
            "experiments[0].arms[1].params: an arm cannot set model",
        ),
        ({"guards": {"max_error_rate": 2}}, "experiments[0].guards.max_error_rate"),
        ({"colour": "red"}, "experiments[0].colour: unknown key"),
        ({"metric": "combination"}, "experiments[0].combination: give the weights"),
        ({"combination": {"overall": 1}}, "experiments[0].combination: only with metric"),
        (
            {"metric": "combination", "combination": {"vibes": 1}},
            "experiments[0].combination.vibes.[key]: Input should be 'overall'",
        ),
    ],
)
def test_mistakes_are_named_by_their_yaml_path(changes: dict[str, Any], expected: str) -> None:
    assert expected in error_of(with_experiment(**changes))


def test_one_experiment_per_route_and_unique_names() -> None:
    raw = with_experiment()
    raw["experiments"].append({**copy.deepcopy(EXAMPLE), "name": "second"})
    assert "experiments[1].route: the route 'auto' already has the experiment" in error_of(raw)
    raw = with_experiment()
    raw["experiments"].append(copy.deepcopy(EXAMPLE))
    assert "experiments[1].name: 'haiku-vs-mini' is defined twice" in error_of(raw)
