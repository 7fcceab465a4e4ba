"""Turning results into Dagster metadata a person can read in the UI."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Sequence

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from mlops_assets.ml.tabular import Violation


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> MetadataValue:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return MetadataValue.md("\n".join(lines))


def redact_uri(uri: str) -> str:
    """Drop any user:password@ part so a URI can be shown in metadata and logs."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def violations_result(
    check_name: str,
    asset_key: str,
    violations: Sequence[Violation],
    passed_text: str,
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
) -> AssetCheckResult:
    """A check result whose description lists each violation's file, column, rows and rule."""
    if not violations:
        return AssetCheckResult(
            check_name=check_name,
            asset_key=asset_key,
            passed=True,
            description=passed_text,
            metadata={"violations": 0},
        )
    shown = [v.message for v in violations[:10]]
    if len(violations) > 10:
        shown.append(f"... and {len(violations) - 10} more")
    return AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=False,
        severity=severity,
        description="\n".join(shown),
        metadata={
            "violations": len(violations),
            "details": md_table(
                ["file", "column", "rule", "rows", "detail"],
                [
                    (
                        v.file,
                        v.column or "",
                        v.rule,
                        ", ".join(map(str, v.rows)) + ("…" if v.row_count > len(v.rows) else ""),
                        v.detail,
                    )
                    for v in violations[:50]
                ],
            ),
        },
    )
