"""The benchmark protocol table: per (method preset, dataset) settings read off each method's
official evaluation configs, shipped as ``data/protocols/<method>.yaml`` (docs/protocols.md).

:func:`find_row` picks the row ``vocaseg eval`` applies: ``<dataset>@<training dataset>`` for a
model trained on another dataset when such a cross-dataset row exists, else ``<dataset>`` (with no
seen set when the model was trained elsewhere). :meth:`ProtocolRow.settings` turns a row into
model settings (the shared inference keys of every method config, plus ``logit_scale`` and
``templates`` where the method has them); ``--set`` goes on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from vocaseg.errors import ConfigError

#: The keys of a row that move numbers, in ``--print-protocol`` order.
VALUE_KEYS = (
    "short_side", "max_long_side", "window", "stride", "pad", "size_divisor", "logit_scale",
    "prob_thd", "area_thd", "background", "background_names", "templates", "pamr_steps", "seen",
)  # fmt: skip


@dataclass(frozen=True)
class ProtocolRow:
    """One resolved row: its id, its values (defaults merged), class list, family and sources."""

    id: str
    method: str
    dataset: str
    values: dict[str, Any]
    class_list: str | None
    protocol: str
    target: dict[str, Any] | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def settings(self, config_keys: set[str]) -> dict[str, Any]:
        """Model-config overrides for a method whose config has ``config_keys``."""
        v = self.values
        out: dict[str, Any] = {
            "short_side": v.get("short_side") or 0,
            "max_long_side": v.get("max_long_side") or 0,
            "window": v.get("window") or 0,
            "stride": v.get("stride") or 0,
            "prob_thd": v.get("prob_thd") or 0.0,
            "area_thd": v.get("area_thd") or 0.0,
            "background": v.get("background") or "bg:none",
            "background_names": v.get("background_names"),
            "pamr_steps": v.get("pamr_steps") or 0,
        }
        pad = v.get("pad") or "none"
        if pad == "none":  # floor the patch grid and stretch the logits back (SCLIP, NACLIP)
            out.update(pad="center", size_divisor=1)
        else:
            out.update(pad=pad, size_divisor=v.get("size_divisor") or 0)
        for key in ("logit_scale", "templates"):
            if v.get(key) is not None and key in config_keys:
                out[key] = v[key]
        return {k: value for k, value in out.items() if k in config_keys}

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "protocol": self.protocol,
            "class_list": self.class_list,
            **{k: self.values.get(k) for k in VALUE_KEYS},
            "target": self.target,
            "sources": self.sources,
        }


@cache
def _rows(method: str) -> dict[str, dict[str, Any]]:
    path = resources.files("vocaseg.data") / "protocols" / f"{method}.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"protocol table {method}.yaml is not valid YAML ({err})") from None
    defaults = data.pop("defaults", {}) or {}
    rows = {}
    for row_id, row in data.items():
        sources = {**(defaults.get("sources") or {}), **(row.get("sources") or {})}
        rows[row_id] = {**defaults, **row, "sources": sources}
    return rows


def row_ids(method: str) -> list[str]:
    """The rows of ``method`` (dataset ids, and ``<dataset>@<training dataset>``)."""
    return sorted(_rows(method))


def find_row(method: str, dataset: str, trained_on: str | None = None) -> ProtocolRow | None:
    """The row to apply for ``method`` on ``dataset``; ``trained_on`` is the class-list id of the
    dataset the model was trained on (None: training-free or unknown). None when no row exists."""
    rows = _rows(method)
    cross = trained_on is not None and trained_on != dataset
    row_id = f"{dataset}@{trained_on}" if cross else dataset
    if row_id not in rows:
        row_id = dataset
    if row_id not in rows:
        return None
    row = dict(rows[row_id])
    if cross and "@" not in row_id:
        row["seen"] = None  # a model trained elsewhere gets no seen set on this dataset
        row["protocol"] = "ov-cross"
    values = {k: row.get(k) for k in VALUE_KEYS}
    return ProtocolRow(
        id=f"{method}/{row_id}",
        method=method,
        dataset=dataset,
        values=values,
        class_list=row.get("class_list"),
        protocol=row.get("protocol") or "ov-cross",
        target=row.get("target"),
        sources=dict(row.get("sources") or {}),
    )
