"""A small httpx client for the phasescope REST API, for notebooks and the dashboard (no torch).

Example (against a running server)::

    from phasescope.service.client import Client
    api = Client("http://127.0.0.1:8000")
    aid = api.submit("zoo:induction-2l", measures=["heads", "loss"])["id"]
    api.wait(aid)
    api.results(aid, measure="heads").head()
    api.analysis(aid).findings.summary      # typed: phasescope.responses.AnalysisStatus

The methods that predate the typed responses (``submit``, ``status``, ``wait``, ...) return the JSON
as dicts; ``analysis``, ``analyses``, ``findings`` and ``shape`` return the models of
``phasescope.responses``, and an ``ApiError`` carries its body as ``ErrorBody`` (``error_body``).
"""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import pandas as pd

from phasescope.errors import PhasescopeError
from phasescope.responses import AnalysisList, AnalysisStatus, ErrorBody, Findings, ModelShape

__all__ = ["ApiError", "Client"]


class ApiError(PhasescopeError):
    """The API answered with an error: ``status_code`` and its JSON body ``{error, detail, field}``."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        detail = str(body.get("detail") or body)
        super().__init__(detail, field=body.get("field"), choices=body.get("choices"))
        self.http_status = status_code
        self.status_code = status_code
        self.code = str(body.get("error", "error"))
        self.body = body

    @property
    def error_body(self) -> ErrorBody | None:
        """The body as the API's ErrorBody; None when the answer was not one (e.g. a proxy's page)."""
        from pydantic import ValidationError

        try:
            return ErrorBody.model_validate(self.body)
        except ValidationError:
            return None


_DONE = {"finished", "failed", "partial", "cancelled"}


class Client:
    """Talk to a phasescope API.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000`` (``/api/v1`` is added).
        token: the API token, sent as ``Authorization: Bearer`` (needed for writes when configured).
        timeout: seconds per HTTP request.
        transport: an httpx transport (tests may pass ``httpx.ASGITransport(app)``).
    """

    def __init__(
        self, base_url: str, token: str | None = None, timeout: float = 60.0, transport: Any = None
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        root = base_url.rstrip("/")
        if not root.endswith("/api/v1"):
            root += "/api/v1"
        self._http = httpx.Client(base_url=root, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": "error", "detail": response.text[:500]}
            raise ApiError(response.status_code, body if isinstance(body, dict) else {"detail": body})
        return response

    def submit(
        self,
        model: str,
        checkpoints: Any = "all",
        measures: list[str] | None = None,
        inputs: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """POST an analysis; returns its status (``id``, ``status``, ``links``, ``progress``).

        Args:
            token: a credential for this call only (the dashboard passes its user's), sent as
                ``Authorization: Bearer``; None keeps the client's own headers.
        """
        body: dict[str, Any] = {"model": model, "checkpoints": checkpoints}
        if measures is not None:
            body["measures"] = measures
        if inputs is not None:
            body["inputs"] = inputs
        if params is not None:
            body["params"] = params
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self._call("POST", "/analyses", json=body, headers=headers).json()

    def status(self, aid: str) -> dict[str, Any]:
        return self._call("GET", f"/analyses/{aid}").json()

    def list_analyses(self, offset: int = 0, limit: int = 20) -> dict[str, Any]:
        return self._call("GET", "/analyses", params={"offset": offset, "limit": limit}).json()

    def analysis(self, aid: str) -> AnalysisStatus:
        """The analysis's status, typed: the same keys in every state, None where not known yet."""
        return AnalysisStatus.model_validate(self.status(aid))

    def analyses(self, offset: int = 0, limit: int = 20) -> AnalysisList:
        """A page of recent analyses, typed."""
        return AnalysisList.model_validate(self.list_analyses(offset, limit))

    def findings(self, aid: str) -> Findings | None:
        """Where the model changes phase (None until the analysis has finished)."""
        return self.analysis(aid).findings

    def shape(self, aid: str) -> ModelShape | None:
        """The measured model's dimensions (None until known)."""
        return self.analysis(aid).shape

    def cancel(self, aid: str) -> dict[str, Any]:
        return self._call("DELETE", f"/analyses/{aid}").json()

    def wait(
        self, aid: str, timeout: float | None = None, poll: float = 1.0, progress: bool = True
    ) -> dict[str, Any]:
        """Poll until the analysis is finished, failed, partial or cancelled; a progress bar on stderr.

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
        """
        from tqdm import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        state = self.status(aid)
        bar = tqdm(total=state["progress"]["total"], unit="ckpt", disable=not progress, desc=aid[:8])
        try:
            while True:
                bar.n = state["progress"]["done"]
                bar.set_postfix(status=state["status"], step=state["progress"].get("current_checkpoint"))
                bar.refresh()
                if state["status"] in _DONE:
                    return state
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"analysis {aid} still {state['status']} after {timeout} s")
                time.sleep(poll)
                state = self.status(aid)
        finally:
            bar.close()

    def results(
        self,
        aid: str,
        measure: str | None = None,
        quantity: str | None = None,
        layer: int | None = None,
        head: int | None = None,
        checkpoint: int | None = None,
        prompts: bool = True,
    ) -> pd.DataFrame:
        """The tidy table (downloaded as Parquet), filtered like the endpoint.

        ``prompts=False`` leaves out the per-prompt rows (``*_prompt`` quantities) unless
        ``quantity`` names one.
        """
        params: dict[str, Any] = {
            k: v
            for k, v in dict(
                measure=measure, quantity=quantity, layer=layer, head=head, checkpoint=checkpoint
            ).items()
            if v is not None
        }
        if not prompts:
            params["prompts"] = "false"
        response = self._call("GET", f"/analyses/{aid}/results", params={**params, "format": "parquet"})
        frame = pd.read_parquet(io.BytesIO(response.content))
        if "value" in frame.columns:
            frame["value"] = frame["value"].astype("float64")
        return frame

    def models(self, include_tl: bool = False) -> dict[str, Any]:
        return self._call("GET", "/models", params={"include_tl": include_tl}).json()

    def checkpoints(self, model: str) -> list[int]:
        return self._call("GET", f"/models/{model}/checkpoints").json()["checkpoints"]

    def health(self) -> dict[str, Any]:
        response = self._http.get("/health")
        return response.json()
