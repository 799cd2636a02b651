/**
 * The ZeroMQ front end of the rollout service: one ROUTER socket, the protocol's framing, client
 * heartbeats and flow control (bridge/PROTOCOL.md section 2).
 *
 * ROUTER drops what it cannot route unless told otherwise, and never says when a peer goes away.
 * So the socket runs with ROUTER_MANDATORY and a zero send timeout: a send to a vanished peer throws
 * (the peer is lost), a send to a peer whose high-water mark is full throws EAGAIN and the message
 * waits in that peer's backlog, in order, without blocking other peers. A backlog past its cap, or
 * a peer silent for longer than the client timeout, means the peer is gone: the service aborts its
 * requests and frees their engine state. Every malformed message gets an error reply.
 */
import * as zmq from "zeromq";
import { type Body, type Message, type TypedArray, WireError, decode, encode } from "../bridge/wire";
import type { RolloutService } from "./service";

export interface ZmqOptions {
  address: string;
  heartbeatIntervalS: number;
  clientTimeoutS: number;
  maxMessageBytes: number;
  /** Messages kept per peer while its high-water mark is full; beyond it the peer is lost. */
  maxClientBacklog: number;
  /** ZeroMQ's per-peer send queue (messages). */
  sendHighWaterMark: number;
  /** The kernel's send buffer per connection in bytes; -1 keeps the OS default. */
  sendBufferBytes?: number;
}

interface Peer {
  routingId: Buffer;
  lastSeen: number;
  backlog: Buffer[][];
  /** At its high-water mark: skipped until the retry timer clears it. */
  blocked: boolean;
}

const RETRY_MS = 2;

export class ZmqServer {
  private readonly sock: zmq.Router;
  private readonly peers = new Map<string, Peer>();
  private service?: RolloutService;
  private pumping = false;
  private retryTimer?: NodeJS.Timeout;
  private reaper?: NodeJS.Timeout;
  private closed = false;
  private lastReap = 0;

  constructor(private readonly opts: ZmqOptions) {
    this.sock = new zmq.Router({
      mandatory: true,
      sendTimeout: 0,
      sendHighWaterMark: opts.sendHighWaterMark,
      sendBufferSize: opts.sendBufferBytes ?? -1,
      receiveHighWaterMark: 0,
      linger: 0,
    });
  }

  private get reapIntervalMs(): number {
    return Math.max(20, (this.opts.heartbeatIntervalS * 1000) / 2);
  }

  get clientCount(): number {
    return this.peers.size;
  }

  /** Binds and starts serving; resolves once the socket accepts connections. */
  async start(service: RolloutService): Promise<void> {
    this.service = service;
    service.clientCount = () => this.peers.size;
    await this.sock.bind(this.opts.address);
    this.lastReap = Date.now();
    this.reaper = setInterval(() => this.reap(), this.reapIntervalMs);
    void this.receive();
  }

  /** The bound endpoint (with the real port when the address asked for tcp://host:*). */
  get endpoint(): string {
    return this.sock.lastEndpoint ?? this.opts.address;
  }

  send: (client: string, type: string, body: Body, arrays?: Record<string, TypedArray>) => void = (client, type, body, arrays) => {
    const peer = this.peers.get(client);
    if (!peer) {
      this.service!.counters.dropped_messages++; // a lost peer: its requests are already aborted
      return;
    }
    peer.backlog.push([peer.routingId, ...encode(type, body, arrays)]);
    this.service!.counters.backlog_peak = Math.max(this.service!.counters.backlog_peak, peer.backlog.length);
    if (peer.backlog.length > this.opts.maxClientBacklog) {
      this.lose(client, `not reading: ${peer.backlog.length} messages waiting`);
      return;
    }
    void this.pump();
  };

  /** Waits until every backlog is sent (or its peer lost), then closes the socket. */
  async close(): Promise<void> {
    const deadline = Date.now() + this.opts.clientTimeoutS * 1000;
    while ([...this.peers.values()].some((p) => p.backlog.length > 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, RETRY_MS));
      await this.pump();
    }
    this.closed = true;
    clearInterval(this.reaper);
    clearTimeout(this.retryTimer);
    // what ZeroMQ still queues (the last replies, `bye`) gets a moment to leave before the socket goes
    this.sock.linger = 2000;
    this.sock.close();
  }

  private async receive(): Promise<void> {
    try {
      for await (const [routingId, ...frames] of this.sock) {
        this.onMessage(routingId, frames);
      }
    } catch (e) {
      if (!this.closed) process.stderr.write(`specactor serve: receive loop failed: ${(e as Error).message}\n`);
    }
  }

  private onMessage(routingId: Buffer, frames: Buffer[]): void {
    const service = this.service!;
    const client = routingId.toString("hex");
    let peer = this.peers.get(client);
    if (!peer) this.peers.set(client, (peer = { routingId, lastSeen: 0, backlog: [], blocked: false }));
    peer.lastSeen = Date.now();
    const size = frames.reduce((a, f) => a + f.length, 0);
    let msg: Message;
    try {
      if (size > this.opts.maxMessageBytes) throw new WireError("too_large", `message of ${size} bytes exceeds the cap of ${this.opts.maxMessageBytes}`);
      msg = decode(frames);
    } catch (e) {
      service.counters.bad_messages++;
      const type = frames.length > 0 && frames[0].length <= 32 ? frames[0].toString("latin1") : undefined;
      if (e instanceof WireError) service.error(client, e.code, e.message, type && /^[\x20-\x7e]+$/.test(type) ? { type } : {});
      else service.error(client, "bad_message", String(e));
      return;
    }
    try {
      service.handle(client, msg);
    } catch (e) {
      service.counters.bad_messages++;
      service.error(client, "bad_message", `could not handle ${msg.type}: ${(e as Error).message}`, { type: msg.type });
    }
  }

  /**
   * Sends backlogs in order; a peer at its high-water mark waits without holding up the others. Runs
   * until no unblocked peer has anything left, so a message queued for a peer the loop had already
   * passed (while a send was awaited) does not wait for the next send.
   */
  private async pump(): Promise<void> {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    try {
      let sent = true;
      while (sent) {
        sent = false;
        for (const [client, peer] of this.peers) {
          while (peer.backlog.length > 0 && !peer.blocked) {
            try {
              await this.sock.send(peer.backlog[0]);
              peer.backlog.shift();
              sent = true;
            } catch (e) {
              const code = (e as { code?: string }).code;
              if (code === "EAGAIN") peer.blocked = true;
              else this.lose(client, `send failed: ${code ?? (e as Error).message}`);
              break;
            }
          }
        }
      }
    } finally {
      this.pumping = false;
    }
    if (!this.retryTimer && [...this.peers.values()].some((p) => p.blocked)) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        for (const p of this.peers.values()) p.blocked = false;
        void this.pump();
      }, RETRY_MS);
    }
  }

  /**
   * Loses peers silent for the client timeout. Time the event loop spent blocked (a long engine step
   * run synchronously) does not count: the peers' heartbeats are waiting unread in the socket.
   */
  private reap(): void {
    const now = Date.now();
    const stall = now - this.lastReap - this.reapIntervalMs;
    this.lastReap = now;
    if (stall > this.reapIntervalMs) {
      for (const peer of this.peers.values()) peer.lastSeen += stall;
      return;
    }
    const limit = now - this.opts.clientTimeoutS * 1000;
    for (const [client, peer] of this.peers) if (peer.lastSeen < limit) this.lose(client, "no heartbeat");
  }

  private lose(client: string, why: string): void {
    const peer = this.peers.get(client);
    if (!peer) return;
    this.peers.delete(client);
    process.stderr.write(`specactor serve: client ${client} lost (${why}); its requests are aborted\n`);
    this.service!.clientLost(client);
  }
}
