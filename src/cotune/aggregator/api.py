"""The aggregator's read-only HTTP API: health, the enclave, sessions, reports and logs.

Everything it serves is public: ids, addresses, public keys, hashes, content ids, gate
decisions and log lines. It never touches the enclave's secret keys or any plaintext;
it reads the chain through the aggregator's read-only clients and the state store
through its public methods.

``GET /sessions/{id}/logs`` streams the session's log as server-sent events (one event
per line, ``id`` = line id, ``data`` = ``{"at", "message"}``); a client resumes with the
``Last-Event-ID`` header or ``?after=`` (400 / 422 for anything but a line id, at most
19 digits). The stream ends once the session is done or failed and every line has been
sent, or at once with ``?follow=false``.

Log streams are capped (:class:`LogFollowers`): at most ``max_followers_per_client``
per client (by peer address; default :data:`MAX_FOLLOWERS_PER_CLIENT`) and
``max_followers`` in all (default :data:`MAX_FOLLOWERS`); one more is answered 429 with
``Retry-After``, and a slot is freed as soon as its client disconnects. Followers do not
poll the state store: one :class:`LogWatch` task looks at each followed session (faster
after a change, slower while it is quiet) and wakes that session's followers when a line
is appended or its stage changes; an idle follower costs a sleeping coroutine.

``GET /limits`` shows the operator's caps on one session
(:class:`~cotune.aggregator.limits.OperatorLimits`), so an owner can keep within them.

Session ids and line ids are SQLite row ids: a larger number is refused (422) before it
reaches the store.

**Dev mode**: every surface that shows the enclave carries ``DEV_MODE_WARNING``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from cotune.aggregator.attestation import AttestationVerifier, DevStatementVerifier, verify_enclave
from cotune.aggregator.enclave import DEV_MODE_WARNING
from cotune.aggregator.service import Aggregator
from cotune.aggregator.state import LogLine, SessionRecord, Stage, StateStore

MAX_FOLLOWERS_PER_CLIENT = 8
"""Default cap on the log streams one client (one peer address) holds open at once."""
MAX_FOLLOWERS = 64
"""Default cap on the log streams open at once, all clients together."""
FOLLOWERS_RETRY_AFTER_SECONDS = 5
"""The ``Retry-After`` (seconds) of a log stream refused because the caps are reached."""
LOG_POLL_SECONDS = 0.2
"""How soon the log watcher looks at the followed sessions again after it saw a change."""
LOG_POLL_MAX_SECONDS = 2.0
"""The longest the log watcher waits between looks: each quiet look doubles the wait."""
KEEPALIVE_SECONDS = 15.0
"""How long a following log stream may stay silent before it sends a comment line."""
MAX_ROW_ID = 2**63 - 1
"""The largest session or log line id the state store can hold (an SQLite row id)."""
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
_LINE_ID = re.compile(r"[0-9]{1,19}")

SessionId = Annotated[int, PathParam(ge=0, le=MAX_ROW_ID, description="the session id")]


class FollowersFullError(Exception):
    """A log stream was refused: its client, or the API as a whole, holds the most allowed."""


@dataclass(frozen=True)
class FollowerCounts:
    """How many log streams are open, in all and per client."""

    total: int
    by_client: Mapping[str, int]


class LogFollowers:
    """Admission of log streams: at most ``per_client`` per peer address, ``total`` in all.

    :meth:`admit` takes a slot (or raises :class:`FollowersFullError`), :meth:`release`
    gives it back; :meth:`counts` and :meth:`wait_for` let an operator (or a test) see
    the slots from any thread.
    """

    def __init__(
        self, per_client: int = MAX_FOLLOWERS_PER_CLIENT, total: int = MAX_FOLLOWERS
    ) -> None:
        """``ValueError`` unless both caps are at least 1."""
        if per_client < 1 or total < 1:
            raise ValueError(f"the follower caps must be at least 1, got {per_client}, {total}")
        self.per_client = per_client
        self.total = total
        self._by_client: dict[str, int] = {}
        self._changed = threading.Condition()

    def admit(self, client: str) -> None:
        """Take a slot for ``client``; ``FollowersFullError`` says which cap is reached."""
        with self._changed:
            if self._by_client.get(client, 0) >= self.per_client:
                raise FollowersFullError(
                    f"{client} already follows {self.per_client} log streams, the most one "
                    "client may: close one, or use ?follow=false for a snapshot"
                )
            if sum(self._by_client.values()) >= self.total:
                raise FollowersFullError(
                    f"this aggregator already serves {self.total} log streams, the most it "
                    "allows: try again later"
                )
            self._by_client[client] = self._by_client.get(client, 0) + 1
            self._changed.notify_all()

    def release(self, client: str) -> None:
        """Give back a slot of ``client``."""
        with self._changed:
            left = self._by_client.get(client, 0) - 1
            if left > 0:
                self._by_client[client] = left
            else:
                self._by_client.pop(client, None)
            self._changed.notify_all()

    def counts(self) -> FollowerCounts:
        """The slots taken now."""
        with self._changed:
            return FollowerCounts(sum(self._by_client.values()), dict(self._by_client))

    def wait_for(self, predicate: Callable[[FollowerCounts], bool], timeout: float) -> bool:
        """Block until ``predicate(counts)`` holds (``True``) or ``timeout`` seconds pass."""
        with self._changed:
            return self._changed.wait_for(
                lambda: predicate(FollowerCounts(sum(self._by_client.values()), self._by_client)),
                timeout,
            )


@dataclass
class _Watched:
    """What the watcher knows of one followed session."""

    followers: int = 0
    seen: tuple[int, Stage | None] | None = None
    """The last line id and the stage at the last look (``None`` until the first)."""
    generation: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the first look is done: only later changes wake followers."""


class LogWatch:
    """One task that watches every followed session, so that followers need not poll.

    Each look reads a followed session's new lines and its stage; when they differ from
    the last look, the session's generation grows and its followers wake. The first look
    is taken when the session's first follower joins; later ones come every
    :data:`LOG_POLL_SECONDS` after a change and twice as late after each quiet look, up to
    :data:`LOG_POLL_MAX_SECONDS`. The task runs only while a session is followed. Every
    method runs on the event loop.
    """

    def __init__(
        self,
        state: StateStore,
        *,
        fastest: float = LOG_POLL_SECONDS,
        slowest: float = LOG_POLL_MAX_SECONDS,
    ) -> None:
        """Watch ``state``, looking every ``fastest`` to ``slowest`` seconds."""
        self.state = state
        self._fastest = fastest
        self._slowest = slowest
        self._watched: dict[int, _Watched] = {}
        self._task: asyncio.Task[None] | None = None

    async def join(self, session_id: int) -> None:
        """Count a follower of ``session_id`` once the session has had its first look.

        Starts the watcher task if it is not running. On any failure (the store, or the
        request cancelled) the follower is not counted.
        """
        watched = self._watched.setdefault(session_id, _Watched())
        watched.followers += 1
        try:
            if watched.followers == 1:  # a new watch: take its first look
                try:
                    watched.seen = await run_in_threadpool(self._look, session_id, None)
                finally:
                    watched.ready.set()  # after a failed look, the task takes the first one
            else:
                await watched.ready.wait()  # at once, unless the first look is under way
        except BaseException:
            self.leave(session_id)
            raise
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def leave(self, session_id: int) -> None:
        """Forget a follower of ``session_id`` (the session, when it was the last)."""
        watched = self._watched[session_id]
        watched.followers -= 1
        if watched.followers == 0:
            del self._watched[session_id]

    def generation(self, session_id: int) -> int:
        """How many changes the watcher has seen in the (joined) session."""
        return self._watched[session_id].generation

    async def wait(self, session_id: int, generation: int, timeout: float) -> bool:
        """Wait until the session's generation is past ``generation``; ``False`` on timeout."""
        watched = self._watched[session_id]
        if watched.generation != generation:
            return True
        try:
            await asyncio.wait_for(watched.changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _look(
        self, session_id: int, seen: tuple[int, Stage | None] | None
    ) -> tuple[int, Stage | None]:
        """The session's last line id and stage (a worker thread: the store blocks)."""
        last = 0 if seen is None else seen[0]
        lines = self.state.logs(session_id, last)
        record = self.state.get(session_id)
        return (lines[-1].line_id if lines else last), (None if record is None else record.stage)

    async def _run(self) -> None:
        pause = self._fastest
        try:
            while self._watched:
                changed = False
                for session_id, watched in list(self._watched.items()):
                    if not watched.ready.is_set():  # its first look is under way
                        continue
                    try:
                        seen: tuple[int, Stage | None] | None = await run_in_threadpool(
                            self._look, session_id, watched.seen
                        )
                    except Exception:  # the store failed: let the followers read it themselves
                        seen = None
                    if self._watched.get(session_id) is not watched or (
                        seen is not None and seen == watched.seen
                    ):
                        continue
                    watched.seen, changed = seen, True
                    watched.generation += 1
                    watched.changed.set()
                    watched.changed = asyncio.Event()
                pause = self._fastest if changed else min(pause * 2, self._slowest)
                await asyncio.sleep(pause)
        finally:
            self._task = None


class _ClosingStream(StreamingResponse):
    """A streaming response that calls ``on_close`` when it ends, however it ends."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream (Starlette stops on the client's disconnect), then call ``on_close``."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def create_app(
    aggregator: Aggregator,
    *,
    max_followers_per_client: int = MAX_FOLLOWERS_PER_CLIENT,
    max_followers: int = MAX_FOLLOWERS,
) -> FastAPI:
    """The HTTP API over ``aggregator`` (public data only).

    At most ``max_followers_per_client`` log streams per peer address and
    ``max_followers`` in all are open at once (``app.state.log_followers``).
    """
    app = FastAPI(
        title="cotune aggregator",
        description="Public state of one cotune aggregator. " + DEV_MODE_WARNING,
    )
    state = aggregator.state
    followers = LogFollowers(max_followers_per_client, max_followers)
    watch = LogWatch(state)
    app.state.log_followers = followers

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
            "watch_error": aggregator.watch_error,
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

    @app.get("/limits")
    def limits() -> dict[str, Any]:
        """What this aggregator lets one session ask for (a session over it is refused)."""
        return aggregator.config.limits.to_dict()

    @app.get("/sessions")
    def sessions() -> list[dict[str, Any]]:
        """Every tracked session, oldest first, without results."""
        return [session_summary(r) for r in state.sessions()]

    @app.get("/sessions/{session_id}")
    def session(session_id: SessionId) -> dict[str, Any]:
        """One session in full (stage, timestamps, public results); 404 when unknown."""
        return tracked(session_id).to_dict()

    @app.get("/sessions/{session_id}/report")
    def report(session_id: SessionId) -> dict[str, Any]:
        """The session's public gate report; 404 until the gate has decided."""
        result = gate_report(tracked(session_id))
        if result is None:
            raise HTTPException(
                status_code=404, detail=f"session {session_id} has no gate report yet"
            )
        return result

    @app.get("/sessions/{session_id}/logs")
    async def logs(
        request: Request,
        session_id: SessionId,
        after: Annotated[
            int, Query(ge=0, le=MAX_ROW_ID, description="send lines after this id")
        ] = 0,
        follow: Annotated[bool, Query(description="keep streaming until the end")] = True,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """The session's log as server-sent events (resume with ``Last-Event-ID``).

        429 with ``Retry-After`` when the client, or the API, has the most streams open.
        """
        await run_in_threadpool(tracked, session_id)
        start = after
        if last_event_id is not None and last_event_id.strip():
            start = max(start, _line_id(last_event_id.strip()))
        client = request.client.host if request.client else "unknown"
        try:
            followers.admit(client)
        except FollowersFullError as exc:
            raise HTTPException(
                status_code=429,
                detail=str(exc),
                headers={"Retry-After": str(FOLLOWERS_RETRY_AFTER_SECONDS)},
            ) from None
        try:
            await watch.join(session_id)
        except BaseException:
            followers.release(client)
            raise

        def close() -> None:
            watch.leave(session_id)
            followers.release(client)

        return _ClosingStream(stream_logs(watch, session_id, start, follow=follow), close)

    return app


def _line_id(text: str) -> int:
    """A ``Last-Event-ID``: a log line id of at most 19 ASCII digits, else 400."""
    if not _LINE_ID.fullmatch(text) or int(text) > MAX_ROW_ID:
        raise HTTPException(
            status_code=400, detail=f"Last-Event-ID must be a log line id (0..{MAX_ROW_ID})"
        )
    return int(text)


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
    watch: LogWatch, session_id: int, after: int, *, follow: bool = True
) -> AsyncIterator[str]:
    """Log lines after ``after`` as events, until the session ends (or at once without follow).

    The session must be joined to ``watch``. The stage is read before the lines, so a
    session seen finished with no lines left has nothing more to say; the watcher's
    generation is read before both, so a change after the read always wakes the stream.
    """
    state = watch.state
    while True:
        generation = watch.generation(session_id)
        record = await run_in_threadpool(state.get, session_id)
        lines = await run_in_threadpool(state.logs, session_id, after)
        for line in lines:
            yield sse_event(line)
            after = line.line_id
        if lines:
            continue
        if not follow or record is None or record.stage in _TERMINAL:
            return
        while not await watch.wait(session_id, generation, KEEPALIVE_SECONDS):
            yield ": keep-alive\n\n"
