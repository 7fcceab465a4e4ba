"""URIs as metadata, logs and messages show them: no userinfo, no query value, no fragment."""

from __future__ import annotations

import pytest

from mlops_assets.lib.metadata import redact_uri


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "https://reader:pw@data.example/houses.csv?token=abc123&X-Amz-Signature=f00d#part",
            "https://***@data.example/houses.csv?token=***&X-Amz-Signature=***",
        ),
        ("https://ghp_TOKENVALUE@data.example/a.csv", "https://***@data.example/a.csv"),
        (
            "https://data.example/a.csv?sv=2024&sig=a%2Fb%3D",
            "https://data.example/a.csv?sv=***&sig=***",
        ),
        ("https://data.example/a.csv?BARETOKEN&x=1", "https://data.example/a.csv?***&x=***"),
        ("https://data.example/a.csv#access_token=abc", "https://data.example/a.csv"),
        ("s3://bucket/labelled/?versionId=v1", "s3://bucket/labelled/?versionId=***"),
        (
            "postgresql://mlflow:secret@db:5432/mlflow?sslmode=require",
            "postgresql://***@db:5432/mlflow?sslmode=***",
        ),
        ("http://data.example/incoming/{date}.csv", "http://data.example/incoming/{date}.csv"),
    ],
)
def test_userinfo_query_values_and_fragments_are_redacted(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


@pytest.mark.parametrize(
    "uri",
    [
        "sample://house-prices?rows=5000&seed=42",  # generated: its query is harmless parameters
        "/data/houses/labelled/",
        "/data/odd?name#1.csv",  # a path, not a URL: '?' and '#' are part of the name
        "file:///data/houses/labelled.csv",
        "s3://bucket/labelled/",
        "",
    ],
)
def test_generated_sources_and_paths_are_shown_as_they_are(uri: str) -> None:
    assert redact_uri(uri) == uri


def test_a_uri_that_does_not_parse_shows_only_its_scheme() -> None:
    assert redact_uri("https://user:pw@[::1/x?token=abc") == "https://*** (malformed URI)"
