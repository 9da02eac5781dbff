"""Validation findings: every problem names the file, the column, a count and example rows."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class ValidationIssue:
    """One finding about one column of one file.

    Attributes:
        file: the file the rows came from.
        column: the column at fault ("" for whole-file problems).
        problem: a short description (e.g. "null values", "duplicate ids").
        count: how many rows are affected.
        examples: a few offending values or rows, for a person to look at.
        severity: "error" (blocks the load under the fail policy), "warning" or "info".
        action: what was done ("failed", "dropped 12 rows", "kept", ...).
    """

    file: str
    column: str
    problem: str
    count: int
    examples: list[Any] = field(default_factory=list)
    severity: Severity = "error"
    action: str = ""

    def describe(self) -> str:
        """One line for people: severity, file, column, problem, count, action, examples."""
        where = f"{self.file}" + (f", column '{self.column}'" if self.column else "")
        text = f"[{self.severity}] {where}: {self.problem}"
        if self.count or self.column:  # a whole-file problem (unreadable, missing) has no row count
            text += f" ({self.count:,} rows)"
        if self.action:
            text += f" -> {self.action}"
        if self.examples:
            text += f"; e.g. {', '.join(map(repr, self.examples))}"
        return text


@dataclass
class ValidationReport:
    """All findings of one load, plus the row counts that went in and came out."""

    issues: list[ValidationIssue] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, issue: ValidationIssue) -> None:
        """Record a finding."""
        self.issues.append(issue)

    @property
    def errors(self) -> list[ValidationIssue]:
        """The findings of severity ``error``."""
        return [i for i in self.issues if i.severity == "error"]

    def describe(self) -> str:
        """The counts, then one line per finding."""
        lines = [f"{k}: {v:,}" for k, v in self.counts.items()]
        lines += [i.describe() for i in self.issues]
        return "\n".join(lines) if lines else "no findings"

    def to_json(self) -> str:
        """Counts and findings as indented JSON."""
        return json.dumps({"counts": self.counts, "issues": [asdict(i) for i in self.issues]}, indent=2, default=str)


class DataValidationError(ValueError):
    """Input data failed validation. ``issues`` holds the findings; the message lists them.

    Args:
        issues: the findings that failed the load.
    """

    def __init__(self, issues: list[ValidationIssue]):
        self.issues = issues
        super().__init__("data validation failed:\n" + "\n".join("  " + i.describe() for i in issues))
