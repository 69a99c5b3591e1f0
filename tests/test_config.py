"""Typed configs: YAML + overrides fill nested dataclasses; mistakes are named before any work."""

import re
from dataclasses import dataclass, field
from typing import Literal

import pytest

from vocaseg.config import apply_overrides, from_dict, load_yaml, to_dict
from vocaseg.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Run:
    name: str = "run"
    steps: int = 10
    precision: Literal["fp32", "bf16"] = "fp32"
    resume: str | None = None
    optim: Optim = field(default_factory=Optim)
    groups: list[str] = field(default_factory=list)


def test_nested_dataclass_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("name: voc\nsteps: 5\noptim:\n  lr: 2.0e-4\n  betas: [0.9, 0.95]\n")
    data = apply_overrides(load_yaml(path), ["optim.lr=1e-5", "precision=bf16", "groups=[a, b]"])
    run = from_dict(Run, data, str(path))
    assert run == Run("voc", 5, "bf16", None, Optim(1e-5, (0.9, 0.95)), ["a", "b"])
    assert to_dict(run)["optim"] == {"lr": 1e-5, "betas": [0.9, 0.95]}


def test_int_is_accepted_where_float_expected():
    assert from_dict(Optim, {"lr": 1}).lr == 1.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stepz": 3}, "unknown key(s) stepz"),
        ({"steps": "ten"}, "cfg.steps: expected an integer"),
        ({"steps": True}, "cfg.steps: expected an integer"),
        ({"precision": "fp64"}, "not one of 'fp32', 'bf16'"),
        ({"optim": {"lr": "fast"}}, "cfg.optim.lr: expected a number"),
        ({"optim": {"betas": [0.9]}}, "expected 2 values"),
        ({"optim": 3}, "expected a mapping"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(Run, data, "cfg")


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(listing)


def test_override_syntax_error():
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"optim": 3}, ["optim.lr=1"])
