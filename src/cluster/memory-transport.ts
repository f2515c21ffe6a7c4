/**
 * An in-process PeerTransport for deterministic tests of routing, replication and repair: transports
 * of one MemoryNetwork reach each other by address, and the network injects seeded faults (lost,
 * delayed, duplicated and reordered messages, partitioned nodes), in the spirit of FoundationDB's
 * simulation. Messages go through the same envelope encoding and error mapping as over ZeroMQ, so
 * domain errors, timeouts and cancellations look the same to the caller.
 *
 * It has no in-flight bounds or queues: tests of pushback belong to the ZeroMQ transport.
 */
import { PeerKind, type PeerRequest, type PeerResponse, PeerStatus } from '../../gen/v3storage/internal/v1/peer.js'
import { type Clock, systemClock } from '../engine/config.js'
import { UnavailableError } from '../model/errors.js'
import { prng } from '../model/prng.js'
import { checkPeerRequest, decodeRequestFrames, decodeResponseFrames, errorResponseFields } from './peer-codec.js'
import {
  ChannelCounters,
  checkPeerCall,
  encodeRequestFrames,
  encodeResponseFrames,
  type PeerCall,
  type PeerEndpoint,
  type PeerFrames,
  type PeerHandler,
  type PeerReply,
  type PeerRequestMeta,
  type PeerTransport,
  type PeerTransportStats,
  PendingCall,
  type ResponseFields,
} from './peer-transport.js'

/** Faults the network injects; every probability is in [0, 1], and all default to none. */
export interface MemoryFaults {
  /** Probability that a message, request or response, is lost. */
  readonly drop?: number
  /** Probability that a request is delivered twice; the second answer is a late response. */
  readonly duplicate?: number
  /** Each message is delivered after a delay drawn uniformly from [min, max] milliseconds; default [0, 0]. */
  readonly delayMs?: readonly [number, number]
  /** Probability that a response is held back by reorderDelayMs, so that later ones overtake it. */
  readonly reorder?: number
  /** How long a reordered response is held back, in milliseconds; default 10. */
  readonly reorderDelayMs?: number
}

export interface MemoryNetworkOptions {
  /** Seed of the fault decisions: the same seed and the same calls in the same order give the same faults. */
  readonly seed?: number
  readonly faults?: MemoryFaults
  /** The clock that request deadlines are stamped with. */
  readonly clock?: Clock
}

/** The shared medium of a set of MemoryPeerTransports. */
export class MemoryNetwork {
  readonly clock: Clock
  private readonly random: () => number
  private faults: MemoryFaults
  private readonly listeners = new Map<string, MemoryPeerTransport>()
  private readonly nodes = new Map<string, MemoryPeerTransport>()
  private readonly partitioned = new Set<string>()

  constructor(options: MemoryNetworkOptions = {}) {
    this.random = prng(options.seed ?? 1)
    this.faults = options.faults ?? {}
    this.clock = options.clock ?? systemClock
  }

  /** Replaces the faults for the messages sent from now on. */
  setFaults(faults: MemoryFaults): void {
    this.faults = faults
  }

  /** Cuts `nodeId` off: every message to or from it is lost until heal(). */
  partition(nodeId: string): void {
    this.partitioned.add(nodeId)
  }

  heal(nodeId: string): void {
    this.partitioned.delete(nodeId)
  }

  /** A transport for node `nodeId` that listens, when asked to, on `address` (default `memory:<nodeId>`). */
  transport(nodeId: string, options: { address?: string; ringVersion?: () => number } = {}): MemoryPeerTransport {
    if (this.nodes.has(nodeId)) throw new Error(`BUG: node ${nodeId} already has a transport on this network`)
    const transport = new MemoryPeerTransport(this, nodeId, options.address ?? `memory:${nodeId}`, options.ringVersion)
    this.nodes.set(nodeId, transport)
    return transport
  }

  /** @internal Called by MemoryPeerTransport. */
  register(address: string, transport: MemoryPeerTransport): void {
    if (this.listeners.has(address)) throw new UnavailableError(`${address} is already in use`)
    this.listeners.set(address, transport)
  }

  /** @internal Called by MemoryPeerTransport. */
  unregister(transport: MemoryPeerTransport): void {
    if (this.listeners.get(transport.address) === transport) this.listeners.delete(transport.address)
    if (this.nodes.get(transport.nodeId) === transport) this.nodes.delete(transport.nodeId)
  }

  /** @internal Called by MemoryPeerTransport: a request's frames from node `from` to whoever listens on `address`. */
  sendRequest(from: string, address: string, frames: PeerFrames): void {
    const copies = this.random() < (this.faults.duplicate ?? 0) ? 2 : 1
    for (let i = 0; i < copies; i++) {
      this.carry(
        from,
        () => this.listeners.get(address)?.nodeId,
        0,
        () => this.listeners.get(address)?.onRequest(from, frames),
      )
    }
  }

  /** @internal Called by MemoryPeerTransport: a response's frames from node `from` to node `to`. */
  sendResponse(from: string, to: string, frames: PeerFrames): void {
    const held = this.random() < (this.faults.reorder ?? 0) ? (this.faults.reorderDelayMs ?? 10) : 0
    this.carry(
      from,
      () => to,
      held,
      () => this.nodes.get(to)?.onResponse(from, frames),
    )
  }

  /**
   * Delivers one message after its delay unless it is dropped, or either end is partitioned when
   * it is sent or when it arrives. The fault decisions are drawn now, in call order, so that a
   * seed reproduces them.
   */
  private carry(from: string, to: () => string | undefined, extraDelayMs: number, deliver: () => void): void {
    const lost = this.random() < (this.faults.drop ?? 0)
    const [min, max] = this.faults.delayMs ?? [0, 0]
    const delay = min + this.random() * (max - min) + extraDelayMs
    const cut = (): boolean => {
      const target = to()
      return target === undefined || this.partitioned.has(from) || this.partitioned.has(target)
    }
    if (lost || cut()) return
    setTimeout(() => {
      if (!cut()) deliver()
    }, delay)
  }
}

export class MemoryPeerTransport implements PeerTransport {
  private readonly counters = new Map<
    string,
    { peer: PeerEndpoint; counters: ChannelCounters; inFlight: number; sequence: number }
  >()
  private readonly outstanding = new Map<number, { readonly peer: string; readonly pending: PendingCall }>()
  private readonly running = new Set<AbortController>()
  private handler: PeerHandler | undefined
  private nextRequestId = 0
  private malformed = 0
  private served = 0
  private closed = false

  constructor(
    private readonly network: MemoryNetwork,
    readonly nodeId: string,
    readonly address: string,
    private readonly ringVersion: () => number = () => 0,
  ) {}

  async listen(handler: PeerHandler): Promise<string> {
    if (this.closed) throw new UnavailableError(`node ${this.nodeId}: the peer transport is closed`)
    this.network.register(this.address, this)
    this.handler = handler
    return this.address
  }

  request(peer: PeerEndpoint, call: PeerCall): Promise<PeerReply> {
    try {
      checkPeerCall(call)
      if (this.closed) throw new UnavailableError(`node ${this.nodeId}: the peer transport is closed`)
    } catch (err) {
      return Promise.reject(err)
    }
    let channel = this.counters.get(peer.id)
    if (channel === undefined || channel.peer.address !== peer.address) {
      channel = {
        peer: { id: peer.id, address: peer.address },
        counters: new ChannelCounters(),
        inFlight: 0,
        sequence: 0,
      }
      this.counters.set(peer.id, channel)
    }
    const current = channel
    const pending = new PendingCall(peer, call, current.counters, this.network.clock)
    if (pending.settled) return pending.promise
    const requestId = ++this.nextRequestId
    current.inFlight++
    this.outstanding.set(requestId, { peer: peer.id, pending })
    pending.whenSettled(() => {
      this.outstanding.delete(requestId)
      current.inFlight--
    })
    const frames = encodeRequestFrames(call, requestId, ++current.sequence, this.nodeId, pending.deadlineMs)
    current.counters.requestsSent++
    this.network.sendRequest(this.nodeId, peer.address, frames)
    return pending.promise
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.network.unregister(this)
    const closing = new UnavailableError(`node ${this.nodeId}: the peer transport closed`)
    for (const { pending } of this.outstanding.values()) pending.fail(closing)
    for (const controller of this.running) controller.abort(closing)
  }

  stats(): PeerTransportStats {
    return {
      peers: [...this.counters.values()].map((c) => c.counters.snapshot(c.peer, c.inFlight, 0)),
      malformedMessages: this.malformed,
      requestsServed: this.served,
      requestsRejected: 0,
      connectionsRefused: 0,
    }
  }

  /** @internal Called by MemoryNetwork. */
  onRequest(from: string, frames: PeerFrames): void {
    const handler = this.handler
    if (this.closed || handler === undefined) return
    let request: PeerRequest
    try {
      request = checkPeerRequest(decodeRequestFrames(frames), Buffer.from(from))
    } catch {
      this.malformed++
      return
    }
    void this.serve(handler, request)
  }

  private async serve(handler: PeerHandler, request: PeerRequest): Promise<void> {
    const controller = new AbortController()
    this.running.add(controller)
    let fields: ResponseFields
    try {
      const meta: PeerRequestMeta = {
        ringVersion: request.ringVersion,
        term: request.term,
        sequence: request.sequence,
        deadlineMs: request.deadlineMs,
        signal: controller.signal,
      }
      const body =
        request.kind === PeerKind.PEER_KIND_PING
          ? new Uint8Array(0)
          : await handler(request.sender, request.kind, request.body, meta)
      fields = { status: PeerStatus.PEER_STATUS_OK, body }
    } catch (err) {
      fields = errorResponseFields(err)
    } finally {
      this.running.delete(controller)
    }
    if (this.closed) return
    this.served++
    this.network.sendResponse(
      this.nodeId,
      request.sender,
      encodeResponseFrames(request.requestId, this.ringVersion(), fields),
    )
  }

  /** @internal Called by MemoryNetwork. */
  onResponse(from: string, frames: PeerFrames): void {
    let response: PeerResponse
    try {
      response = decodeResponseFrames(frames)
    } catch {
      this.malformed++
      return
    }
    const channel = this.counters.get(from)
    const entry = this.outstanding.get(response.requestId)
    if (channel === undefined) return
    if (entry === undefined || entry.peer !== from) {
      channel.counters.lateResponses++
      return
    }
    channel.counters.responses++
    entry.pending.answer(response)
  }
}
