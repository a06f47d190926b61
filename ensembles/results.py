"""The ensemble experiment's results: a dataclass and the JSON schema of ``results.json``.

Every accuracy is stored with its 95% Wilson interval beside it (``"transfer": 0.31,
"transfer_ci": [0.28, 0.34]``); numbers are numbers; the document carries a schema
version and validates against :data:`EXPERIMENT_SCHEMA` before it is written.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from robustness.core.io import read_json
from robustness.core.validation import check_json_schema

SCHEMA_VERSION = 1

_PROB = {"type": "number", "minimum": 0, "maximum": 1}
_CI = {"type": "array", "items": _PROB, "minItems": 2, "maxItems": 2}
_FINDINGS = {"type": "array", "items": {
    "type": "object", "required": ["check", "severity", "message"],
    "properties": {"check": {"type": "string"}, "severity": {"enum": ["info", "warning", "error"]},
                   "message": {"type": "string"}}}}


def _measured(*names: str, nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    """Properties for accuracies ``name`` with their intervals ``name_ci``."""
    out: dict[str, Any] = {}
    for name in names:
        null = name in nullable
        out[name] = {"oneOf": [_PROB, {"type": "null"}]} if null else _PROB
        out[f"{name}_ci"] = {"oneOf": [_CI, {"type": "null"}]} if null else _CI
    return out


def _required(*names: str) -> list[str]:
    return [k for n in names for k in (n, f"{n}_ci")]


_ROW = {
    "type": "object",
    "required": ["sampling", "n_members", "with_baseline", "aggregation",
                 *_required("clean", "transfer", "adaptive", "genetic"), "adaptive_by_attack",
                 "genetic_median_queries", "findings", "published_transfer"],
    "properties": {
        "sampling": {"type": "string"}, "n_members": {"type": "integer", "minimum": 1},
        "with_baseline": {"type": "boolean"}, "aggregation": {"enum": ["mean", "max", "vote"]},
        **_measured("clean", "transfer", "adaptive", "genetic", nullable=("genetic",)),
        "adaptive_by_attack": {"type": "object", "additionalProperties": _PROB},
        "genetic_median_queries": {"type": ["number", "null"]},
        "findings": _FINDINGS,
        "published_transfer": {"type": ["number", "null"]},
    },
}

EXPERIMENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Ensemble experiment results",
    "type": "object",
    "required": ["schema_version", "experiment", "config", "dataset", "n_images",
                 "single_models", "findings", "members", "ensembles", "published", "verdicts",
                 "timings_s", "resumed", "seconds", "versions"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "experiment": {"const": "ensembles"},
        "config": {"type": "object"},
        "dataset": {"type": "object"},
        "n_images": {"type": "object", "additionalProperties": {"type": "integer"}},
        "single_models": {"type": "object", "required": ["baseline", "adversarially_trained"],
                          "properties": {
                              "baseline": {"type": "object", "required": _required(
                                  "clean", "fgsm_own", "pgd_own"),
                                  "properties": _measured("clean", "fgsm_own", "pgd_own")},
                              "adversarially_trained": {"type": "object", "required": _required(
                                  "clean", "on_baseline_adversarials", "fgsm_own", "pgd_own"),
                                  "properties": _measured("clean", "on_baseline_adversarials",
                                                          "fgsm_own", "pgd_own")}}},
        "findings": {"type": "object", "additionalProperties": _FINDINGS},
        "members": {"type": "array", "items": {
            "type": "object",
            "required": ["sampling", "n_members", *_required("best_member_transfer"),
                         "mean_member_transfer", "mean_member_clean"],
            "properties": {**_measured("best_member_transfer"),
                           "mean_member_transfer": _PROB, "mean_member_clean": _PROB,
                           # Per member, in training order (absent in older results).
                           "member_transfer": {"type": "array", "items": _PROB},
                           "member_clean": {"type": "array", "items": _PROB}}}},
        "ensembles": {"type": "array", "items": _ROW},
        "published": {"type": "object"},
        "verdicts": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["answer", "line", "sign_test_p"],
            "properties": {"sign_test_p": _PROB}}},
        "timings_s": {"type": "object", "additionalProperties": {"type": "number"}},
        "resumed": {"type": "object"},
        "seconds": {"type": "number", "minimum": 0},
        "versions": {"type": "object"},
        # Optional (absent before the Ray backend): where the members were trained.
        "backend": {"type": "object", "required": ["backend"]},
    },
}


class ResultsSchemaError(ValueError):
    """A results document does not match :data:`EXPERIMENT_SCHEMA`."""


def validate_results(data: Any) -> None:
    """Raise :class:`ResultsSchemaError` naming the first offending field, if any."""
    check_json_schema(data, EXPERIMENT_SCHEMA,
                      what="results.json is not a valid ensemble-experiment result",
                      error=ResultsSchemaError)


@dataclass(frozen=True)
class ExperimentResult:
    """``results.json`` of ``robustness experiment ensembles`` as typed, validated data."""

    schema_version: int
    experiment: str
    config: dict[str, Any]
    dataset: dict[str, Any]
    n_images: dict[str, int]
    single_models: dict[str, dict[str, Any]]
    findings: dict[str, list[dict[str, Any]]]
    members: list[dict[str, Any]]
    ensembles: list[dict[str, Any]]
    published: dict[str, Any]
    verdicts: dict[str, dict[str, Any]]
    timings_s: dict[str, float]
    resumed: dict[str, Any]
    seconds: float
    versions: dict[str, str]
    backend: dict[str, Any] = field(default_factory=lambda: {"backend": "local"})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data, as written to ``results.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentResult:
        """Validate against the schema, then build (unknown keys are refused)."""
        validate_results(data)
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise ResultsSchemaError(f"results.json has unknown keys: {', '.join(extra)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExperimentResult:
        """Read a ``results.json`` (or the run directory holding one)."""
        return cls.from_dict(read_json(path, default_name="results.json"))
