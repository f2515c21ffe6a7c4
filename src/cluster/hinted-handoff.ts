/**
 * Hinted handoff: the writes an owner missed wait in the coordinator's durable hint store and are
 * delivered to it once it is healthy again. Every point carries the version of its write, and an
 * owner keeps the highest version of a timestamp, so a replayed hint never overwrites a newer
 * value: new writes go to an owner that is back at once, beside the delivery of its backlog, and
 * the backlog goes several writes at a time.
 */
import { PeerKind } from '../../gen/v3storage/internal/v1/peer.js'
import type { Logger } from '../engine/config.js'
import type { HintFigures } from '../engine/storage-engine.js'
import type { WriteLimits } from '../model/limits.js'
import { groupHints } from './hint-batch.js'
import type { HintDrop, HintStore } from './hint-store.js'
import type { PeerEndpoint, PeerTransport } from './peer-transport.js'

/** Hints read from the store at a time; consecutive ones go to the owner as one write of at most WRITE_BYTES. */
const DELIVERY_BATCH_COUNT = 4_096
const DELIVERY_BATCH_BYTES = 16 * 1024 * 1024
const WRITE_BYTES = 4 * 1024 * 1024
/** Writes of hints under way to one owner at a time. */
const DELIVERY_WINDOW = 2
/** How often the deliverer looks for owners that are back, and the first retry after a failure. */
const DELIVERY_TICK_MS = 250
const RETRY_MAX_MS = 5_000
/** How often hints past the window are dropped. */
const EXPIRY_TICK_MS = 10_000

export interface HandoffPeers {
  /** The peer endpoint of a member, undefined when it is no longer in the ring. */
  endpoint(id: string): PeerEndpoint | undefined
  /** Whether Consul reports the member healthy. */
  healthy(id: string): boolean
  /** The ring version requests carry; 0 while no ring is known. */
  ringVersion(): number
}

/**
 * Keeps and delivers the hints of one coordinating node. `hint` stores a write body for an owner;
 * a timer delivers each owner's hints in order while it is healthy, consecutive hints as one write,
 * and drops what is past the window.
 */
export class HintedHandoff {
  /** The delivery under way per owner. */
  private readonly draining = new Map<string, Promise<void>>()
  private readonly retryAt = new Map<string, { at: number; delayMs: number }>()
  private tick: ReturnType<typeof setInterval> | undefined
  private expiry: ReturnType<typeof setInterval> | undefined
  private closed = false

  constructor(
    private readonly store: HintStore,
    private readonly transport: PeerTransport,
    private readonly peers: HandoffPeers,
    private readonly options: {
      readonly timeoutMs: number
      /** The owners' write limits: a write of several hints stays within them. */
      readonly limits: WriteLimits
    },
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.tick = setInterval(() => this.deliverAll(), DELIVERY_TICK_MS)
    this.tick.unref()
    this.expiry = setInterval(() => {
      this.store.dropExpired().catch((err: unknown) => this.logger.warn({ err }, 'dropping expired hints failed'))
    }, EXPIRY_TICK_MS)
    this.expiry.unref()
  }

  /** Stores `body` for `target`; false when the store is full and the hint was dropped. */
  hint(target: string, body: Uint8Array): Promise<boolean> {
    return this.store.append(target, body)
  }

  /** The store reports a drop: the owner needs repair. */
  dropped(drop: HintDrop): void {
    this.logger.warn(
      { target: drop.target, hints: drop.hints, bytes: drop.bytes, reason: drop.reason },
      'hints dropped: the owner needs repair',
    )
  }

  /** Repair brought `target` back in line after its hints were dropped: the mark goes, durably. */
  clearRepair(target: string): Promise<void> {
    return this.store.clearRepair(target)
  }

  figures(): HintFigures[] {
    const now = Date.now()
    return this.store.stats().map((s) => ({
      peer: s.target,
      backlog: s.hints,
      backlogBytes: s.bytes,
      queued: s.queued,
      delivered: s.delivered,
      dropped: s.dropped,
      lagMs: s.oldestMs === undefined ? 0 : Math.max(0, now - s.oldestMs),
      needsRepair: s.needsRepair,
    }))
  }

  async close(): Promise<void> {
    this.closed = true
    if (this.tick !== undefined) clearInterval(this.tick)
    if (this.expiry !== undefined) clearInterval(this.expiry)
    await Promise.all(this.draining.values())
    await this.store.close()
  }

  private deliverAll(): void {
    if (this.closed) return
    const now = Date.now()
    for (const target of this.store.targets()) {
      if (this.draining.has(target)) continue
      // Once a ring is known, one without the owner means its hints will never be delivered.
      if (this.peers.ringVersion() > 0 && this.peers.endpoint(target) === undefined) {
        this.draining.set(
          target,
          this.forget(target).finally(() => this.draining.delete(target)),
        )
        continue
      }
      if (!this.peers.healthy(target)) continue
      const retry = this.retryAt.get(target)
      if (retry !== undefined && retry.at > now) continue
      const delivery = this.drain(target)
        .then(() => {
          this.retryAt.delete(target)
        })
        .catch((err: unknown) => {
          const delayMs = Math.min(RETRY_MAX_MS, (retry?.delayMs ?? DELIVERY_TICK_MS / 2) * 2)
          this.retryAt.set(target, { at: Date.now() + delayMs, delayMs })
          this.logger.warn({ err, target, retryInMs: delayMs }, 'delivering hints failed')
        })
        .finally(() => this.draining.delete(target))
      this.draining.set(target, delivery)
    }
  }

  /** Deletes the hints of an owner the ring no longer lists (see HintStore.forget). */
  private async forget(target: string): Promise<void> {
    try {
      const hints = await this.store.forget(target)
      this.retryAt.delete(target)
      if (hints > 0) {
        this.logger.info({ target, hints }, 'deleted the hints of a node that is no longer a member of the ring')
      }
    } catch (err) {
      this.logger.warn({ err, target }, 'deleting the hints of a node that left the ring failed')
    }
  }

  /**
   * Delivers the hints of `target` until none is left, up to DELIVERY_WINDOW writes at once (the
   * owner orders their points by version, not by arrival); hints are deleted in order, each once
   * the owner has it durable.
   */
  private async drain(target: string): Promise<void> {
    for (;;) {
      if (this.closed) return
      const endpoint = this.peers.endpoint(target)
      if (endpoint === undefined) return
      const batch = await this.store.peek(target, DELIVERY_BATCH_COUNT, DELIVERY_BATCH_BYTES)
      if (batch.length === 0) return
      const groups = groupHints(batch, this.options.limits, WRITE_BYTES)
      const inFlight: { readonly throughSeq: number; readonly sent: Promise<unknown> }[] = []
      let next = 0
      while (next < groups.length || inFlight.length > 0) {
        while (!this.closed && next < groups.length && inFlight.length < DELIVERY_WINDOW) {
          const group = groups[next++]!
          const sent = this.transport.request(endpoint, {
            kind: PeerKind.PEER_KIND_WRITE,
            body: group.body,
            ringVersion: this.peers.ringVersion(),
            timeoutMs: this.options.timeoutMs,
          })
          // Awaited below in order; a failure while an earlier one is awaited must not go unhandled.
          sent.catch(() => {})
          inFlight.push({ throughSeq: group.throughSeq, sent })
        }
        const first = inFlight.shift()
        if (first === undefined) return
        await first.sent
        await this.store.ack(target, first.throughSeq)
      }
    }
  }
}
