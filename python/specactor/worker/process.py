"""The engine worker process: serves a :class:`TorchEngine` to the rollout server
(``bridge/PROTOCOL.md`` section 5).

    python -m specactor.worker --connect tcp://127.0.0.1:5556 --model DIR [--role verifier]
        [--device cpu|cuda] [--max-batch N] [--max-context C] [--threads T]

**Session.** The worker connects one ``DEALER`` to the server's worker address and sends
``register`` (protocol, role, model name, device, capacity ``{max_batch, max_context}``, vocab size,
EOS ids, pid). The server answers ``registered`` with the worker's id, the heartbeat interval and the
worker timeout; the command prints one line ``registered worker_id=...`` to stdout then. From then on
it serves, one at a time and in order: ``step`` (answered by ``step_result``, results in ``seqs``
order, or by ``error`` with the ``step_id``), ``truncate`` and ``release`` (answered only when they
fail), ``release_memory`` and ``restore_memory`` (answered by ``memory_released`` /
``memory_restored`` with the engine's ``kv_bytes``, or by ``error``). A failing message never stops the worker:

    malformed (frames, body, fields)   error bad_frame / unknown_type / bad_message
    a step the engine cannot serve     error invalid_request (tokens, context, slots, duplicates, ...)
    the engine failing while it runs   error engine_failed

(Errors carry ``type``, the message type they answer, and ``step_id`` for steps.)

**Threads.** ZeroMQ sockets are not thread-safe, so the ``DEALER`` belongs to one I/O thread: it
receives (heartbeats and ``registered`` it handles itself, everything else goes to a queue), sends
what the compute thread hands it through an ``inproc`` ``PAIR``, and sends ``heartbeat`` every
``heartbeat_interval_s`` whatever the compute thread is doing, so a long step never looks like a dead
worker. The compute thread (the main thread of the command) runs the messages of the queue.

**Exit.** SIGTERM or SIGINT: exit code 0 (after the step in progress, if any). Silence: when nothing
has come from the server for ``worker_timeout_s`` while the worker was idle, or no ``registered``
came within ``--register-timeout`` seconds, the worker exits with code 1. (Time spent computing a step
does not count as silence: the server need not write to a busy worker.)

**In-process use: weight updates.** Weights never pass through the server. A trainer builds the
engine itself and serves it from a background thread, then loads new weights straight into it::

    engine = TorchEngine(model_dir, device="cuda")
    worker = Worker(engine, "tcp://127.0.0.1:5556")
    worker.start()                      # registers, then serves steps in a background thread
    ...
    client.pause()                      # (RolloutClient) no sample runs once it returns
    engine.load_weights(model.named_parameters(), version=v)   # in place, by HF name
    client.bump(v)                      # the server's weight version, reported with every output
    client.resume()
    ...
    worker.stop()

``pause`` must come first: a sample must never mix two weight versions, and the KV the engine keeps
for a live sequence was computed with the weights of its time. ``pause(mode="drain")`` lets running
samples finish, ``"abort"`` ends them; either way the server releases their sequences before it
answers ``paused``. The engine's lock only makes a load wait for the step in progress; it is no
substitute for the pause.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import zmq

from .. import wire
from ..sampling import SamplingParams
from ..wire import F, Float, Int, ListOf, Record, Ref, Str
from .engine import EngineError, InvalidRequest, SeqStep, TorchEngine

log = logging.getLogger("specactor.worker")

ROLES = ("verifier", "drafter")
POLL_MS = 100  # longest the threads sleep before they look at the stop flag

# Section 5 bodies, checked with the codec's field specs (the codec itself checks only frames).
SEQ_SPEC = Record(
    {
        "seq": F(Int()),
        "num_append": F(Int(ge=1)),
        "trie_parents": F(ListOf(Int(ge=-1))),
        "temperature": F(Float(ge=0)),
        "top_p": F(Float(gt=0, le=1)),
        "top_k": F(Int(ge=0, also=(-1,))),
        "seed": F(Int(ge=0, lt=wire.SEED_LIMIT)),
        "max_emit": F(Int(ge=1)),
        "stop_ids": F(ListOf(Int(ge=0)), required=False, default=[]),
    }
)
BODIES: dict[str, Record] = {
    "registered": Record(
        {
            "worker_id": F(Str(1)),
            "heartbeat_interval_s": F(Float(gt=0)),
            "worker_timeout_s": F(Float(gt=0)),
        }
    ),
    "step": Record(
        {
            "step_id": F(Int()),
            "seqs": F(ListOf(SEQ_SPEC)),
            "append_ids": F(Ref("int32", 1)),
            "trie_tokens": F(Ref("int32", 1)),
        }
    ),
    "truncate": Record({"seq": F(Int()), "length": F(Int(ge=0))}),
    "release": Record({"seqs": F(ListOf(Int()))}),
    "release_memory": Record(),
    "restore_memory": Record(),
    "heartbeat": Record(),
}


def check_body(type: str, body: dict[str, Any]) -> None:
    """Check a section 5 body; raises :class:`wire.WireError` ``bad_message`` naming the field."""
    wire._check(BODIES[type], body, type)


def parse_step(body: dict[str, Any]) -> list[SeqStep]:
    """The :class:`SeqStep` s of a checked ``step`` body (``append_ids`` / ``trie_tokens`` split in
    ``seqs`` order); raises ``bad_message`` when the arrays do not hold what the specs announce."""
    specs: list[dict[str, Any]] = body["seqs"]
    append_ids: np.ndarray = body["append_ids"]
    trie_tokens: np.ndarray = body["trie_tokens"]
    want_append = sum(s["num_append"] for s in specs)
    want_trie = sum(len(s["trie_parents"]) for s in specs)
    if append_ids.shape[0] != want_append:
        raise wire.WireError(
            "bad_message", f"step: seqs append {want_append} tokens, append_ids holds {append_ids.shape[0]}"
        )
    if trie_tokens.shape[0] != want_trie:
        raise wire.WireError(
            "bad_message", f"step: tries hold {want_trie} nodes, trie_tokens holds {trie_tokens.shape[0]}"
        )
    seqs: list[SeqStep] = []
    a = t = 0
    for s in specs:
        na, nt = s["num_append"], len(s["trie_parents"])
        seqs.append(
            SeqStep(
                seq_id=s["seq"],
                append=append_ids[a : a + na].tolist(),
                trie_tokens=trie_tokens[t : t + nt].tolist(),
                trie_parents=list(s["trie_parents"]),
                params=SamplingParams(temperature=s["temperature"], top_p=s["top_p"], top_k=s["top_k"]),
                seed=s["seed"],
                max_emit=s["max_emit"],
                stop_ids=list(s.get("stop_ids", [])),
            )
        )
        a, t = a + na, t + nt
    return seqs


def _error(code: str, message: str, about: str | None, step_id: int | None = None) -> list[bytes]:
    body: dict[str, Any] = {"code": code, "message": message}
    if about is not None:
        body["type"] = about
    if step_id is not None:
        body["step_id"] = step_id
    return wire.encode("error", body)


class Worker:
    """Serves ``engine`` to the server at ``address`` (see the module doc).

    ``start()`` serves from a background thread (in-process use); ``run()`` serves from the calling
    thread until the worker stops and returns its exit code (the command). ``stop()`` (or
    ``request_stop()``, safe in a signal handler) ends either. After ``registered``, ``worker_id``,
    ``heartbeat_interval_s`` and ``worker_timeout_s`` hold the server's values and ``registered`` is
    set; ``on_registered`` (if given) is called from the I/O thread then.
    """

    def __init__(
        self,
        engine: TorchEngine,
        address: str,
        *,
        role: str = "verifier",
        model_name: str | None = None,
        register_timeout_s: float = 60.0,
        on_registered: Callable[[Worker], None] | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not register_timeout_s > 0:
            raise ValueError("register_timeout_s must be > 0")
        self.engine = engine
        self.address = address
        self.role = role
        self.model_name = model_name or engine.model_name
        self.register_timeout_s = register_timeout_s
        self.on_registered = on_registered
        self.worker_id: str | None = None
        self.heartbeat_interval_s: float | None = None
        self.worker_timeout_s: float | None = None
        self.registered = threading.Event()
        self.exit_code: int | None = None
        self.exit_reason: str | None = None
        self.steps = 0
        self._own_context = context is None
        self._context: zmq.Context[Any] = context if context is not None else zmq.Context()
        self._pipe = f"inproc://specactor-worker-{uuid.uuid4().hex}"
        self._inbox: queue.Queue[list[bytes]] = queue.Queue()
        self._stopping = threading.Event()
        self._io_ready = threading.Event()
        self._io_thread: threading.Thread | None = None
        self._compute_thread: threading.Thread | None = None
        self._busy = False  # the compute thread is handling a message (read by the I/O thread)
        self._idle_since = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------------------

    def register_body(self) -> dict[str, Any]:
        e = self.engine
        return {
            "protocol": wire.PROTOCOL_VERSION,
            "role": self.role,
            "model": self.model_name,
            "device": str(e.device),
            "capacity": {"max_batch": e.max_batch, "max_context": e.max_context},
            "vocab_size": e.vocab_size,
            "eos_ids": list(e.eos_ids),
            "pid": os.getpid(),
            "kv_bytes": e.kv_bytes,
        }

    def start(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Connect, register and serve from a background thread; with ``wait``, return once
        registered (raises ``RuntimeError`` if the worker stopped or ``timeout`` passed first)."""
        self._start_io()
        self._compute_thread = threading.Thread(
            target=self._serve, name="specactor-worker-compute", daemon=True
        )
        self._compute_thread.start()
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self.registered.wait(0.05):
                if self._stopping.is_set():
                    raise RuntimeError(f"worker stopped before it was registered: {self.exit_reason}")
                if deadline is not None and time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"no registered from {self.address} within {timeout} s")

    def run(self) -> int:
        """Serve from the calling thread until stopped; returns the exit code (0: asked to stop)."""
        self._start_io()
        try:
            self._serve()
        finally:
            self._stopping.set()
            self._join()
        return self.exit_code or 0

    def request_stop(self) -> None:
        """Ask the worker to stop (exit code 0); returns at once, safe in a signal handler."""
        self._finish(0, "asked to stop")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and wait for the threads (the step in progress, if any, completes first)."""
        self.request_stop()
        self._join(timeout)

    @property
    def running(self) -> bool:
        return not self._stopping.is_set()

    def _finish(self, code: int, reason: str) -> None:
        if self.exit_code is None:
            self.exit_code, self.exit_reason = code, reason
        self._stopping.set()

    def _start_io(self) -> None:
        if self._io_thread is not None:
            raise RuntimeError("the worker was already started")
        self._io_thread = threading.Thread(target=self._io_loop, name="specactor-worker-io", daemon=True)
        self._io_thread.start()

    def _join(self, timeout: float = 30.0) -> None:
        me = threading.current_thread()
        threads = [t for t in (self._compute_thread, self._io_thread) if t is not None and t is not me]
        for t in threads:
            t.join(timeout)
        if self._own_context and not self._context.closed and not any(t.is_alive() for t in threads):
            self._context.term()

    # -- the I/O thread: owns the DEALER ----------------------------------------------------------

    def _io_loop(self) -> None:
        dealer = self._context.socket(zmq.DEALER)
        pipe = self._context.socket(zmq.PAIR)
        try:
            dealer.setsockopt(zmq.LINGER, 500)
            dealer.setsockopt(zmq.SNDHWM, 0)  # unlimited: nothing the worker says may be dropped
            dealer.setsockopt(zmq.RCVHWM, 0)
            dealer.connect(self.address)
            pipe.setsockopt(zmq.LINGER, 0)
            pipe.bind(self._pipe)
            self._io_ready.set()
            dealer.send_multipart(wire.encode("register", self.register_body()))
            self._io(dealer, pipe)
        except Exception as e:  # the socket failed: nothing more can be served
            log.exception("worker I/O failed")
            self._finish(1, f"I/O failed: {e}")
        finally:
            self._io_ready.set()
            self._forward(pipe, dealer)  # the last replies the compute thread handed over
            pipe.close()
            dealer.close()

    def _io(self, dealer: zmq.Socket[Any], pipe: zmq.Socket[Any]) -> None:
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        poller.register(pipe, zmq.POLLIN)
        started = last_heard = time.monotonic()
        next_beat = float("inf")
        while not self._stopping.is_set():
            now = time.monotonic()
            wait_ms = int(max(0.0, min(POLL_MS, (next_beat - now) * 1000 + 1)))
            events = dict(poller.poll(wait_ms))
            if pipe in events:
                self._forward(pipe, dealer)
            if dealer in events:
                last_heard = time.monotonic()
                while True:
                    try:
                        frames = dealer.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if frames and frames[0] == b"heartbeat":
                        continue
                    if frames and frames[0] == b"registered":
                        if self._on_registered(frames):
                            next_beat = time.monotonic() + (self.heartbeat_interval_s or 0)
                        continue
                    self._inbox.put(frames)
            now = time.monotonic()
            if not self.registered.is_set():
                if now - started > self.register_timeout_s:
                    log.error(
                        "no registered from %s within %.1f s; exiting", self.address, self.register_timeout_s
                    )
                    self._finish(1, "not registered")
                continue
            assert self.heartbeat_interval_s is not None and self.worker_timeout_s is not None
            if now >= next_beat:
                dealer.send_multipart(wire.encode("heartbeat", {}))
                next_beat = max(next_beat + self.heartbeat_interval_s, now)
            quiet = now - max(last_heard, self._idle_since)
            if not self._busy and self._inbox.empty() and quiet > self.worker_timeout_s:
                log.error("nothing from the server for %.1f s; exiting", quiet)
                self._finish(1, "the server went silent")

    def _forward(self, pipe: zmq.Socket[Any], dealer: zmq.Socket[Any]) -> None:
        while True:
            try:
                frames = pipe.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:  # Again, or a closed socket
                return
            dealer.send_multipart(frames)

    def _on_registered(self, frames: list[bytes]) -> bool:
        try:
            message = wire.decode(frames)
            check_body("registered", message.body)
        except wire.WireError as e:
            log.error("malformed registered ignored: %s", e)
            return False
        body = message.body
        first = not self.registered.is_set()
        self.worker_id = body["worker_id"]
        self.heartbeat_interval_s = float(body["heartbeat_interval_s"])
        self.worker_timeout_s = float(body["worker_timeout_s"])
        self.registered.set()
        log.info(
            "registered as %s (heartbeat %.2f s, timeout %.2f s)",
            self.worker_id,
            self.heartbeat_interval_s,
            self.worker_timeout_s,
        )
        if first and self.on_registered is not None:
            self.on_registered(self)
        return True

    # -- the compute thread --------------------------------------------------------------------------

    def _serve(self) -> None:
        self._io_ready.wait()
        out = self._context.socket(zmq.PAIR)
        out.setsockopt(zmq.LINGER, 1000)
        try:
            out.connect(self._pipe)
            while not self._stopping.is_set():
                try:
                    frames = self._inbox.get(timeout=POLL_MS / 1000)
                except queue.Empty:
                    continue
                self._busy = True
                try:
                    reply = self.handle(frames)
                finally:
                    self._idle_since = time.monotonic()
                    self._busy = False
                if reply is not None:
                    out.send_multipart(reply)
        finally:
            out.close()

    def handle(self, frames: Sequence[bytes]) -> list[bytes] | None:
        """Run one message from the server; returns the reply's frames (None: no reply)."""
        try:
            message = wire.decode(frames)
        except wire.WireError as e:
            log.warning("malformed message: %s", e)
            return _error(e.code, e.message, None)
        kind, body = message.type, message.body
        step_id = body.get("step_id") if kind == "step" else None
        if not (isinstance(step_id, int) and not isinstance(step_id, bool)):
            step_id = None
        try:
            if kind not in BODIES or kind == "registered":
                raise wire.WireError("unknown_type", f"{kind} is not a message an engine worker serves")
            check_body(kind, body)
            if kind == "step":
                return self._step(body)
            if kind == "truncate":
                self.engine.truncate(body["seq"], body["length"])
            elif kind == "release":
                for seq in body["seqs"]:
                    self.engine.release(seq)
            elif kind == "release_memory":
                return wire.encode("memory_released", {"kv_bytes": self.engine.release_memory()})
            elif kind == "restore_memory":
                return wire.encode("memory_restored", {"kv_bytes": self.engine.restore_memory()})
            return None
        except wire.WireError as e:
            log.warning("malformed %s: %s", kind, e)
            return _error(e.code, e.message, kind, step_id)
        except InvalidRequest as e:
            log.warning("%s refused: %s", kind, e)
            return _error("invalid_request", str(e), kind, step_id)
        except Exception as e:
            log.exception("%s failed", kind)
            return _error("engine_failed", f"{type(e).__name__}: {e}", kind, step_id)

    def _step(self, body: dict[str, Any]) -> list[bytes]:
        seqs = parse_step(body)
        results = self.engine.step(seqs)
        self.steps += 1
        tokens = [t for r in results for t in r.tokens]
        log_probs = [lp for r in results for lp in r.log_probs]
        return wire.encode(
            "step_result",
            {
                "step_id": body["step_id"],
                "results": [
                    {"seq": r.seq_id, "num_tokens": len(r.tokens), "accepted": r.accepted} for r in results
                ],
            },
            {
                "token_ids": np.asarray(tokens, dtype=np.int32),
                "log_probs": np.asarray(log_probs, dtype=np.float32),
            },
        )


# ---------------------------------------------------------------------------------------------------
# The command


def _device(value: str) -> str:
    if value != "cpu" and value != "cuda" and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise argparse.ArgumentTypeError(f"device must be cpu, cuda or cuda:N, got {value!r}")
    return value


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m specactor.worker",
        description="A SpecActor engine worker: serves a torch engine to the rollout server.",
    )
    p.add_argument("--connect", required=True, help="the server's worker address (serve --worker-address)")
    p.add_argument("--model", required=True, help="a prepared model directory (specactor prepare-model)")
    p.add_argument("--role", choices=ROLES, default="verifier")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--max-batch", type=_positive, default=8, help="KV slots: most live sequences (default 8)")
    p.add_argument(
        "--max-context", type=_positive, default=None, help="positions per slot (default: the model's)"
    )
    p.add_argument("--threads", type=_positive, default=None, help="torch intra-op threads")
    p.add_argument("--register-timeout", type=float, default=60.0, help="seconds to wait for registered")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(), format="[worker] %(message)s")
    worker: Worker | None = None
    stop_early = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop_early.set()
        if worker is not None:
            worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        engine = TorchEngine(
            args.model,
            max_batch=args.max_batch,
            max_context=args.max_context,
            dtype=args.dtype,
            device=args.device,
            threads=args.threads,
        )
    except (OSError, ValueError, EngineError) as e:
        log.error("cannot load %s: %s", args.model, e)
        return 2
    log.info("%s, KV cache %.1f MiB, connecting to %s", engine.name, engine.kv_bytes / 2**20, args.connect)

    def announce(w: Worker) -> None:
        print(f"registered worker_id={w.worker_id} pid={os.getpid()}", flush=True)

    worker = Worker(
        engine, args.connect, role=args.role, register_timeout_s=args.register_timeout, on_registered=announce
    )
    if stop_early.is_set():
        return 0
    code = worker.run()
    log.info("exiting (%s)", worker.exit_reason)
    return code
