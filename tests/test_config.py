from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from peftbench.config import TrainConfig, apply_sets, parse_sets, parse_value
from peftbench.run.spec import RunSpec
from peftbench.errors import ConfigError


@dataclass(frozen=True)
class MethodCfg:
    r: int = 8
    lr: float = 5e-4
    target: tuple[str, ...] = ("query", "value")
    train_head: bool = True
    note: str | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError("r must be >= 1")


@dataclass(frozen=True)
class TaskCfg:
    max_length: int = 512
    lr: float = 1.0  # deliberately collides with MethodCfg.lr
    mode: Literal["body", "title+body"] = "body"


def sections():
    return {"method": MethodCfg(), "task": TaskCfg(), "train": TrainConfig()}


@pytest.mark.parametrize(
    ("raw", "annotation", "expected"),
    [
        ("8", int, 8),
        ("5e-5", float, 5e-5),
        ("true", bool, True),
        ("off", bool, False),
        ("query,key,value", tuple[str, ...], ("query", "key", "value")),
        ("none", int | None, None),
        ("3", int | None, 3),
        ("bf16", Literal["no", "fp16", "bf16"], "bf16"),
    ],
)
def test_parse_value_types(raw, annotation, expected):
    assert parse_value(raw, annotation, "k") == expected


@pytest.mark.parametrize(
    ("raw", "annotation"),
    [("x", int), ("1.5", int), ("maybe", bool), ("fp8", Literal["no", "fp16"]), ("abc", float)],
)
def test_parse_value_rejects(raw, annotation):
    with pytest.raises(ConfigError):
        parse_value(raw, annotation, "k")


def test_sets_route_to_their_section():
    result = apply_sets(sections(), parse_sets(["r=16", "max_length=128", "epochs=3", "target=query,key"]))
    assert result["method"].r == 16 and result["method"].target == ("query", "key")
    assert result["task"].max_length == 128
    assert result["train"].epochs == 3


def test_ambiguous_key_needs_a_section():
    with pytest.raises(ConfigError, match="method.lr or task.lr"):
        apply_sets(sections(), parse_sets(["lr=1e-3"]))
    result = apply_sets(sections(), parse_sets(["method.lr=1e-3"]))
    assert result["method"].lr == 1e-3 and result["task"].lr == 1.0


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="valid keys: .*method.r"):
        apply_sets(sections(), parse_sets(["rank=4"]))


def test_validation_in_post_init_becomes_config_error():
    with pytest.raises(ConfigError, match="r must be >= 1"):
        apply_sets(sections(), parse_sets(["r=0"]))


@pytest.mark.parametrize("bad", ["r", "=3", "r=1,r=2"])
def test_malformed_pairs(bad):
    with pytest.raises(ConfigError):
        parse_sets(bad.split(",") if bad.count("=") > 1 else [bad])


def test_hash_is_stable_and_sensitive():
    a = RunSpec("m", "t", "b", MethodCfg(), TaskCfg(), TrainConfig())
    b = RunSpec("m", "t", "b", MethodCfg(), TaskCfg(), TrainConfig())
    assert a.hash == b.hash
    assert RunSpec("m", "t", "b", MethodCfg(r=4), TaskCfg(), TrainConfig()).hash != a.hash
    assert RunSpec("m", "t", "b", MethodCfg(), TaskCfg(), TrainConfig(seed=1)).hash != a.hash


def test_typed_values_are_parsed_as_set_parses_them():
    from typing import Optional

    from peftbench.config import parse_typed
    from peftbench.errors import ConfigError

    assert parse_typed(1, float, "lr") == 1.0 and isinstance(parse_typed(1, float, "lr"), float)
    assert parse_typed(None, Optional[int], "bottleneck") is None
    assert parse_typed(True, bool, "train_head") is True and parse_typed(["q", "v"], tuple[str, ...], "t") == ("q", "v")
    for value, annotation in ((None, str), (2.5, int), ("fast", float), (float("inf"), float)):
        with pytest.raises(ConfigError):
            parse_typed(value, annotation, "x")
