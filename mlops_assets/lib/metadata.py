"""Turning results into Dagster metadata a person can read in the UI."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Sequence

from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, MetadataValue

from mlops_assets.ml.tabular import Violation


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> MetadataValue:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return MetadataValue.md("\n".join(lines))


def redact_uri(uri: str) -> str:
    """``uri`` as metadata, logs and messages may show it: userinfo becomes ``***@``, every
    query value ``***`` (the names stay, so a person sees which were given: a token, a
    presigned URL's X-Amz-Signature) and a fragment is dropped.

    Plain paths are shown as they are, and so are generated ``sample://`` sources, whose
    query is harmless parameters (rows, seed). A URI that does not parse shows only its
    scheme.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        scheme = uri.split(":", 1)[0] if "://" in uri else ""
        return f"{scheme}://*** (malformed URI)" if scheme else "*** (malformed URI)"
    if parts.scheme in ("", "sample") or len(parts.scheme) == 1:  # a path, a drive letter
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    # A parameter without '=' may be a bare token: all of it goes.
    pairs = (p.partition("=") for p in parts.query.split("&") if p)
    query = "&".join(f"{name}=***" if equals else "***" for name, equals, _ in pairs)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query, fragment=""))


_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE)


def redact_urls(text: str) -> str:
    """``text`` with every URL in it redacted as :func:`redact_uri` does: no userinfo, no
    query values (a token). For messages that quote a URL: a library's error, a builder's
    output."""
    return _URL.sub(lambda url: redact_uri(url.group(0)), text)


def violations_result(
    check_name: str,
    asset_key: str | AssetKey,
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
