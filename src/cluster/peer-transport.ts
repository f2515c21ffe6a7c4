/**
 * Node-to-node requests: the PeerTransport interface that routing, replication and repair are
 * written against, and the pieces its implementations share. The ZeroMQ implementation is in
 * zmq-peer-transport.ts, the in-memory one for deterministic tests in memory-transport.ts.
 */
import { PeerKind, PeerRequest, PeerResponse, PeerStatus } from '../../gen/v3storage/internal/v1/peer.js'
import type { Clock } from '../engine/config.js'
import { DeadlineError, UnavailableError, ValidationError } from '../model/errors.js'
import { responseError } from './peer-codec.js'

export interface PeerEndpoint {
  readonly id: string
  /** host:port of the peer's ZeroMQ ROUTER. */
  readonly address: string
}

export interface PeerCall {
  readonly kind: PeerKind
  /** The kind's own request message, encoded. */
  readonly body: Uint8Array
  /** The ring version the caller routed with; 0 means none yet. */
  readonly ringVersion: number
  /** The caller's election term where the request depends on leadership; absent means 0. */
  readonly term?: number
  /** How long to wait for the answer, in milliseconds, including time waiting for a free slot. */
  readonly timeoutMs: number
  /** Aborting it rejects the call at once with a DeadlineError. */
  readonly signal?: AbortSignal
}

export interface PeerReply {
  /** The kind's own response message, encoded. */
  readonly body: Uint8Array
  /** The ring version the peer holds; a newer one than the caller's means the caller's ring is stale. */
  readonly ringVersion: number
}

export interface PeerRequestMeta {
  /** The ring version the sender routed with. */
  readonly ringVersion: number
  /** The sender's term; 0 means none. */
  readonly term: number
  /** The request's position on the sender's channel to this node, from 1. */
  readonly sequence: number
  /** Absolute deadline in milliseconds since the epoch; 0 means none. */
  readonly deadlineMs: number
  /** Aborted when the deadline passes or the transport closes. */
  readonly signal: AbortSignal
}

/**
 * Serves one request from node `from`. It returns the kind's encoded response message, or throws:
 * a domain error (src/model/errors.ts) reaches the caller as the same error type and message;
 * anything else reaches it as a PeerInternalError naming this node.
 */
export type PeerHandler = (from: string, kind: PeerKind, body: Uint8Array, meta: PeerRequestMeta) => Promise<Uint8Array>

/** Figures of the channel from this node to one peer. */
export interface PeerChannelStats {
  readonly peer: string
  readonly address: string
  /** Requests handed to the socket. */
  readonly requestsSent: number
  /** Responses matched to an outstanding request. */
  readonly responses: number
  /** Requests that got no answer within their timeout. */
  readonly timeouts: number
  /** Requests the socket refused to send. */
  readonly sendFailures: number
  /** Requests sent on a connection that dropped before they were answered: failed at once. */
  readonly requestsLost: number
  /** Responses that came after their request had timed out or was cancelled, or twice. */
  readonly lateResponses: number
  /** Requests sent or about to be, awaiting their answer. */
  readonly inFlight: number
  /** Requests waiting for an in-flight slot. */
  readonly queueDepth: number
}

export interface PeerTransportStats {
  readonly peers: readonly PeerChannelStats[]
  /** Frames received that did not decode or broke a rule of the contract, either direction. */
  readonly malformedMessages: number
  /** Requests from peers that were answered, successfully or with an error. */
  readonly requestsServed: number
  /** Requests from peers refused because that peer's queue here was full. */
  readonly requestsRejected: number
  /** Connections refused because they did not hold the cluster's peer key (--peer-key). */
  readonly connectionsRefused: number
}

export interface PeerTransport {
  /** Starts serving requests from peers with `handler`; resolves to the bound host:port. */
  listen(handler: PeerHandler): Promise<string>
  /** Sends one request and resolves to its answer, or rejects as described on PeerHandler and PeerCall. */
  request(peer: PeerEndpoint, call: PeerCall): Promise<PeerReply>
  /** Fails every outstanding request with UnavailableError, aborts running handlers and closes every socket. */
  close(): Promise<void>
  stats(): PeerTransportStats
}

/** The mutable counters behind a PeerChannelStats. */
export class ChannelCounters {
  requestsSent = 0
  responses = 0
  timeouts = 0
  sendFailures = 0
  requestsLost = 0
  lateResponses = 0

  snapshot(peer: PeerEndpoint, inFlight: number, queueDepth: number): PeerChannelStats {
    return {
      peer: peer.id,
      address: peer.address,
      requestsSent: this.requestsSent,
      responses: this.responses,
      timeouts: this.timeouts,
      sendFailures: this.sendFailures,
      requestsLost: this.requestsLost,
      lateResponses: this.lateResponses,
      inFlight,
      queueDepth,
    }
  }
}

/**
 * One outstanding call: its promise settles exactly once, on the first of an answer, a failure,
 * its timeout or its abort signal, and then runs the callbacks that free its slot.
 */
export class PendingCall {
  readonly promise: Promise<PeerReply>
  /** Absolute deadline in milliseconds since the epoch, as the request carries it. */
  readonly deadlineMs: number
  private resolveReply!: (reply: PeerReply) => void
  private rejectReply!: (err: Error) => void
  private readonly timer: ReturnType<typeof setTimeout>
  private readonly signal: AbortSignal | undefined
  private readonly onAbort = (): void => {
    this.fail(new DeadlineError(`the request to node ${this.peer.id} (${this.peer.address}) was cancelled`))
  }
  private readonly settledCallbacks: (() => void)[] = []
  private done = false

  constructor(
    private readonly peer: PeerEndpoint,
    call: PeerCall,
    counters: ChannelCounters,
    clock: Clock,
  ) {
    this.promise = new Promise<PeerReply>((resolve, reject) => {
      this.resolveReply = resolve
      this.rejectReply = reject
    })
    this.deadlineMs = clock.now() + call.timeoutMs
    this.timer = setTimeout(() => {
      if (this.done) return
      counters.timeouts++
      this.fail(new UnavailableError(`node ${peer.id} (${peer.address}) did not answer within ${call.timeoutMs} ms`))
    }, call.timeoutMs)
    this.signal = call.signal
    if (this.signal?.aborted) this.onAbort()
    else this.signal?.addEventListener('abort', this.onAbort, { once: true })
  }

  get settled(): boolean {
    return this.done
  }

  /** Runs `fn` once the call settles, or now if it has. */
  whenSettled(fn: () => void): void {
    if (this.done) fn()
    else this.settledCallbacks.push(fn)
  }

  resolve(reply: PeerReply): void {
    if (this.finish()) this.resolveReply(reply)
  }

  fail(err: Error): void {
    if (this.finish()) this.rejectReply(err)
  }

  /** Settles with the answer `response` carries: its body, or the error its status stands for. */
  answer(response: PeerResponse): void {
    if (response.status === PeerStatus.PEER_STATUS_OK) {
      this.resolve({ body: response.body, ringVersion: response.ringVersion })
    } else this.fail(responseError(response, this.peer.id))
  }

  private finish(): boolean {
    if (this.done) return false
    this.done = true
    clearTimeout(this.timer)
    this.signal?.removeEventListener('abort', this.onAbort)
    for (const fn of this.settledCallbacks) fn()
    return true
  }
}

/** Checks a PeerCall's own fields; a bad one is a bug of the caller, reported as a ValidationError. */
export function checkPeerCall(call: PeerCall): void {
  if (!(call.timeoutMs > 0) || !Number.isFinite(call.timeoutMs)) {
    throw ValidationError.field('timeoutMs', `${call.timeoutMs} is not a positive number of milliseconds`)
  }
  if (call.kind === PeerKind.PEER_KIND_UNSPECIFIED || call.kind === PeerKind.UNRECOGNIZED) {
    throw ValidationError.field('kind', 'is not a known PeerKind')
  }
}

/** The empty body an envelope is encoded with: its body, if any, goes in a frame of its own. */
const EMPTY = Buffer.alloc(0)

/**
 * A peer message as the ZeroMQ frames of one multipart message: the envelope, and then, when the
 * message has a body, the body in a frame of its own. Folding the body into the envelope would copy
 * it: a write's body is the whole write, sent to every replica (see decodeRequestFrames).
 */
export type PeerFrames = readonly Uint8Array[]

function framesOf(head: Uint8Array, body: Uint8Array | undefined): PeerFrames {
  return body === undefined || body.byteLength === 0 ? [head] : [head, body]
}

/** The frames of `call` as request `requestId`, the `sequence`-th on its channel, from node `sender`. */
export function encodeRequestFrames(
  call: PeerCall,
  requestId: number,
  sequence: number,
  sender: string,
  deadlineMs: number,
): PeerFrames {
  const head = PeerRequest.encode({
    requestId,
    sequence,
    ringVersion: call.ringVersion,
    term: call.term ?? 0,
    sender,
    kind: call.kind,
    body: EMPTY,
    deadlineMs,
  }).finish()
  return framesOf(head, call.body)
}

/** What a response says beyond its request id and ring version; absent fields are empty. */
export type ResponseFields = Partial<Omit<PeerResponse, 'requestId' | 'ringVersion' | 'body'>> & {
  readonly body?: Uint8Array
}

/** The frames answering request `requestId` with `fields`, stamped with the ring version the node holds. */
export function encodeResponseFrames(requestId: number, ringVersion: number, fields: ResponseFields): PeerFrames {
  const head = PeerResponse.encode({
    requestId,
    status: PeerStatus.PEER_STATUS_UNSPECIFIED,
    message: '',
    violations: [],
    ringVersion,
    ...fields,
    body: EMPTY,
  }).finish()
  return framesOf(head, fields.body)
}
