/**
 * The ring a node keeps in its data folder, for the day Consul loses its own copy while every
 * member restarts (a dev agent and the whole cluster restarted together, a power cut). Consul is
 * where the ring lives; a running node keeps the last ring it saw in memory and its leader writes
 * it back (RingLeader), but a restarted member knows none and may not start a new one
 * (Membership.mayLead). With this file it can take its last ring back itself, once that is safe:
 *
 * - Consul's answer holds no ring, and this node knows none yet;
 * - the ring it kept lists it (a node decommissioned or removed keeps a ring without itself);
 * - every member of that ring is healthy in Consul, so no member that could know a newer ring is
 *   missing;
 * - no member knows a newer ring: each answers a ping with the highest ring version it knows (its
 *   ring, or the one its own folder kept). A node that was down through a change kept an older
 *   ring, and waits for a member that saw the change to take the newer one back.
 *
 * The node then routes with the ring and may lead; its leader writes the ring back to Consul under
 * a new version and a term above the ring's, and the others take it from there.
 *
 * The file serves a member restarted while Consul cannot be reached too (an outage, or Consul cut
 * off from this node alone), which would otherwise wait for Consul before it serves. It takes the
 * ring back when Consul has not answered since the start, the ring lists it, and every other member
 * of the ring answers its ping with no newer version: the members that serve on through the outage
 * know the ring, and none can change it without Consul. It then serves as they do, on the last ring
 * and the members that answered, and registers once Consul answers.
 *
 * A member gone for good would keep either restore waiting for ever. The operator may name such
 * members (--restore-ring-without): the restore does not wait for them while they are down or
 * silent, and still asks one that answers which ring it knows.
 */
import { readFile } from 'node:fs/promises'
import { PeerKind } from '../../gen/v3storage/internal/v1/peer.js'
import type { Logger } from '../engine/config.js'
import { writeWholeFile } from '../engine/whole-file.js'
import { type Membership, type PeerAddresses, type RingState, ringStateOf } from './membership.js'
import { errorMessage, sleep } from './pause.js'
import type { PeerTransport } from './peer-transport.js'

/** The file in a node's data folder that holds the last ring it saw. */
export const RING_FILE = 'cluster-ring.json'

/** The last ring a node saw, in a file of its data folder; written whole or not at all. */
export class RingFile {
  private pending: RingState | undefined
  private writing: Promise<void> | undefined

  constructor(
    private readonly path: string,
    private readonly logger: Logger,
  ) {}

  /** The ring the file holds; undefined when there is no file. A file that does not parse is an error. */
  async load(): Promise<RingState | undefined> {
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    let ring: RingState | undefined
    try {
      ring = ringStateOf(JSON.parse(text))
    } catch {
      ring = undefined
    }
    if (ring === undefined) throw new Error(`cannot read ${this.path}: it does not hold a ring`)
    return ring
  }

  /** Records `ring`; writes run one at a time, and a ring that comes while one runs replaces any waiting. */
  save(ring: RingState): void {
    this.pending = ring
    this.writing ??= this.drain()
  }

  /** Resolves once every ring saved so far is on disk (or failed, which is logged). */
  async flushed(): Promise<void> {
    while (this.writing !== undefined) await this.writing
  }

  private async drain(): Promise<void> {
    try {
      for (let ring = this.pending; ring !== undefined; ring = this.pending) {
        this.pending = undefined
        try {
          await writeWholeFile(this.path, `${JSON.stringify(ring)}\n`)
        } catch (err) {
          this.logger.error({ err: errorMessage(err), version: ring.version }, `cannot keep the ring in ${this.path}`)
        }
      }
    } finally {
      this.writing = undefined
    }
  }
}

/** What RingRestore reads and acts through. */
export interface RingRestoreLink {
  readonly selfId: string
  readonly membership: Pick<
    Membership,
    | 'ring'
    | 'healthy'
    | 'healthKnown'
    | 'consulHoldsNoRing'
    | 'restore'
    | 'consulUnreachedSinceStart'
    | 'restoreUnreached'
  >
  readonly transport: Pick<PeerTransport, 'request'>
  /** The ring this node kept in its data folder. */
  readonly kept: RingState
  /**
   * Members gone for good (--restore-ring-without): the restore does not wait for them while they
   * are down or do not answer. One that is up is still asked which ring it knows.
   */
  readonly without?: ReadonlySet<string>
}

export interface RingRestoreOptions {
  /** How often the conditions are looked at again; default 1 s. */
  readonly pollMs?: number
  /** How long a member may take to answer its ping; default 2 s. */
  readonly pingTimeoutMs?: number
}

/** Why a kept ring is not taken back yet; undefined once it may be. */
export type RestoreWait =
  | { readonly kind: 'consul-has-ring' }
  | { readonly kind: 'not-a-member' }
  | { readonly kind: 'members-down'; readonly ids: readonly string[] }
  | { readonly kind: 'newer-ring'; readonly id: string; readonly version: number }
  | { readonly kind: 'no-answer'; readonly id: string; readonly reason: string }

/** Takes the kept ring back when the conditions in this file's comment hold; see RingRestoreLink. */
export class RingRestore {
  private readonly abort = new AbortController()
  private running: Promise<void> | undefined
  private readonly pollMs: number
  private readonly pingTimeoutMs: number

  constructor(
    private readonly link: RingRestoreLink,
    private readonly logger: Logger,
    options: RingRestoreOptions = {},
  ) {
    this.pollMs = options.pollMs ?? 1000
    this.pingTimeoutMs = options.pingTimeoutMs ?? 2000
  }

  /** Looks at the conditions every pollMs until the node knows a ring, by Consul or by restore. */
  start(): void {
    this.running ??= this.run()
  }

  async stop(): Promise<void> {
    this.abort.abort()
    await this.running
  }

  /** Looks once: takes the ring back and answers undefined, or answers why not yet. */
  async attempt(): Promise<RestoreWait | undefined> {
    const { membership, kept, selfId } = this.link
    if (membership.ring() !== undefined) return { kind: 'consul-has-ring' }
    // Consul not reached since the start: whether a member is up is asked of the member itself.
    const unreached = membership.consulUnreachedSinceStart()
    if (!unreached && (!membership.consulHoldsNoRing() || !membership.healthKnown())) {
      return { kind: 'consul-has-ring' }
    }
    if (!kept.members.some((m) => m.id === selfId)) return { kind: 'not-a-member' }
    const healthy = membership.healthy()
    const without = this.link.without ?? new Set<string>()
    // The members Consul shows down (while it cannot be reached, none is known down): the restore
    // waits for them, unless --restore-ring-without names them, and then does not ask them.
    const down = unreached ? [] : kept.members.filter((m) => !healthy.has(m.id)).map((m) => m.id)
    const waiting = down.filter((id) => !without.has(id))
    if (waiting.length > 0) return { kind: 'members-down', ids: waiting }
    const skipped = down.filter((id) => id !== selfId)
    // Every other member is asked at once, so that silent members cost one ping timeout in all; the
    // answers are then read in the ring's order.
    const asked = kept.members
      .filter((m) => m.id !== selfId && !down.includes(m.id))
      .map((m) => ({ m, address: healthy.get(m.id)?.peerAddress ?? m.peerAddress }))
    const replies = await Promise.allSettled(
      asked.map(({ m, address }) =>
        this.link.transport.request(
          { id: m.id, address },
          {
            kind: PeerKind.PEER_KIND_PING,
            body: new Uint8Array(0),
            ringVersion: 0,
            timeoutMs: this.pingTimeoutMs,
            signal: this.abort.signal,
          },
        ),
      ),
    )
    const answered = new Map<string, PeerAddresses>()
    for (const [i, { m, address }] of asked.entries()) {
      const reply = replies[i]!
      if (reply.status === 'rejected') {
        if (this.abort.signal.aborted || !without.has(m.id)) {
          return { kind: 'no-answer', id: m.id, reason: errorMessage(reply.reason) }
        }
        skipped.push(m.id)
        continue
      }
      const version = reply.value.ringVersion
      if (version > kept.version) return { kind: 'newer-ring', id: m.id, version }
      answered.set(m.id, { grpcAddress: healthy.get(m.id)?.grpcAddress ?? m.grpcAddress, peerAddress: address })
    }
    // Consul may have answered, or been given a ring, during the pings: each restore checks again.
    const taken = unreached ? membership.restoreUnreached(kept, answered) : membership.restore(kept)
    if (!taken) return { kind: 'consul-has-ring' }
    if (skipped.length > 0) {
      this.logger.warn(
        { without: skipped },
        'the kept ring was taken back without waiting for members --restore-ring-without names, which are down',
      )
    }
    return undefined
  }

  private async run(): Promise<void> {
    let told = ''
    while (!this.abort.signal.aborted && this.link.membership.ring() === undefined) {
      const wait = await this.attempt()
      if (wait === undefined) return
      const said = describe(wait, this.link.kept, this.link.membership.consulUnreachedSinceStart())
      if (said !== undefined && said !== told) {
        told = said
        this.logger.warn({ version: this.link.kept.version }, said)
      }
      await sleep(this.pollMs, this.abort.signal)
    }
  }
}

/**
 * The log line for a wait worth telling the operator about; undefined for one that is not.
 * `unreached`: Consul has not been reached since the start (else it holds no ring).
 */
function describe(wait: RestoreWait, kept: RingState, unreached: boolean): string | undefined {
  const ring = `the ring kept in the data folder (version ${kept.version})`
  const consul = unreached ? 'Consul cannot be reached' : 'Consul holds no ring'
  switch (wait.kind) {
    case 'consul-has-ring':
      return undefined
    case 'not-a-member':
      return `${consul}, and ${ring} does not list this node: it waits for Consul, or for a member to write the ring back`
    case 'members-down':
      return `${consul}: ${ring} is taken back once every member of it is up; waiting for ${wait.ids.join(', ')}`
    case 'newer-ring':
      return `${consul}: node ${wait.id} knows ring version ${wait.version}, newer than ${ring}; waiting for ${unreached ? 'Consul' : 'it to write its ring back'}`
    case 'no-answer':
      return `${consul}: ${ring} is taken back once every member of it answers; ${wait.id} does not (${wait.reason})`
  }
}
