"""A small client of the OCI distribution (Docker registry v2) HTTP API.

Only what the served image needs: does a tag or digest exist, what digest does a tag name,
how big is the image. Anonymous, basic and bearer-token auth; credentials come from
the image builder's settings (MLOPS_REGISTRY_USERNAME / MLOPS_REGISTRY_PASSWORD) and are never
logged.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


class RegistryUnavailable(RuntimeError):
    """The registry did not answer, or answered with a server error."""


@dataclass(frozen=True)
class ImageReference:
    """``host[:port]/path/name`` plus a tag or a digest."""

    host: str
    repository: str

    @classmethod
    def parse(cls, repository_ref: str) -> ImageReference:
        host, _, path = repository_ref.partition("/")
        if not path or ("." not in host and ":" not in host and host != "localhost"):
            raise ValueError(
                f"image repository '{repository_ref}' must start with a registry host, "
                "e.g. registry.example.com/team/model or 127.0.0.1:5000/mlops/model"
            )
        return cls(host=host, repository=path)

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"


@dataclass
class RegistryClient:
    repository: ImageReference
    insecure: bool = False
    timeout: float = 10
    # (user, password) from ImageBuilderResource; None is anonymous. Never logged.
    credentials: tuple[str, str] | None = None

    @property
    def base_url(self) -> str:
        scheme = "http" if self.insecure else "https"
        return f"{scheme}://{self.repository.host}/v2/{self.repository.repository}"

    def manifest_digest(self, reference: str) -> str | None:
        """The digest a tag or digest resolves to, or None when the registry has no such image."""
        response = self._request("HEAD", f"manifests/{reference}")
        if response is None:
            return None
        return response.headers.get("Docker-Content-Digest")

    def image_size(self, reference: str) -> int | None:
        """Compressed size in bytes: config plus layers of the manifest (first platform of an
        index)."""
        manifest = self._manifest(reference)
        if manifest is None:
            return None
        if "manifests" in manifest:  # an index: size of the first platform's image
            manifest = self._manifest(manifest["manifests"][0]["digest"])
            if manifest is None:
                return None
        sizes = [manifest.get("config", {}).get("size", 0)]
        sizes += [layer.get("size", 0) for layer in manifest.get("layers", [])]
        return int(sum(sizes))

    def _manifest(self, reference: str) -> dict[str, Any] | None:
        response = self._request("GET", f"manifests/{reference}")
        return None if response is None else json.loads(response.body)

    # --- HTTP -------------------------------------------------------------------------

    @dataclass
    class _Response:
        headers: dict[str, str]
        body: bytes

    def _request(self, method: str, path: str) -> RegistryClient._Response | None:
        url = f"{self.base_url}/{path}"
        headers = {"Accept": MANIFEST_TYPES}
        credentials = self.credentials
        if credentials:
            headers["Authorization"] = "Basic " + _basic(credentials)
        try:
            return self._send(method, url, headers)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            challenge = exc.headers.get("WWW-Authenticate", "")
            if exc.code == 401 and challenge.lower().startswith("bearer "):
                headers["Authorization"] = "Bearer " + self._token(challenge, credentials)
                try:
                    return self._send(method, url, headers)
                except urllib.error.HTTPError as retry_exc:
                    if retry_exc.code == 404:
                        return None
                    exc = retry_exc
            if exc.code >= 500:
                raise RegistryUnavailable(
                    f"registry {self.repository.host} answered {exc.code} to {method} {path}"
                ) from None
            raise PermissionError(
                f"registry {self.repository.host} refused {method} {path}: HTTP {exc.code} "
                "(set MLOPS_REGISTRY_USERNAME and MLOPS_REGISTRY_PASSWORD)"
                if exc.code in (401, 403)
                else f"registry {self.repository.host}: HTTP {exc.code} for {method} {path}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnavailable(
                f"registry {self.repository.host} is unreachable ({method} {path}): {reason}"
            ) from None

    def _send(self, method: str, url: str, headers: dict[str, str]) -> RegistryClient._Response:
        request = urllib.request.Request(url, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return self._Response(dict(response.headers.items()), response.read())

    def _token(self, challenge: str, credentials: tuple[str, str] | None) -> str:
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {k: v for k, v in fields.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{self.repository.repository}:pull")
        url = fields.get("realm", "") + "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": "Basic " + _basic(credentials)} if credentials else {}
        try:
            response = self._send("GET", url, headers)
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryUnavailable(
                f"token service of registry {self.repository.host} failed: "
                f"{getattr(exc, 'reason', exc)}"
            ) from None
        document = json.loads(response.body)
        return str(document.get("token") or document.get("access_token") or "")


def _basic(credentials: tuple[str, str]) -> str:
    return base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
