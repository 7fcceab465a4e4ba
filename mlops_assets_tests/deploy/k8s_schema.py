"""Offline validation against the Kubernetes OpenAPI schemas shipped by kubernetes-validate.

K8S_VERSION is the version every manifest in deploy/ and every object the project creates
is held to. Strict mode: an unknown field is an error, as `kubectl apply --validate=strict`
would make it.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import referencing
from kubernetes_validate.utils import schema_contents

K8S_VERSION = "1.31.0"
_SCHEMA_DIR = "kubernetes-json-schema/v1.31.0-local-strict"


def validate(manifest: dict[str, Any]) -> list[str]:
    """Errors of ``manifest`` against its kind's schema; empty when it is valid."""
    try:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(map(str, getattr(exc, "path", ())))
        return [f"{where}: {getattr(exc, 'message', exc)}"]
    return []


def validate_fragment(value: Any, schema_file: str) -> list[str]:
    """Errors of a piece of a pod spec (``resourcerequirements-v1.json``, ...) against its
    type's schema, for values files that carry Kubernetes objects inside other YAML."""
    schema = schema_contents(f"{_SCHEMA_DIR}/{schema_file}", K8S_VERSION)
    definitions = schema_contents(f"{_SCHEMA_DIR}/_definitions.json", K8S_VERSION)
    registry = referencing.Registry().with_resources(
        [
            (schema.get("$id", schema_file), referencing.Resource.from_contents(schema)),
            (definitions["$id"], referencing.Resource.from_contents(definitions)),
        ]
    )
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)
    ]
