"""A local HTTP stand-in for the Kubernetes API, for the tests that cannot have a cluster.

It keeps objects in memory and answers the calls the project's clients make (the official
kubernetes client under K8sRunLauncher and model_deployment): discovery, create, get, list by
label, server-side apply and delete, with Kubernetes' status codes and Status bodies. It runs
no controllers: a test plays the kubelet and the controllers by setting an object's status.
It also plays the kubelet's env resolution (``container_env``) from the Secrets and
ConfigMaps it holds.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlparse

from mlops_assets_tests.receivers import loopback_http

TOKEN = "stand-in-token"
GROUPS = {"/api/v1", "/apis/batch/v1", "/apis/apps/v1", "/apis/rbac.authorization.k8s.io/v1"}
KSERVE = "/apis/serving.kserve.io/v1beta1"
_PATH = re.compile(
    r"^(?P<prefix>/api/v1|/apis/[^/]+/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
)


class Controller:
    """Plays a Kubernetes controller against the stand-in: ``reconcile`` runs every
    ``interval`` seconds in a thread for as long as the with-block lasts."""

    interval = 0.1

    def __init__(self, cluster: KubernetesStandIn) -> None:
        self.cluster = cluster
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def reconcile(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.reconcile()
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


class KubernetesStandIn:
    def __init__(self, kserve: bool = False) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.groups = GROUPS | ({KSERVE} if kserve else set())
        self._serving = contextlib.ExitStack()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> KubernetesStandIn:
        self.port = self._serving.enter_context(loopback_http(self._handler()))
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.close()

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this server with a bearer token."""
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
                    "users": [{"name": "stand-in", "user": {"token": TOKEN}}],
                    "contexts": [
                        {"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in"}}
                    ],
                    "current-context": "stand-in",
                }
            )
        )
        return path

    # --- what tests do ------------------------------------------------------------------

    def put(self, prefix: str, plural: str, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        with self.lock:
            self.objects[(prefix, meta["namespace"], plural, meta["name"])] = copy.deepcopy(
                manifest
            )

    def get(self, prefix: str, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.objects.get((prefix, namespace, plural, name))
            return copy.deepcopy(found)

    def list(self, prefix: str, plural: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                copy.deepcopy(o)
                for (p, _, pl, _), o in self.objects.items()
                if (p, pl) == (prefix, plural)
            ]

    def set_status(
        self, prefix: str, namespace: str, plural: str, name: str, status: dict[str, Any]
    ) -> None:
        with self.lock:
            self.objects[(prefix, namespace, plural, name)]["status"] = status

    def container_env(self, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        """What the kubelet gives ``container`` as environment: envFrom first, then env,
        with secretKeyRef and configMapKeyRef resolved from the objects held here."""
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            env.update(self._source_data(namespace, source))
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = entry["value"]
                continue
            ref = entry["valueFrom"]
            if "secretKeyRef" in ref:
                data = self._data(namespace, "secrets", ref["secretKeyRef"]["name"])
                env[entry["name"]] = data[ref["secretKeyRef"]["key"]]
            elif "configMapKeyRef" in ref:
                data = self._data(namespace, "configmaps", ref["configMapKeyRef"]["name"])
                env[entry["name"]] = data[ref["configMapKeyRef"]["key"]]
            else:
                raise ValueError(f"cannot resolve env {entry}")
        return env

    def _source_data(self, namespace: str, source: dict[str, Any]) -> dict[str, str]:
        if "secretRef" in source:
            return self._data(namespace, "secrets", source["secretRef"]["name"])
        return self._data(namespace, "configmaps", source["configMapRef"]["name"])

    def _data(self, namespace: str, plural: str, name: str) -> dict[str, str]:
        found = self.get("/api/v1", namespace, plural, name)
        if found is None:
            raise KeyError(f"{plural} {namespace}/{name} does not exist: the pod would not start")
        if plural == "secrets":
            return {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}
        return dict(found.get("data") or {})

    # --- the API --------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": reason,
                        "message": message,
                        "code": code,
                    },
                )

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                api.requests.append(
                    {
                        "method": method,
                        "path": url.path,
                        "query": parse_qs(url.query),
                        "content_type": self.headers.get("Content-Type"),
                        "authorization": self.headers.get("Authorization"),
                        "body": body,
                    }
                )
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._status(401, "Unauthorized", "no or wrong bearer token")
                if method == "GET" and url.path in api.groups:
                    return self._send(
                        200,
                        {
                            "kind": "APIResourceList",
                            "groupVersion": url.path.split("/", 2)[-1],
                            "resources": [],
                        },
                    )
                match = _PATH.match(url.path)
                if not match or match["prefix"] not in api.groups:
                    return self._status(404, "NotFound", f"the server could not find {url.path}")
                key = (match["prefix"], match["ns"], match["plural"], match["name"] or "")
                with api.lock:
                    return self._object(method, key, body, parse_qs(url.query))

            def _object(
                self,
                method: str,
                key: tuple[str, str, str, str],
                body: Any,
                query: dict[str, list[str]],
            ) -> None:
                prefix, namespace, plural, name = key
                if method == "GET" and not name:
                    selector = dict(
                        part.split("=", 1)
                        for part in (query.get("labelSelector") or [""])[0].split(",")
                        if part
                    )
                    items = [
                        o
                        for (p, ns, pl, _), o in api.objects.items()
                        if (p, ns, pl) == (prefix, namespace, plural)
                        and selector.items() <= (o["metadata"].get("labels") or {}).items()
                    ]
                    return self._send(200, {"kind": "List", "items": items})
                if method == "POST":
                    name = body["metadata"]["name"]
                    if (prefix, namespace, plural, name) in api.objects:
                        return self._status(409, "AlreadyExists", f"{plural} {name} already exists")
                    stored = _stamp(body, namespace)
                    api.objects[(prefix, namespace, plural, name)] = stored
                    return self._send(201, stored)
                existing = api.objects.get(key)
                if method == "GET":
                    if existing is None:
                        return self._status(404, "NotFound", f'{plural} "{name}" not found')
                    return self._send(200, existing)
                if method == "PATCH":
                    if self.headers.get("Content-Type") != "application/apply-patch+yaml":
                        return self._status(
                            415, "UnsupportedMediaType", "the stand-in only takes server-side apply"
                        )
                    if existing is None:
                        stored = _stamp(body, namespace)
                    else:
                        stored = copy.deepcopy(existing)
                        changed = stored.get("spec") != body.get("spec")
                        stored["spec"] = body.get("spec")
                        stored["metadata"]["labels"] = body["metadata"].get("labels", {})
                        stored["metadata"]["annotations"] = body["metadata"].get("annotations", {})
                        stored["metadata"]["generation"] += int(changed)
                    api.objects[key] = stored
                    return self._send(200, stored)
                if method == "DELETE":
                    if existing is None:
                        return self._status(404, "NotFound", f'{plural} "{name}" not found')
                    del api.objects[key]
                    return self._send(200, {"kind": "Status", "status": "Success"})
                return self._status(405, "MethodNotAllowed", method)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        return Handler


def _stamp(body: dict[str, Any], namespace: str) -> dict[str, Any]:
    stored = copy.deepcopy(body)
    meta = stored.setdefault("metadata", {})
    meta.setdefault("namespace", namespace)
    meta.update({"uid": str(uuid.uuid4()), "generation": 1, "resourceVersion": "1"})
    return stored
