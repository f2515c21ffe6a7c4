/**
 * The ZeroMQ implementation of PeerTransport.
 *
 * ZeroMQ blocks or silently drops at its high-water marks and loses whatever a dropped connection
 * held, so nothing here relies on it delivering: every request carries an application-level id,
 * a per-channel sequence number and a deadline, and it ends in exactly one response or a timeout.
 * Queues on both sides are bounded by counts and bytes; a full one pushes back on the caller or
 * answers RESOURCE_EXHAUSTED instead of buffering without limit.
 */
import { Dealer, Router } from 'zeromq'
import { PeerKind, type PeerRequest, type PeerResponse, PeerStatus } from '../../gen/v3storage/internal/v1/peer.js'
import { type Clock, type Logger, silentLogger, systemClock } from '../engine/config.js'
import { DeadlineError, LimitError, UnavailableError, ValidationError } from '../model/errors.js'
import {
  checkPeerRequest,
  decodeRequestFrames,
  decodeResponseFrames,
  errorResponseFields,
  PeerFrameError,
} from './peer-codec.js'
import type { PeerKey } from './peer-key.js'
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
import { zapHandler } from './zap-handler.js'

export interface ZmqPeerTransportOptions {
  /** This node's id, sent as the ZeroMQ routing id of its connections: 1 to 255 bytes of UTF-8. */
  readonly nodeId: string
  /** host:port to bind the ROUTER to for listen(); port 0 picks a free port. Required to listen. */
  readonly listen?: string
  /** The newest ring version this node knows, stamped on every response (see PeerResponse.ring_version); default always 0. */
  readonly ringVersion?: () => number
  /** Requests to one peer awaiting their answer at once; default 64. Further ones wait for a slot. */
  readonly maxInFlightPerPeer?: number
  /** Requests to one peer that may wait for a slot; default 1024. Beyond it request() fails at once. */
  readonly maxWaitingPerPeer?: number
  /** Requests from one peer served at once; default 64. */
  readonly maxServingPerSender?: number
  /** Requests from one peer queued behind those; default 256. Beyond it they are refused. */
  readonly maxQueuedPerSender?: number
  /** Bytes of request bodies queued from all peers together; default 256 MiB. Beyond it they are refused. */
  readonly maxQueuedBytes?: number
  /** Largest frame sent or accepted, in bytes; default 64 MiB. A peer that sends more is disconnected. */
  readonly maxMessageBytes?: number
  /** Interval of ZMTP heartbeats, in milliseconds; default 1000. */
  readonly heartbeatIntervalMs?: number
  /** Time without traffic after a heartbeat after which a connection counts as dead, in ms; default 5000. */
  readonly heartbeatTimeoutMs?: number
  /** First delay before reconnecting to a peer, in ms; default 100, doubling up to 2000. */
  readonly reconnectIntervalMs?: number
  /**
   * The cluster's key (peer-key.ts): every message encrypted, and only connections that hold the
   * same key served. Absent: plain ZeroMQ, which anyone who reaches the port can use.
   */
  readonly key?: PeerKey
  readonly logger?: Logger
  readonly clock?: Clock
}

type ZmqConfig = Readonly<Required<Omit<ZmqPeerTransportOptions, 'listen' | 'key'>>> & {
  readonly listen: string | undefined
  readonly key: PeerKey | undefined
}

/** Room in a frame for the envelope around a body. */
const ENVELOPE_BYTES = 1024
/** Malformed frames and refused connections are logged at most this often, with the count since the last line. */
const TROUBLE_LOG_INTERVAL_MS = 10_000

/** A count of some trouble, whose log lines go out at most every TROUBLE_LOG_INTERVAL_MS. */
class ThrottledCount {
  total = 0
  private logged = 0
  private lastLogMs = Number.NEGATIVE_INFINITY

  /** Counts one, and calls `log` with the total and the count since the last line, unless a line went out lately. */
  add(now: number, log: (total: number, sinceLastLine: number) => void): void {
    this.total++
    if (now - this.lastLogMs < TROUBLE_LOG_INTERVAL_MS) return
    log(this.total, this.total - this.logged)
    this.lastLogMs = now
    this.logged = this.total
  }
}
/**
 * The receive high-water mark of every socket: none. When a connection's incoming messages reach
 * that mark, libzmq stops reading it, and if the peer then hangs up and a heartbeat falls due,
 * libzmq 4.3.5 aborts the whole process (`Assertion failed: !_io_error`, stream_engine_base.cpp):
 * a node resumed after SIGSTOP, with its peers' requests piled up in front of it, died so. What a
 * peer can have waiting here is bounded on its side instead: at most maxInFlightPerPeer of its
 * requests are in flight at a time (one that times out frees its slot, so a node that reads nothing
 * for several timeouts can have more waiting), behind its send high-water mark. Once read,
 * requests are bounded here per sender and in bytes (maxQueuedPerSender, maxQueuedBytes).
 */
const NO_RECEIVE_LIMIT = 0
/** Room in the ROUTER's send pipe, beyond the served answers, for refusals answered at once. */
const REFUSAL_BURST = 1000

function positive(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback
  if (!Number.isSafeInteger(v) || v <= 0) throw ValidationError.field(name, `${v} is not a positive integer`)
  return v
}

function resolveOptions(options: ZmqPeerTransportOptions): ZmqConfig {
  const idBytes = Buffer.byteLength(options.nodeId)
  if (idBytes < 1 || idBytes > 255 || options.nodeId.charCodeAt(0) === 0) {
    throw ValidationError.field('nodeId', 'must be 1 to 255 bytes and not start with a zero byte')
  }
  return Object.freeze({
    nodeId: options.nodeId,
    listen: options.listen,
    key: options.key,
    ringVersion: options.ringVersion ?? (() => 0),
    maxInFlightPerPeer: positive('maxInFlightPerPeer', options.maxInFlightPerPeer, 64),
    maxWaitingPerPeer: positive('maxWaitingPerPeer', options.maxWaitingPerPeer, 1024),
    maxServingPerSender: positive('maxServingPerSender', options.maxServingPerSender, 64),
    maxQueuedPerSender: positive('maxQueuedPerSender', options.maxQueuedPerSender, 256),
    maxQueuedBytes: positive('maxQueuedBytes', options.maxQueuedBytes, 256 * 2 ** 20),
    maxMessageBytes: positive('maxMessageBytes', options.maxMessageBytes, 64 * 2 ** 20),
    heartbeatIntervalMs: positive('heartbeatIntervalMs', options.heartbeatIntervalMs, 1000),
    heartbeatTimeoutMs: positive('heartbeatTimeoutMs', options.heartbeatTimeoutMs, 5000),
    reconnectIntervalMs: positive('reconnectIntervalMs', options.reconnectIntervalMs, 100),
    logger: options.logger ?? silentLogger,
    clock: options.clock ?? systemClock,
  })
}

/** host:port as a ZeroMQ tcp endpoint; port 0 becomes ZeroMQ's wildcard port. */
function tcpEndpoint(address: string): string {
  const colon = address.lastIndexOf(':')
  const port = address.slice(colon + 1)
  if (colon <= 0 || !/^\d+$/.test(port) || Number(port) > 65535) {
    throw ValidationError.field('address', `${address} is not host:port`)
  }
  return `tcp://${address.slice(0, colon)}:${port === '0' ? '*' : port}`
}

/** A request admitted to a channel: its encoded frames wait in the send queue until the socket takes them. */
interface Outgoing {
  readonly pending: PendingCall
  readonly call: PeerCall
  frames: PeerFrames | undefined
  /** The socket took the frames: they are on a connection, and lost if that connection drops. */
  sent: boolean
}

interface Channel {
  readonly peer: PeerEndpoint
  readonly dealer: Dealer
  readonly counters: ChannelCounters
  /** Requests waiting for an in-flight slot. */
  readonly waiting: Outgoing[]
  /** Admitted requests not yet taken by the socket; at most maxInFlightPerPeer. */
  readonly sendQueue: Outgoing[]
  receiving: Promise<void>
  sending: boolean
  sequence: number
  inFlight: number
}

/** A request from a peer, decoded and checked, waiting to be served. */
interface Job {
  readonly identity: Buffer
  readonly request: PeerRequest
}

/** What this node serves and queues for one sender. */
interface SenderState {
  running: number
  readonly queue: Job[]
}

export class ZmqPeerTransport implements PeerTransport {
  private readonly config: ZmqConfig
  private readonly channels = new Map<string, Channel>()
  private readonly outstanding = new Map<number, { readonly channel: Channel; readonly out: Outgoing }>()
  private readonly senders = new Map<string, SenderState>()
  private readonly running = new Set<AbortController>()
  private router: Router | undefined
  private serving: Promise<void> | undefined
  private handler: PeerHandler | undefined
  /** Each response as its peer's routing id and then the response's frames. */
  private readonly responseQueue: [Buffer, ...Uint8Array[]][] = []
  private sendingResponses = false
  private nextRequestId = 0
  private queuedBytes = 0
  private readonly malformed = new ThrottledCount()
  private served = 0
  private rejected = 0
  private closed = false
  /** The ZAP domain of the listening socket, when the transport has a key (see peer-key.ts). */
  private zapDomain: string | undefined
  /** Connections the ZAP handler refused. */
  private readonly refused = new ThrottledCount()

  constructor(options: ZmqPeerTransportOptions) {
    this.config = resolveOptions(options)
  }

  async listen(handler: PeerHandler): Promise<string> {
    if (this.closed) throw new UnavailableError(`node ${this.config.nodeId}: the peer transport is closed`)
    if (this.router !== undefined) throw new Error('BUG: the peer transport is already listening')
    if (this.config.listen === undefined) throw ValidationError.field('listen', 'is required to serve peers')
    const endpoint = tcpEndpoint(this.config.listen)
    // The answers a sender can have due at once: those served and those queued, twice over.
    const dueAnswers = 2 * (this.config.maxServingPerSender + this.config.maxQueuedPerSender)
    const key = this.config.key
    // With a key, ZeroMQ asks the ZAP handler about each connection, under this socket's domain.
    this.zapDomain =
      key === undefined
        ? undefined
        : await zapHandler.register(key.publicBytes, (address) => this.countRefused(address))
    const curve =
      key === undefined ? {} : { curveServer: true, curveSecretKey: key.secretKey, zapDomain: this.zapDomain }
    const router = new Router({
      ...curve,
      linger: 0,
      // A node that restarts reconnects with the same routing id before this side notices the old
      // connection died; without handover the new connection would be refused until then.
      handover: true,
      maxMessageSize: this.config.maxMessageBytes,
      // No receive high-water mark (see NO_RECEIVE_LIMIT).
      receiveHighWaterMark: NO_RECEIVE_LIMIT,
      // Refusals are answered at once, a burst as large as a sender's requests in flight; the ROUTER
      // drops what its pipe cannot take, so the pipe has room for such a burst of small answers
      // beyond the bounded number of served ones (a dropped answer would end its call only at the
      // call's timeout).
      sendHighWaterMark: dueAnswers + REFUSAL_BURST,
      heartbeatInterval: this.config.heartbeatIntervalMs,
      heartbeatTimeout: this.config.heartbeatTimeoutMs,
      heartbeatTimeToLive: this.config.heartbeatTimeoutMs,
    })
    try {
      await router.bind(endpoint)
    } catch (err) {
      router.close()
      await this.releaseZapDomain()
      const why = err instanceof Error ? `: ${err.message}` : ''
      throw new UnavailableError(`node ${this.config.nodeId} cannot listen for peers on ${this.config.listen}${why}`, {
        cause: err,
      })
    }
    this.router = router
    this.handler = handler
    this.serving = this.receiveRequests(router)
    return (router.lastEndpoint ?? endpoint).replace(/^tcp:\/\//, '')
  }

  request(peer: PeerEndpoint, call: PeerCall): Promise<PeerReply> {
    try {
      checkPeerCall(call)
      if (this.closed) throw new UnavailableError(`node ${this.config.nodeId}: the peer transport is closed`)
      const max = this.config.maxMessageBytes - ENVELOPE_BYTES
      if (call.body.byteLength > max) {
        throw new LimitError(
          'max_message_bytes',
          this.config.maxMessageBytes,
          `cannot send ${call.body.byteLength} bytes to node ${peer.id}`,
        )
      }
      const channel = this.channel(peer)
      const pending = new PendingCall(peer, call, channel.counters, this.config.clock)
      const out: Outgoing = { pending, call, frames: undefined, sent: false }
      if (channel.inFlight < this.config.maxInFlightPerPeer) this.admit(channel, out)
      else if (channel.waiting.length < this.config.maxWaitingPerPeer) {
        channel.waiting.push(out)
        pending.whenSettled(() => removeItem(channel.waiting, out))
      } else {
        pending.fail(
          new LimitError(
            'max_waiting_per_peer',
            this.config.maxWaitingPerPeer,
            `node ${this.config.nodeId} has too many requests waiting for node ${peer.id}`,
          ),
        )
      }
      return pending.promise
    } catch (err) {
      return Promise.reject(err)
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    const closing = new UnavailableError(`node ${this.config.nodeId}: the peer transport closed`)
    for (const { out } of this.outstanding.values()) out.pending.fail(closing)
    const loops: Promise<void>[] = []
    for (const channel of this.channels.values()) {
      for (const out of [...channel.waiting]) out.pending.fail(closing)
      channel.dealer.close()
      loops.push(channel.receiving)
    }
    this.channels.clear()
    for (const controller of this.running) controller.abort(closing)
    this.senders.clear()
    this.queuedBytes = 0
    this.responseQueue.length = 0
    this.router?.close()
    if (this.serving !== undefined) loops.push(this.serving)
    await Promise.all(loops)
    await this.releaseZapDomain()
  }

  private async releaseZapDomain(): Promise<void> {
    const domain = this.zapDomain
    this.zapDomain = undefined
    if (domain !== undefined) await zapHandler.unregister(domain)
  }

  stats(): PeerTransportStats {
    return {
      peers: [...this.channels.values()].map((c) => c.counters.snapshot(c.peer, c.inFlight, c.waiting.length)),
      malformedMessages: this.malformed.total,
      requestsServed: this.served,
      requestsRejected: this.rejected,
      connectionsRefused: this.refused.total,
    }
  }

  // The calling side.

  private channel(peer: PeerEndpoint): Channel {
    const existing = this.channels.get(peer.id)
    if (existing !== undefined) {
      if (existing.peer.address === peer.address) return existing
      // The node moved: its old connection is useless, and its requests can only time out.
      this.channels.delete(peer.id)
      existing.dealer.close()
      const moved = new UnavailableError(`node ${peer.id} moved from ${existing.peer.address} to ${peer.address}`)
      for (const out of [...existing.waiting]) out.pending.fail(moved)
      for (const { channel, out } of this.outstanding.values()) if (channel === existing) out.pending.fail(moved)
    }
    const key = this.config.key
    const dealer = new Dealer({
      ...(key === undefined
        ? {}
        : { curveServerKey: key.publicKey, curvePublicKey: key.publicKey, curveSecretKey: key.secretKey }),
      routingId: this.config.nodeId,
      linger: 0,
      // Queue only to a completed connection: messages for a peer that is down wait in this
      // process's bounded queue, not in a ZeroMQ pipe that grows up to the high-water mark.
      immediate: true,
      sendHighWaterMark: 2 * this.config.maxInFlightPerPeer,
      // Answers come only to requests this node sent, at most maxInFlightPerPeer at a time, plus
      // late ones to requests it gave up on; no receive high-water mark (see NO_RECEIVE_LIMIT).
      receiveHighWaterMark: NO_RECEIVE_LIMIT,
      reconnectInterval: this.config.reconnectIntervalMs,
      reconnectMaxInterval: Math.max(2000, this.config.reconnectIntervalMs),
      maxMessageSize: this.config.maxMessageBytes,
      heartbeatInterval: this.config.heartbeatIntervalMs,
      heartbeatTimeout: this.config.heartbeatTimeoutMs,
      heartbeatTimeToLive: this.config.heartbeatTimeoutMs,
    })
    try {
      dealer.connect(tcpEndpoint(peer.address))
    } catch (err) {
      dealer.close()
      throw new UnavailableError(`node ${this.config.nodeId} cannot connect to node ${peer.id} (${peer.address})`, {
        cause: err,
      })
    }
    const channel: Channel = {
      peer: { id: peer.id, address: peer.address },
      dealer,
      counters: new ChannelCounters(),
      waiting: [],
      sendQueue: [],
      receiving: Promise.resolve(),
      sending: false,
      sequence: 0,
      inFlight: 0,
    }
    channel.receiving = this.receiveResponses(channel)
    // ZeroMQ reconnects on its own, but what the dropped connection carried is gone: a request
    // already sent on it can never be answered, so it fails now rather than at its timeout (a
    // repair's digest request waits minutes). Requests not yet sent wait for the new connection.
    dealer.events.on('disconnect', () => this.connectionLost(channel))
    this.channels.set(peer.id, channel)
    return channel
  }

  private admit(channel: Channel, out: Outgoing): void {
    channel.inFlight++
    const requestId = ++this.nextRequestId
    const { call, pending } = out
    out.frames = encodeRequestFrames(call, requestId, ++channel.sequence, this.config.nodeId, pending.deadlineMs)
    this.outstanding.set(requestId, { channel, out })
    channel.sendQueue.push(out)
    pending.whenSettled(() => {
      this.outstanding.delete(requestId)
      // A request that times out before the socket took it must not be sent late, nor hold its frames.
      out.frames = undefined
      removeItem(channel.sendQueue, out)
      channel.inFlight--
      this.admitWaiting(channel)
    })
    void this.sendRequests(channel)
  }

  private admitWaiting(channel: Channel): void {
    while (channel.inFlight < this.config.maxInFlightPerPeer && !this.closed) {
      const next = channel.waiting.shift()
      if (next === undefined) return
      if (!next.pending.settled) this.admit(channel, next)
    }
  }

  /** Sends the channel's queue one message at a time: zeromq's send() must not run concurrently. */
  private async sendRequests(channel: Channel): Promise<void> {
    if (channel.sending) return
    channel.sending = true
    try {
      for (let out = channel.sendQueue.shift(); out !== undefined; out = channel.sendQueue.shift()) {
        const frames = out.frames
        if (frames === undefined || out.pending.settled) continue
        try {
          // With `immediate`, this waits while the peer is not connected; the request's own timer
          // still ends the call, and the receiver drops the frame if it arrives past its deadline.
          await channel.dealer.send([...frames])
          out.sent = true
          channel.counters.requestsSent++
        } catch (err) {
          if (this.closed) return
          channel.counters.sendFailures++
          out.pending.fail(
            new UnavailableError(`cannot send to node ${channel.peer.id} (${channel.peer.address})`, { cause: err }),
          )
        }
      }
    } finally {
      channel.sending = false
    }
  }

  /** Fails the requests the connection to the channel's peer carried when it dropped. */
  private connectionLost(channel: Channel): void {
    if (this.closed || this.channels.get(channel.peer.id) !== channel) return
    const lost = [...this.outstanding.values()].filter((o) => o.channel === channel && o.out.sent)
    if (lost.length === 0) return
    const err = new UnavailableError(
      `the connection to node ${channel.peer.id} (${channel.peer.address}) dropped before it answered`,
    )
    for (const { out } of lost) {
      channel.counters.requestsLost++
      out.pending.fail(err)
    }
    this.config.logger.warn(
      { peer: channel.peer.id, requests: lost.length },
      'peer connection dropped; its requests failed',
    )
  }

  private async receiveResponses(channel: Channel): Promise<void> {
    try {
      for await (const frames of channel.dealer) this.onResponse(channel, frames)
    } catch (err) {
      if (!this.closed) this.config.logger.error({ err }, 'the peer response loop failed')
    }
  }

  private onResponse(channel: Channel, frames: Buffer[]): void {
    let response: PeerResponse
    try {
      response = decodeResponseFrames(frames)
      if (response.status === PeerStatus.PEER_STATUS_UNSPECIFIED) throw new Error('status is unspecified')
    } catch (err) {
      this.countMalformed(channel.peer.id, `response: ${(err as Error).message}`)
      return
    }
    const entry = this.outstanding.get(response.requestId)
    if (entry === undefined || entry.channel !== channel) {
      channel.counters.lateResponses++
      return
    }
    channel.counters.responses++
    entry.out.pending.answer(response)
  }

  // The serving side.

  private async receiveRequests(router: Router): Promise<void> {
    try {
      // The loop only decodes and dispatches; handlers run on their own, so a slow one never
      // holds up the frames behind it.
      for await (const frames of router) this.onRequest(frames)
    } catch (err) {
      if (!this.closed)
        this.config.logger.error({ err }, 'the peer request loop failed; this node no longer serves peers')
    }
  }

  private onRequest(frames: Buffer[]): void {
    const [identity, ...message] = frames
    if (identity === undefined) return
    const from = identity.toString('utf8')
    let request: PeerRequest
    try {
      request = checkPeerRequest(decodeRequestFrames(message), identity)
    } catch (err) {
      this.countMalformed(from, (err as Error).message)
      if (err instanceof PeerFrameError && err.requestId !== 0)
        this.reply(identity, err.requestId, errorResponseFields(err))
      return
    }
    if (request.kind === PeerKind.PEER_KIND_PING) {
      // Answered by the transport, ahead of any queue, so that it measures the node, not its load.
      this.served++
      this.reply(identity, request.requestId, { status: PeerStatus.PEER_STATUS_OK })
      return
    }
    const key = identity.toString('latin1')
    let state = this.senders.get(key)
    if (state === undefined) {
      state = { running: 0, queue: [] }
      this.senders.set(key, state)
    }
    const job: Job = { identity, request }
    if (state.running < this.config.maxServingPerSender) this.run(key, state, job)
    else if (
      state.queue.length < this.config.maxQueuedPerSender &&
      this.queuedBytes + request.body.byteLength <= this.config.maxQueuedBytes
    ) {
      state.queue.push(job)
      this.queuedBytes += request.body.byteLength
    } else {
      this.rejected++
      const full = new LimitError(
        'max_queued_per_sender',
        this.config.maxQueuedPerSender,
        `node ${this.config.nodeId} cannot queue another request from node ${request.sender}`,
      )
      this.reply(identity, request.requestId, errorResponseFields(full))
    }
  }

  private run(key: string, state: SenderState, job: Job): void {
    state.running++
    void this.serve(job).finally(() => {
      state.running--
      if (this.closed) return
      const next = state.queue.shift()
      if (next !== undefined) {
        this.queuedBytes -= next.request.body.byteLength
        this.run(key, state, next)
      } else if (state.running === 0) this.senders.delete(key)
    })
  }

  private async serve({ identity, request }: Job): Promise<void> {
    const handler = this.handler
    if (handler === undefined || this.closed) return
    const now = this.config.clock.now()
    const { requestId, sender, deadlineMs } = request
    if (deadlineMs !== 0 && deadlineMs <= now) {
      // The sender has given up on it: running it would only do work nobody waits for.
      const late = new DeadlineError(
        `the deadline of a request from node ${sender} passed before node ${this.config.nodeId} started it`,
      )
      this.served++
      this.reply(identity, requestId, errorResponseFields(late))
      return
    }
    const controller = new AbortController()
    this.running.add(controller)
    const timer =
      deadlineMs === 0
        ? undefined
        : setTimeout(
            () => controller.abort(new DeadlineError(`the deadline of a request from node ${sender} passed`)),
            deadlineMs - now,
          )
    try {
      const meta: PeerRequestMeta = {
        ringVersion: request.ringVersion,
        term: request.term,
        sequence: request.sequence,
        deadlineMs,
        signal: controller.signal,
      }
      const body = await handler(sender, request.kind, request.body, meta)
      this.reply(identity, requestId, { status: PeerStatus.PEER_STATUS_OK, body })
    } catch (err) {
      this.reply(identity, requestId, errorResponseFields(err))
    } finally {
      clearTimeout(timer)
      this.running.delete(controller)
      this.served++
    }
  }

  private reply(identity: Buffer, requestId: number, fields: ResponseFields): void {
    if (this.closed) return
    this.responseQueue.push([identity, ...encodeResponseFrames(requestId, this.config.ringVersion(), fields)])
    void this.sendResponses()
  }

  /**
   * Sends queued responses one at a time. The ROUTER is not `mandatory`, so send() never waits: a
   * response to a peer that is gone or over its high-water mark is dropped, and that peer's
   * request times out, which it must handle anyway.
   */
  private async sendResponses(): Promise<void> {
    const router = this.router
    if (this.sendingResponses || router === undefined) return
    this.sendingResponses = true
    try {
      for (let next = this.responseQueue.shift(); next !== undefined; next = this.responseQueue.shift()) {
        try {
          await router.send(next)
        } catch (err) {
          if (this.closed) return
          this.config.logger.warn({ err, peer: next[0].toString('utf8') }, 'cannot send a response to a peer')
        }
      }
    } finally {
      this.sendingResponses = false
    }
  }

  /** A connection the ZAP handler refused: it does not hold the cluster's key. */
  private countRefused(address: string): void {
    this.refused.add(this.config.clock.now(), (refusedConnections) =>
      this.config.logger.warn(
        { from: address, refusedConnections },
        "refused a peer connection: it does not hold this cluster's peer key (--peer-key)",
      ),
    )
  }

  private countMalformed(from: string, reason: string): void {
    this.malformed.add(this.config.clock.now(), (malformedMessages, sinceLastLine) =>
      this.config.logger.warn({ from, reason, malformedMessages, sinceLastLine }, 'rejected malformed peer messages'),
    )
  }
}

function removeItem<T>(list: T[], item: T): void {
  const i = list.indexOf(item)
  if (i >= 0) list.splice(i, 1)
}
