"""How big a Kubernetes pod each piece of work asks for, as ``dagster-k8s/config`` tags.

On a laptop these tags do nothing. On a cluster, K8sRunLauncher reads a run's tags (a job's
tags become its runs' tags) to size the run pod, and k8s_job_executor sizes each step pod from
its config and the step's own tags (each model's trained_model carries the training size).
Training asks for more CPU and memory than anything else. Sizes are the deployment's settings
(MLOPS_K8S_*), which a model may override (its component's ``kubernetes`` attributes, given
here as ``sizes``: cpu, memory, memory_limit, training_cpu, training_memory,
training_memory_limit), read when the definitions are built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlops_assets.settings import setting

K8S_CONFIG_TAG = "dagster-k8s/config"


def pod_size(cpu: str, memory: str, memory_limit: str) -> dict[str, Any]:
    """A ``dagster-k8s/config`` value: container requests and a memory limit.

    No CPU limit on purpose: throttling a training step slows it down without protecting
    anyone; the memory limit is what keeps a node healthy.
    """
    return {
        "container_config": {
            "resources": {
                "requests": {"cpu": cpu, "memory": memory},
                "limits": {"memory": memory_limit},
            }
        }
    }


def _size(sizes: Mapping[str, str], name: str) -> str:
    return sizes.get(name) or setting(f"MLOPS_K8S_{name.upper()}")


def standard_pod(sizes: Mapping[str, str] = {}) -> dict[str, Any]:
    return pod_size(_size(sizes, "cpu"), _size(sizes, "memory"), _size(sizes, "memory_limit"))


def training_pod(sizes: Mapping[str, str] = {}) -> dict[str, Any]:
    return pod_size(
        _size(sizes, "training_cpu"),
        _size(sizes, "training_memory"),
        _size(sizes, "training_memory_limit"),
    )


def standard_tags(sizes: Mapping[str, str] = {}) -> dict[str, str]:
    """Tags for a job or an asset's op: the standard pod (tag values are JSON strings)."""
    return {K8S_CONFIG_TAG: json.dumps(standard_pod(sizes))}


def training_tags(sizes: Mapping[str, str] = {}) -> dict[str, str]:
    """Tags for a job or an asset's op that trains."""
    return {K8S_CONFIG_TAG: json.dumps(training_pod(sizes))}
