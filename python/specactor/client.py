"""Python client of the SpecActor rollout server (``bridge/PROTOCOL.md``, protocol version 1).

:class:`AsyncRolloutClient` is the implementation (``zmq.asyncio``); :class:`RolloutClient` is the
same client driven from ordinary code: it runs the async one on a private event loop in a daemon
thread, so that heartbeats keep flowing while the calling thread is busy elsewhere.

    with RolloutClient("tcp://127.0.0.1:5555") as client:
        results = client.generate([[1, 2, 3]], n=4, max_tokens=64, seed=7)
        tokens = results[0][2].token_ids  # prompt 0, sample 2
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar
from uuid import uuid4

import numpy as np
import zmq
import zmq.asyncio

from . import __version__, wire

log = logging.getLogger(__name__)

T = TypeVar("T")

# request type -> the reply type that answers it (generate is answered by id, not by this table)
REPLY_TO = {
    "hello": "welcome",
    "abort": "aborted",
    "health": "health",
    "stats": "stats",
    "ping": "pong",
    "pause": "paused",
    "bump": "bumped",
    "resume": "resumed",
    "shutdown": "bye",
    "release_memory": "memory_released",
    "restore_memory": "memory_restored",
    "clear_kv": "kv_cleared",
}


class ClientError(Exception):
    """A call that could not complete."""


class ServerError(ClientError):
    """The server answered a call with an ``error`` message."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.code = code
        self.message = message
        self.request_id = request_id


class ServerUnavailable(ClientError):
    """Nothing was heard from the server for the client's ``timeout_s`` while the call was pending."""


@dataclass(frozen=True)
class Result:
    """One finished sample: its tokens (EOS included when it stopped on one) and their log-probs."""

    token_ids: list[int]
    log_probs: list[float]
    finish_reason: str  # "stop" | "length" | "abort"
    seed: int
    weight_version: int
    engine_steps: int
    accepted_draft_tokens: int
    draft_tokens: int = 0  # draft tokens verified for the sample, accepted or not


# (prompt, sample, new token ids, the finished result or None) as generate_stream yields them
StreamEvent = tuple[int, int, list[int], Result | None]


@dataclass(eq=False)
class _Waiter:
    """A control call waiting for its reply; ``future`` None: an internal one nobody awaits."""

    seq: int
    sent_at: float
    future: asyncio.Future[dict[str, Any]] | None


@dataclass(eq=False)
class _Request:
    id: str
    seq: int
    sent_at: float
    prompts: int
    n: int
    done: asyncio.Future[list[list[Result]]] | None  # non-streaming requests
    events: asyncio.Queue[StreamEvent | BaseException | None] | None  # streaming ones; None ends
    accepted: bool = False
    tokens: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    log_probs: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    results: dict[tuple[int, int], Result] = field(default_factory=dict)


def _fail(future: asyncio.Future[Any] | None, exc: BaseException) -> None:
    if future is not None and not future.done():
        future.set_exception(exc)


class AsyncRolloutClient:
    """Asyncio client: one DEALER socket, one reader task, one heartbeat task.

    Routing. The server answers each client's messages in order, so a control call (``health``,
    ``pause``, ...) is matched to its reply by keeping one FIFO of waiters per reply type, appended in
    send order; internal messages (heartbeat pings, the abort sent when a ``generate`` is cancelled)
    hold a place in those FIFOs too, so that their replies never reach a caller. ``generate`` replies
    (``accepted``, ``outputs``, ``error``) carry the request id and are routed by it. An ``error``
    without an id names the request type it answers (``type``) and fails the oldest waiter of that
    type; one without a type fails the oldest pending call.

    Heartbeats. The server drops a client it has not heard from for its ``client_timeout_s``, so
    the client pings every ``heartbeat_interval_s`` (default half the server's) when it has sent
    nothing else. Conversely, a pending call fails with :class:`ServerUnavailable` once the server
    has been silent for ``timeout_s`` since the call was sent: the server answers every ping, so
    silence means it is gone. The socket is then dropped (late replies must not reach later calls)
    and the next call connects afresh, as a new session.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 60.0,
        heartbeat_interval_s: float | None = None,
        client_name: str = f"specactor-python/{__version__}",
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        if heartbeat_interval_s is not None and not heartbeat_interval_s > 0:
            raise ValueError("heartbeat_interval_s must be > 0")
        self.address = address
        self.timeout_s = timeout_s
        self.client_name = client_name
        self.welcome: dict[str, Any] | None = None
        self._heartbeat_s = heartbeat_interval_s
        self._own_context = context is None
        self._context = context
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._waiters: dict[str, deque[_Waiter]] = {t: deque() for t in REPLY_TO.values()}
        self._requests: dict[str, _Request] = {}
        self._seq = itertools.count()
        self._prefix = uuid4().hex[:8]
        self._ids = itertools.count(1)
        self._last_heard = 0.0
        self._last_sent = 0.0
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> dict[str, Any]:
        """Connect (or reconnect after a loss), say ``hello`` and return the server's ``welcome``."""
        if self._closed:
            raise ClientError("the client is closed")
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._sock is not None and self.welcome is not None:
                return self.welcome
            self._open()
            try:
                welcome = await self._control(
                    "hello", {"protocol": wire.PROTOCOL_VERSION, "client": self.client_name}
                )
            except ServerError as e:
                self._drop_socket()
                raise ClientError(f"the server refused protocol {wire.PROTOCOL_VERSION}: {e}") from e
            except BaseException:
                self._drop_socket()
                raise
            if welcome.get("protocol") != wire.PROTOCOL_VERSION:
                self._drop_socket()
                raise ClientError(
                    f"the server speaks protocol {welcome.get('protocol')}, this client {wire.PROTOCOL_VERSION}"
                )
            self.welcome = welcome
            return welcome

    async def aclose(self) -> None:
        """Close the socket (unsent messages are discarded) and fail whatever is still pending."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._heartbeat, self._reader) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._heartbeat = self._reader = None
        self._fail_all(ClientError("the client was closed"))
        self._drop_socket()
        if self._own_context and self._context is not None:
            self._context.destroy(linger=0)
            self._context = None

    def _open(self) -> None:
        if self._context is None:
            self._context = zmq.asyncio.Context()
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)  # 0: unlimited; the server's backlog rule assumes we read
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.connect(self.address)
        self._sock = sock
        loop = asyncio.get_running_loop()
        self._last_heard = self._last_sent = loop.time()
        self._reader = loop.create_task(self._read(sock), name="specactor-client-reader")
        if self._heartbeat is None:
            self._heartbeat = loop.create_task(self._beat(), name="specactor-client-heartbeat")

    def _drop_socket(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self.welcome = None

    # -- sending -----------------------------------------------------------------------------------

    def _send(self, type: str, body: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        if self._sock is None:
            raise ServerUnavailable("not connected")
        sent = asyncio.ensure_future(self._sock.send_multipart(wire.encode(type, body, arrays)))
        sent.add_done_callback(_log_send_failure)
        self._last_sent = asyncio.get_running_loop().time()

    def _send_control(
        self, type: str, body: dict[str, Any], *, internal: bool = False
    ) -> asyncio.Future[dict[str, Any]] | None:
        # the waiter goes in before the message goes out, with no await in between: FIFO = send order
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] | None = None if internal else loop.create_future()
        waiter = _Waiter(next(self._seq), loop.time(), future)
        queue = self._waiters[REPLY_TO[type]]
        queue.append(waiter)
        try:
            self._send(type, body)
        except BaseException:
            queue.remove(waiter)
            raise
        return future

    async def _control(self, type: str, body: dict[str, Any]) -> dict[str, Any]:
        future = self._send_control(type, body)
        assert future is not None
        return await future

    async def _call(self, type: str, body: dict[str, Any]) -> dict[str, Any]:
        await self.connect()
        return await self._control(type, body)

    # -- receiving ---------------------------------------------------------------------------------

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError as e:
                if sock.closed:
                    return
                log.error("receive failed: %s", e)
                self._lose(ClientError(f"receive failed: {e}"))
                return
            self._last_heard = loop.time()
            try:
                message = wire.decode(frames)
            except wire.WireError as e:
                log.warning("malformed message from the server ignored: %s", e)
                continue
            self._route(message)

    def _route(self, message: wire.Message) -> None:
        body = message.body
        if message.type == "accepted":
            request = self._requests.get(body["id"])
            if request is not None:
                request.accepted = True
        elif message.type == "outputs":
            self._on_outputs(body)
        elif message.type == "error":
            self._on_error(body)
        elif message.type in self._waiters:
            waiter = self._pop_waiter(message.type)
            if waiter is None:
                log.debug("unsolicited %s ignored", message.type)
            elif waiter.future is not None and not waiter.future.done():
                waiter.future.set_result(body)
        else:
            log.debug("message type %s ignored", message.type)

    def _pop_waiter(self, reply_type: str) -> _Waiter | None:
        queue = self._waiters[reply_type]
        return queue.popleft() if queue else None

    def _on_outputs(self, body: dict[str, Any]) -> None:
        token_ids: np.ndarray = body["token_ids"]
        log_probs: np.ndarray = body["log_probs"]
        offset = 0
        touched: dict[str, _Request] = {}
        for entry in body["outputs"]:
            end = offset + entry["num_tokens"]
            request = self._requests.get(entry["id"])
            if request is not None:
                touched[request.id] = request
                self._on_entry(request, entry, token_ids[offset:end].tolist(), log_probs[offset:end].tolist())
            offset = end
        for request in touched.values():
            if len(request.results) == request.prompts * request.n:
                self._finish(request)

    def _on_entry(
        self, request: _Request, entry: dict[str, Any], tokens: list[int], lps: list[float]
    ) -> None:
        key = (entry["prompt"], entry["sample"])
        if key in request.results or not (0 <= key[0] < request.prompts and 0 <= key[1] < request.n):
            log.warning("request %s: unexpected output entry for prompt %d sample %d", request.id, *key)
            return
        request.tokens.setdefault(key, []).extend(tokens)
        request.log_probs.setdefault(key, []).extend(lps)
        result = None
        if entry["finished"]:
            result = Result(
                token_ids=request.tokens.pop(key),
                log_probs=request.log_probs.pop(key),
                finish_reason=entry["finish_reason"],
                seed=entry["seed"],
                weight_version=entry["weight_version"],
                engine_steps=entry["engine_steps"],
                accepted_draft_tokens=entry["accepted_draft_tokens"],
                draft_tokens=entry.get("draft_tokens", 0),
            )
            request.results[key] = result
        if request.events is not None:
            request.events.put_nowait((key[0], key[1], tokens, result))

    def _finish(self, request: _Request) -> None:
        self._requests.pop(request.id, None)
        if request.done is not None and not request.done.done():
            results = [[request.results[(p, s)] for s in range(request.n)] for p in range(request.prompts)]
            request.done.set_result(results)
        if request.events is not None:
            request.events.put_nowait(None)

    def _fail_request(self, request: _Request, exc: BaseException) -> None:
        self._requests.pop(request.id, None)
        _fail(request.done, exc)
        if request.events is not None:
            request.events.put_nowait(exc)

    def _on_error(self, body: dict[str, Any]) -> None:
        exc = ServerError(body["code"], body["message"], body.get("id"))
        request_id, about = body.get("id"), body.get("type")
        if request_id is not None:
            request = self._requests.get(request_id)
            if request is not None:
                self._fail_request(request, exc)
            else:
                log.debug("error for a request no longer pending: %s", exc)
            return
        if about == "generate":
            oldest = next((r for r in self._requests.values() if not r.accepted), None)
            if oldest is not None:
                self._fail_request(oldest, exc)
                return
        elif about in REPLY_TO:
            waiter = self._pop_waiter(REPLY_TO[about])
            if waiter is not None:
                _fail(waiter.future, exc)
                return
        elif about is None:
            # no id, no type: the oldest pending call, whatever it is
            heads = [(q[0].seq, t) for t, q in self._waiters.items() if q]
            oldest = next((r for r in self._requests.values() if not r.accepted), None)
            if oldest is not None:
                heads.append((oldest.seq, ""))
            if heads:
                _, reply_type = min(heads)
                if reply_type:
                    waiter = self._pop_waiter(reply_type)
                    assert waiter is not None
                    _fail(waiter.future, exc)
                elif oldest is not None:
                    self._fail_request(oldest, exc)
                return
        log.warning("server error that answers no pending call: %s", exc)

    # -- liveness ----------------------------------------------------------------------------------

    def _pending_since(self) -> float | None:
        """When the oldest pending call was sent (None when nothing is pending)."""
        times = [q[0].sent_at for q in self._waiters.values() if q]
        times += [r.sent_at for r in self._requests.values()]
        return min(times) if times else None

    def _interval(self) -> float | None:
        if self._heartbeat_s is not None:
            return self._heartbeat_s
        if self.welcome is not None:
            return float(self.welcome["heartbeat_interval_s"]) / 2
        return None  # not welcomed yet: the hello itself is pending

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            interval = self._interval()
            tick = min(self.timeout_s / 4, interval / 2 if interval is not None else 0.1)
            await asyncio.sleep(max(tick, 0.005))
            if self._sock is None:
                continue
            now = loop.time()
            since = self._pending_since()
            if since is not None and now - max(since, self._last_heard) > self.timeout_s:
                silent = now - self._last_heard
                self._lose(ServerUnavailable(f"no reply from {self.address} for {silent:.1f} s"))
                continue
            if interval is not None and now - self._last_sent >= interval:
                self._send_control("ping", {}, internal=True)

    def _lose(self, exc: ClientError) -> None:
        self._fail_all(exc)
        self._drop_socket()

    def _fail_all(self, exc: ClientError) -> None:
        for queue in self._waiters.values():
            while queue:
                _fail(queue.popleft().future, exc)
        for request in list(self._requests.values()):
            self._fail_request(request, exc)

    # -- generate ----------------------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def _start(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        n: int,
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: int | None,
        history_key: str | None,
        stop_token_ids: Sequence[int] | None,
        seeds: Sequence[int] | None,
        stream: bool,
    ) -> _Request:
        prompts = [np.asarray(p, dtype=np.int64).reshape(-1) for p in prompt_ids]
        if not prompts or any(p.size == 0 for p in prompts):
            raise ValueError("generate needs at least one prompt, and no prompt may be empty")
        flat = np.concatenate(prompts)
        if flat.min() < 0 or flat.max() >= 2**31:
            raise ValueError("token ids must be in [0, 2^31)")
        await self.connect()
        loop = asyncio.get_running_loop()
        request = _Request(
            id=self._next_id(),
            seq=next(self._seq),
            sent_at=loop.time(),
            prompts=len(prompts),
            n=n,
            done=None if stream else loop.create_future(),
            events=asyncio.Queue() if stream else None,
        )
        body = {
            "id": request.id,
            "prompt_lengths": [int(p.size) for p in prompts],
            "n": n,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "seed": seed,
            "history_key": history_key,
            "stream": stream,
        }
        if stop_token_ids is not None:  # absent, not nil: a server that predates the key sees nothing new
            body["stop_token_ids"] = [int(t) for t in stop_token_ids]
        if seeds is not None:
            body["seeds"] = [int(x) for x in seeds]
        self._requests[request.id] = request
        try:
            self._send("generate", body, {"prompt_ids": flat.astype(np.int32)})
        except BaseException:
            self._requests.pop(request.id, None)
            raise
        return request

    def _cancel(self, request: _Request) -> None:
        """Stop waiting for ``request`` and tell the server (its late outputs are then ignored)."""
        if self._requests.pop(request.id, None) is not None and self._sock is not None:
            self._send_control("abort", {"ids": [request.id]}, internal=True)

    async def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        n: int = 1,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        seed: int | None = None,
        history_key: str | None = None,
        stop_token_ids: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Result]]:
        """Sample ``n`` completions of each prompt; results indexed ``[prompt][sample]``.

        ``stop_token_ids``: tokens that end a sample like an EOS (the stop token is kept in
        ``token_ids``, finish reason ``stop``), as vLLM's ``stop_token_ids``. ``top_k`` -1 or 0 is off.
        ``seeds``: one seed per sample, prompt-major (sample ``i`` of prompt ``j`` at ``j * n + i``),
        used as they are instead of ``derive_seed(seed, j, i)``.
        Cancelling the call aborts the request on the server.
        """
        request = await self._start(
            prompt_ids,
            n=n,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            history_key=history_key,
            stop_token_ids=stop_token_ids,
            seeds=seeds,
            stream=False,
        )
        assert request.done is not None
        try:
            return await request.done
        except asyncio.CancelledError:
            self._cancel(request)
            raise

    async def generate_stream(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        n: int = 1,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        seed: int | None = None,
        history_key: str | None = None,
        stop_token_ids: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """``generate`` with streaming: yields ``(prompt, sample, new_token_ids, result or None)``.

        The result is set on a sample's last event. Leaving the loop early aborts the request.
        """
        request = await self._start(
            prompt_ids,
            n=n,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            history_key=history_key,
            stop_token_ids=stop_token_ids,
            seeds=seeds,
            stream=True,
        )
        assert request.events is not None
        try:
            while True:
                event = await request.events.get()
                if event is None:
                    return
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            self._cancel(request)

    # -- control calls -----------------------------------------------------------------------------

    async def abort(self, ids: Sequence[str]) -> dict[str, Any]:
        """Abort requests by id; ``{"ids": [in flight], "unknown": [the rest]}``.

        Their pending ``generate`` calls still return, with finish reason ``abort``.
        """
        return await self._call("abort", {"ids": list(ids)})

    async def health(self) -> dict[str, Any]:
        return await self._call("health", {})

    async def stats(self) -> dict[str, Any]:
        return await self._call("stats", {})

    async def ping(self) -> float:
        """Round trip to the server, in seconds."""
        await self.connect()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._control("ping", {})
        return loop.time() - start

    async def pause(self, mode: str = "drain") -> int:
        """Stop admitting requests; returns the weight version once nothing runs."""
        return int((await self._call("pause", {"mode": mode}))["weight_version"])

    async def bump(self, version: int | None = None) -> int:
        """Set the weight version (default: current + 1) while paused; returns it."""
        body = {} if version is None else {"version": version}
        return int((await self._call("bump", body))["weight_version"])

    async def resume(self) -> int:
        return int((await self._call("resume", {}))["weight_version"])

    async def shutdown(self, drain: bool = True) -> None:
        """Stop the server (``drain``: after every accepted request finishes); returns on ``bye``."""
        await self._call("shutdown", {"drain": drain})

    async def release_memory(self) -> int:
        """Free the engine's KV cache memory (only while paused and idle: :meth:`pause` first);
        returns the bytes it still holds. Generation after :meth:`resume` re-allocates it if
        :meth:`restore_memory` was not called."""
        return int((await self._call("release_memory", {}))["kv_bytes"])

    async def restore_memory(self) -> int:
        """Re-allocate the engine's KV cache memory; returns the bytes it holds."""
        return int((await self._call("restore_memory", {}))["kv_bytes"])

    async def clear_kv(self) -> int:
        """Release the engine state of every sequence no running request holds; returns how many."""
        return int((await self._call("clear_kv", {}))["sequences"])


def _log_send_failure(sent: asyncio.Future[Any]) -> None:
    if not sent.cancelled() and sent.exception() is not None:
        log.error("send failed: %s", sent.exception())


class RolloutClient:
    """Blocking client: :class:`AsyncRolloutClient` on a private event loop in a daemon thread.

    The loop thread keeps reading and sending heartbeats while the caller's thread is idle or busy,
    so a long pause between calls does not get the client dropped by the server. Interrupting a
    call (e.g. ``KeyboardInterrupt`` during ``generate``) cancels it there, which aborts the request.
    Connects on construction; ``welcome`` is the server's welcome.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 60.0,
        heartbeat_interval_s: float | None = None,
        client_name: str = f"specactor-python/{__version__}",
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="specactor-client", daemon=True)
        self._thread.start()
        self._client = AsyncRolloutClient(
            address, timeout_s=timeout_s, heartbeat_interval_s=heartbeat_interval_s, client_name=client_name
        )
        self._closed = False
        try:
            self._run(self._client.connect())
        except BaseException:
            self.close()
            raise

    @property
    def welcome(self) -> dict[str, Any] | None:
        return self._client.welcome

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ClientError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # no-op when it failed by itself; cancels it when we were interrupted
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=10)
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        n: int = 1,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        seed: int | None = None,
        history_key: str | None = None,
        stop_token_ids: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Result]]:
        """See :meth:`AsyncRolloutClient.generate`."""
        return self._run(
            self._client.generate(
                prompt_ids,
                n=n,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                seed=seed,
                history_key=history_key,
                stop_token_ids=stop_token_ids,
                seeds=seeds,
            )
        )

    def abort(self, ids: Sequence[str]) -> dict[str, Any]:
        return self._run(self._client.abort(ids))

    def health(self) -> dict[str, Any]:
        return self._run(self._client.health())

    def stats(self) -> dict[str, Any]:
        return self._run(self._client.stats())

    def ping(self) -> float:
        return self._run(self._client.ping())

    def pause(self, mode: str = "drain") -> int:
        return self._run(self._client.pause(mode))

    def bump(self, version: int | None = None) -> int:
        return self._run(self._client.bump(version))

    def resume(self) -> int:
        return self._run(self._client.resume())

    def shutdown(self, drain: bool = True) -> None:
        self._run(self._client.shutdown(drain))

    def release_memory(self) -> int:
        return self._run(self._client.release_memory())

    def restore_memory(self) -> int:
        return self._run(self._client.restore_memory())

    def clear_kv(self) -> int:
        return self._run(self._client.clear_kv())
