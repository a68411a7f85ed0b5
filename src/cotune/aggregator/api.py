"""The aggregator's read-only HTTP API: health, the enclave, sessions, reports and logs.

Everything it serves is public: ids, addresses, public keys, hashes, content ids, gate
decisions and log lines. It never touches the enclave's secret keys or any plaintext;
it reads the chain through the aggregator's read-only clients and the state store
through its public methods.

``GET /sessions/{id}/logs`` streams the session's log as server-sent events (one event
per line, ``id`` = line id, ``data`` = ``{"at", "message"}``); a client resumes with the
``Last-Event-ID`` header or ``?after=``. The stream ends once the session is done or
failed and every line has been sent, or at once with ``?follow=false``.

**Dev mode**: every surface that shows the enclave carries ``DEV_MODE_WARNING``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from cotune.aggregator.attestation import AttestationVerifier, DevStatementVerifier, verify_enclave
from cotune.aggregator.enclave import DEV_MODE_WARNING
from cotune.aggregator.service import Aggregator
from cotune.aggregator.state import LogLine, SessionRecord, Stage

LOG_POLL_SECONDS = 0.2
"""How often a log stream looks for new lines."""
KEEPALIVE_SECONDS = 15.0
"""How long a following log stream may stay silent before it sends a comment line."""
SUMMARY_FIELDS = (
    "session_id",
    "stage",
    "timestamps",
    "created_at",
    "updated_at",
    "attempts",
    "error",
)
REPORT_FIELDS = (
    "contributor",
    "accepted",
    "reason",
    "reason_code",
    "score",
    "weight",
    "evidence_hash",
    "evidence",
)
_TERMINAL = (Stage.DONE, Stage.FAILED)


def create_app(aggregator: Aggregator) -> FastAPI:
    """The HTTP API over ``aggregator`` (public data only)."""
    app = FastAPI(
        title="cotune aggregator",
        description="Public state of one cotune aggregator. " + DEV_MODE_WARNING,
    )
    state = aggregator.state

    def tracked(session_id: int) -> SessionRecord:
        record = state.get(session_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"session {session_id} is not tracked")
        return record

    @app.get("/health")
    def health() -> JSONResponse:
        """Liveness, the chain this aggregator watches, and whether its enclave is registered."""
        body: dict[str, Any] = {
            "ok": True,
            "chain_id": None,
            "block": None,
            "enclave_registered": aggregator.enclave_id is not None,
            "dev_mode": True,
            "warning": DEV_MODE_WARNING,
        }
        try:
            body["chain_id"] = aggregator.chain.chain_id
            body["block"] = aggregator.chain.block_number()
        except Exception as exc:
            body |= {"ok": False, "error": f"chain unreachable: {exc}"}
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.get("/enclave")
    def enclave() -> dict[str, Any]:
        """The enclave's public identity, its on-chain record and whether it verifies now."""
        return enclave_view(aggregator)

    @app.get("/sessions")
    def sessions() -> list[dict[str, Any]]:
        """Every tracked session, oldest first, without results."""
        return [session_summary(r) for r in state.sessions()]

    @app.get("/sessions/{session_id}")
    def session(session_id: int) -> dict[str, Any]:
        """One session in full (stage, timestamps, public results); 404 when unknown."""
        return tracked(session_id).to_dict()

    @app.get("/sessions/{session_id}/report")
    def report(session_id: int) -> dict[str, Any]:
        """The session's public gate report; 404 until the gate has decided."""
        result = gate_report(tracked(session_id))
        if result is None:
            raise HTTPException(
                status_code=404, detail=f"session {session_id} has no gate report yet"
            )
        return result

    @app.get("/sessions/{session_id}/logs")
    async def logs(
        session_id: int,
        after: Annotated[int, Query(ge=0, description="send lines after this id")] = 0,
        follow: Annotated[bool, Query(description="keep streaming until the end")] = True,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """The session's log as server-sent events (resume with ``Last-Event-ID``)."""
        await run_in_threadpool(tracked, session_id)
        start = after
        if last_event_id is not None and last_event_id.strip():
            try:
                start = max(start, int(last_event_id.strip()))
            except ValueError:
                raise HTTPException(
                    status_code=400, detail="Last-Event-ID must be a log line id"
                ) from None
        return StreamingResponse(
            stream_logs(aggregator, session_id, start, follow=follow),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


def enclave_view(aggregator: Aggregator) -> dict[str, Any]:
    """The enclave's public keys, measurement, on-chain record and attestation check."""
    public = aggregator.keys.public
    enclave_id = aggregator.enclave_id
    body: dict[str, Any] = {
        "enclave_id": enclave_id,
        "signer": public.signer,
        "hpke_public_key": public.hpke_public_key.to_hex(),
        "measurement": "0x" + aggregator.measurement.hex(),
        "attestation": {"kind": DevStatementVerifier.kind, "hardware_guarantee": False},
        "record": None,
        "verification": {"valid": False, "error": "the enclave is not registered"},
        "warning": DEV_MODE_WARNING,
    }
    if enclave_id is None:
        return body
    registry = aggregator.contracts.registry
    try:
        record = registry.get(enclave_id)
    except Exception as exc:
        body["verification"] = {"valid": False, "error": f"cannot read the record: {exc}"}
        return body
    body["record"] = {
        "verifier": record.verifier,
        "revoked": record.revoked,
        "registered_at": record.registered_at,
        "evidence": "0x" + record.evidence.hex(),
    }
    verifier = aggregator.contracts.verifier
    verifiers: dict[str, AttestationVerifier] = {verifier.address: DevStatementVerifier(verifier)}
    try:
        verify_enclave(registry, verifiers, enclave_id, pinned_measurement=aggregator.measurement)
    except Exception as exc:  # AttestationError, or the chain failing mid-check
        body["verification"] = {"valid": False, "error": str(exc)}
    else:
        body["verification"] = {"valid": True, "error": None}
    return body


def session_summary(record: SessionRecord) -> dict[str, Any]:
    """A session without its bulky results: stage, timestamps, attempts, error."""
    full = record.to_dict()
    return {k: full[k] for k in SUMMARY_FIELDS}


def gate_report(record: SessionRecord) -> dict[str, Any] | None:
    """The public gate report of a session, or None before the gate has decided."""
    decisions = record.result.get("decisions")
    if decisions is None:
        return None
    return {
        "session_id": record.session_id,
        "stage": record.stage.value,
        "decisions": [{k: d.get(k) for k in REPORT_FIELDS} for d in decisions],
        "eval": record.result.get("eval"),
        "model_cid": record.result.get("model_cid"),
        "manifest_cid": record.result.get("manifest_cid"),
    }


def sse_event(line: LogLine) -> str:
    """One log line in the server-sent events wire format."""
    data = json.dumps({"at": line.at, "message": line.message}, separators=(",", ":"))
    return f"id: {line.line_id}\ndata: {data}\n\n"


async def stream_logs(
    aggregator: Aggregator, session_id: int, after: int, *, follow: bool = True
) -> AsyncIterator[str]:
    """Log lines after ``after`` as events, until the session ends (or at once without follow).

    The stage is read before the lines, so a session seen finished with no lines left has
    nothing more to say.
    """
    state = aggregator.state
    quiet_since = time.monotonic()
    while True:
        record = await run_in_threadpool(state.get, session_id)
        lines = await run_in_threadpool(state.logs, session_id, after)
        for line in lines:
            yield sse_event(line)
            after = line.line_id
        if lines:
            quiet_since = time.monotonic()
            continue
        if not follow or record is None or record.stage in _TERMINAL:
            return
        if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(LOG_POLL_SECONDS)
