"""The one evaluation path: model x attacks x eps -> :class:`RobustnessReport`.

:func:`evaluate` plans the work (attack x eps x shard), runs it and merges it into a
report with confidence intervals, the per-sample worst case and the sanity checks'
findings. Every robustness number the harness prints comes from here.
"""

from attacks.registry import AttackSpec, parse_attack_list, parse_attack_specs
from robustness.evaluation.engine import (
    AttackSpecLike,
    Plan,
    Task,
    TaskResult,
    evaluate,
    merge,
    plan,
    run_task,
    worst_case,
)
from robustness.evaluation.report import (
    REPORT_SCHEMA,
    AttackResult,
    Finding,
    ReportSchemaError,
    RobustnessReport,
    WorstCase,
    validate_report,
)

__all__ = [
    "REPORT_SCHEMA",
    "AttackResult",
    "AttackSpec",
    "AttackSpecLike",
    "Finding",
    "Plan",
    "ReportSchemaError",
    "RobustnessReport",
    "Task",
    "TaskResult",
    "WorstCase",
    "evaluate",
    "merge",
    "parse_attack_list",
    "parse_attack_specs",
    "plan",
    "run_task",
    "validate_report",
    "worst_case",
]
