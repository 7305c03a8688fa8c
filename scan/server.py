"""Scoring through a running flexguard service (``flexguard scan --server URL``).

For machines that should not hold the model, or when one shared service does the work for many
scanners. The rows are those of the local engine: this client reads each file and takes its size and
hash itself, the service runs the same engine on the same bytes, and ``rows.service_row`` turns
its answer into the same fields. Only the bytes travel; file names are not sent.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Iterable, Iterator, Sequence

import httpx

from flexguard.models.vocabulary import ErrorCode
from flexguard.models.wire import API_KEY_HEADER, MODEL_ROUTE, PHOTO_FIELD, SCORE_ROUTE

from .inflight import rows_in_order
from .rows import CategoryLabel, FileError, FileFacts, ModelIdentity, ScanError, error_row, read_file, service_row

API_KEY_ENV = "FLEXGUARD_API_KEY"
# A request of 64 phone photos can take a while on a busy CPU-only service.
REQUEST_TIMEOUT_S = 300.0
# Transient failures (connection reset, 502/503 while the service restarts) are retried with a
# doubling pause before the scan stops; rows already written stay, and a rerun continues.
RETRIES = 4
FIRST_RETRY_PAUSE_S = 1.0
HTTP_TOO_LARGE = 413
HTTP_UNAUTHORIZED = (401, 403)
HTTP_SERVER_ERROR = 500
# How much of a service's error answer is quoted in a message.
MAX_QUOTED_CHARS = 200


class _TooLarge(Exception):
    """The service answered 413: a photo in the request is over its size limit."""


class ServerScorer:
    def __init__(self, url: str, workers: int, batch_size: int, api_key: str | None = None):
        if not url.startswith(("http://", "https://")):
            raise ScanError(f"--server needs an http:// or https:// URL, not {url!r}")
        self.url = url.rstrip("/")
        self.workers = workers
        self.batch_size = batch_size
        api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_S)
        try:
            self.model = self._probe()
        except BaseException:
            self.client.close()
            raise

    def _probe(self) -> ModelIdentity:
        """The service's model and request limit, from ``GET /v1/model`` (no photo is sent)."""
        # No retries: a wrong URL or a service that is down should fail at once, before anything is written.
        response = self._request("GET", MODEL_ROUTE, retries=0)
        try:
            answer = response.json()
            categories = tuple(CategoryLabel(c["id"], c["name_en"], c["name_id"]) for c in answer["categories"])
            identity = ModelIdentity(str(answer["name"]), str(answer["version"]), str(answer["weights_sha256"]), categories)
            # One request never carries more photos than the service takes.
            self.batch_size = min(self.batch_size, int(answer["limits"]["max_files"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ScanError(f"{self.url}{MODEL_ROUTE} does not answer like a flexguard service ({error})") from None
        return identity

    def _request(self, method: str, route: str, retries: int = RETRIES, **kwargs: Any) -> httpx.Response:
        """One request, retried on transient failures; refusals of the key or of a size are raised."""
        pause = FIRST_RETRY_PAUSE_S
        for attempt in itertools.count():
            try:
                response = self.client.request(method, route, **kwargs)
                if response.status_code < HTTP_SERVER_ERROR:
                    break
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            if attempt >= retries:
                # Only scan requests retry; the probe runs before any row is written, so it has nothing to resume.
                hint = "; the rows written so far are kept: rerun the same command to continue" if retries else ""
                raise ScanError(f"{self.url} failed ({problem}){hint}")
            time.sleep(pause)
            pause *= 2
        if response.status_code in HTTP_UNAUTHORIZED:
            raise ScanError(f"{self.url} refused the request (HTTP {response.status_code}); set {API_KEY_ENV} to a valid API key")
        if response.status_code == HTTP_TOO_LARGE:
            raise _TooLarge(response.text[:MAX_QUOTED_CHARS])
        if response.is_error:
            raise ScanError(f"{self.url}{route} answered HTTP {response.status_code}: {response.text[:MAX_QUOTED_CHARS]}")
        return response

    def _post(self, photos: Sequence[bytes]) -> dict[str, Any]:
        """POST photos to the service and return its parsed answer; ``_TooLarge`` if it refused their size."""
        files = [(PHOTO_FIELD, (str(index), data, "application/octet-stream")) for index, data in enumerate(photos)]
        response = self._request("POST", SCORE_ROUTE, files=files)
        try:
            answer = response.json()
            if len(answer["results"]) != len(photos) or not {"name", "version", "weights_sha256"} <= set(answer["model"]):
                raise ValueError("expected a model name, version and weights digest and one result per photo")
        except (ValueError, KeyError, TypeError) as error:
            raise ScanError(f"{self.url} does not answer like a flexguard service ({error})") from None
        return answer

    def _score_bytes(self, photos: Sequence[bytes]) -> list[dict[str, Any] | str]:
        """The service's result per photo, or why it refused that photo."""
        try:
            answer = self._post(photos)
        except _TooLarge as refusal:
            # The service refuses the whole request over one file: halve until that file is alone.
            if len(photos) == 1:
                return [f"the service refused the file: {refusal}"]
            middle = len(photos) // 2
            return self._score_bytes(photos[:middle]) + self._score_bytes(photos[middle:])
        model = answer["model"]
        if (model["version"], model["weights_sha256"]) != (self.model.version, self.model.weights_sha256):
            now = ModelIdentity(str(model["name"]), str(model["version"]), str(model["weights_sha256"]), self.model.categories)
            raise ScanError(f"the service's model changed from {self.model.describe()} to {now.describe()} during the scan; "
                            "add --force to start over")
        return answer["results"]

    def _score_batch(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any] | None] = []
        uploads: list[tuple[int, str, bytes, FileFacts]] = []
        for path in paths:
            try:
                data, facts = read_file(path)
            except FileError as error:
                rows.append(error_row(path, error.facts, error.code, error.message, self.model))
                continue
            uploads.append((len(rows), path, data, facts))
            rows.append(None)
        results = self._score_bytes([data for _, _, data, _ in uploads]) if uploads else []
        for (slot, path, _, facts), result in zip(uploads, results):
            if isinstance(result, str):
                rows[slot] = error_row(path, facts, ErrorCode.REJECTED_BY_SERVER, result, self.model)
            else:
                rows[slot] = service_row(path, facts, result, self.model)
        return rows  # type: ignore[return-value]

    def rows(self, paths: Iterable[str]) -> Iterator[dict[str, Any]]:
        """One row per path, in the order given; requests run ``workers`` at a time."""
        return rows_in_order(paths, self.batch_size, self.workers, self._score_batch, "flexguard-scan-client")

    def close(self) -> None:
        self.client.close()
