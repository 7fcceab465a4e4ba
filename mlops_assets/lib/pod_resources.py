"""How big a Kubernetes pod each piece of work asks for, as ``dagster-k8s/config`` tags.

On a laptop these tags do nothing. On a cluster, K8sRunLauncher reads a run's tags (a job's
tags become its runs' tags) to size the run pod, and k8s_job_executor sizes each step pod
from its config (definitions.k8s_executor_config: the training step larger). Training asks
for more CPU and memory than anything else. Sizes are settings, read when the definitions are
built, so a team changes them per cluster without touching code.
"""

from __future__ import annotations

import json
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


def standard_pod() -> dict[str, Any]:
    return pod_size(
        setting("MLOPS_K8S_CPU"), setting("MLOPS_K8S_MEMORY"), setting("MLOPS_K8S_MEMORY_LIMIT")
    )


def training_pod() -> dict[str, Any]:
    return pod_size(
        setting("MLOPS_K8S_TRAINING_CPU"),
        setting("MLOPS_K8S_TRAINING_MEMORY"),
        setting("MLOPS_K8S_TRAINING_MEMORY_LIMIT"),
    )


def standard_tags() -> dict[str, str]:
    """Tags for a job or an asset's op: the standard pod (tag values are JSON strings)."""
    return {K8S_CONFIG_TAG: json.dumps(standard_pod())}


def training_tags() -> dict[str, str]:
    """Tags for a job or an asset's op that trains."""
    return {K8S_CONFIG_TAG: json.dumps(training_pod())}
