/**
 * Membership in Consul: the node's service registration with a TTL check that it renews, the set of
 * healthy nodes and the ring state, both watched with blocking queries, and the join that writes the
 * node's tokens into the ring under a session lock.
 *
 * Ring state lives in Consul KV under `<cluster>/`, one key per node rather than one key for the
 * whole ring (Consul caps a value at 512 KB, and one hot key becomes a CAS bottleneck):
 *
 *   <cluster>/settings          {"replicationFactor":3,"vnodes":128}, written once by the first leader
 *   <cluster>/nodes/<id>        {"id","grpcAddress","peerAddress","tokens":[…],"state","term"}
 *   <cluster>/ring-version      {"version":N,"term":T}, bumped with CAS after every ring change
 *   <cluster>/leader            the leader's lock (leader.ts); its LockIndex is the leader's term
 *   <cluster>/decommission/<id> a request to decommission a node, which the leader carries out
 *   <cluster>/move              the progress of the membership change under way, as the leader sees it
 *
 * Only the leader writes the ring (commit): node keys first, the version last, each write carrying
 * its term, so a snapshot at version N holds every change made before N. Readers watch the whole
 * prefix in one recursive blocking query, so the version, the node keys and the lock they see come
 * from one snapshot. That is what fences a deposed leader: a new ring version whose term is below
 * the lock's LockIndex (or below a term already accepted) was written by a leader that has lost the
 * lock since, and every node rejects it and keeps the ring it has.
 *
 * Consul being unreachable never stops the data path: the last known ring and healthy set stay, the
 * outage is logged once and counted, and the watches resume (with backoff) when Consul answers again.
 */
import { type Clock, type Logger, silentLogger, systemClock } from '../engine/config.js'
import { bug, UnavailableError, ValidationError } from '../model/errors.js'
import {
  type Blocking,
  type ConsulClient,
  ConsulError,
  type Indexed,
  type KvPair,
  NpmConsulClient,
  type ServiceInstance,
} from './consul-client.js'
import { backoff, errorMessage, sleep } from './pause.js'

export type NodeState = 'joining' | 'active' | 'leaving'

/** One node's entry in the ring, as stored at `<cluster>/nodes/<id>`. */
export interface NodeRecord {
  readonly id: string
  readonly grpcAddress: string
  readonly peerAddress: string
  /** tokens are the node's positions on the ring, distinct uint32 values. */
  readonly tokens: readonly number[]
  readonly state: NodeState
  /** term is the leader term the record was last written under, when a leader wrote it. */
  readonly term?: number
}

export interface RingState {
  /** version is `<cluster>/ring-version`: it grows with every change of the members or their tokens. */
  readonly version: number
  /** term is the leader term the version was written under; 0 for a ring no leader wrote. */
  readonly term: number
  readonly replicationFactor: number
  readonly vnodes: number
  /** members are sorted by id. */
  readonly members: readonly NodeRecord[]
}

/** The membership change under way, as the leader last recorded it at `<cluster>/move`. */
export interface MoveProgress {
  /** version is the ring version the change started at. */
  readonly version: number
  /** nodes are the members joining or leaving. */
  readonly nodes: readonly string[]
  /** phase is where the change is: syncing, streaming, handing-off, switching or cleaning-up. */
  readonly phase: string
  readonly rangesTotal: number
  readonly rangesDone: number
  readonly pointsMoved: number
}

/**
 * A start that would do harm: another live node holds this node's id, or the ring lists this node
 * while its data folder is new. The start stops rather than serve.
 */
export class StartRefusedError extends Error {
  override readonly name = 'StartRefusedError'
}

/** What the cluster's KV holds beside the ring: the leader, pending requests, the change under way. */
export interface ClusterMeta {
  /** leader is the node holding `<cluster>/leader` and its term (the key's LockIndex); undefined when none. */
  readonly leader: { readonly id: string; readonly term: number } | undefined
  /** decommissions are the node ids whose decommission was asked for and is not done yet, sorted. */
  readonly decommissions: readonly string[]
  readonly move: MoveProgress | undefined
}

/** A member as the leader commits it; the term is added when it is written. */
export type MemberRecord = Omit<NodeRecord, 'term'>

export interface PeerAddresses {
  readonly grpcAddress: string
  readonly peerAddress: string
}

/** Consul's reachability as membership last saw it, for logs and metrics. */
export interface ConsulState {
  readonly reachable: boolean
  /** outages counts the times Consul became unreachable since start. */
  readonly outages: number
  /** lastError is the message of the last failed call, if any. */
  readonly lastError: string | undefined
}

export interface MembershipOptions {
  /** consulUrl is the agent's HTTP address; `host:port` without a scheme means http. */
  readonly consulUrl: string
  /** token is the ACL token sent with every call; absent or empty sends none. */
  readonly token?: string
  /** clusterName is the Consul service name and the KV prefix. */
  readonly clusterName: string
  readonly self: {
    readonly id: string
    /** grpcAddress is `host:port` that clients and other nodes dial for gRPC. */
    readonly grpcAddress: string
    /** peerAddress is `host:port` of the node's ZeroMQ peer socket. */
    readonly peerAddress: string
  }
  /** ttlMs is the TTL of the node's health check, renewed every ttlMs/3; default 10 s. */
  readonly ttlMs?: number
  /** deregisterCriticalAfterMs: Consul removes the node's service after its check is critical this long; default 1 min. */
  readonly deregisterCriticalAfterMs?: number
  /** watchWaitMs is the `wait` of the blocking queries; default 30 s, at most Consul's 10 min. */
  readonly watchWaitMs?: number
  /** expected are this node's own settings: a cluster with others gets a warning, once. */
  readonly expected?: ClusterSettings
  /** newDataFolder: this start created the node's database; a ring member then refuses to start. */
  readonly newDataFolder?: boolean
  /**
   * formerMember: the data folder records that this node was a ring member before; a ring that no
   * longer lists it (it was decommissioned, or removed while down) then refuses its start.
   */
  readonly formerMember?: boolean
}

export interface MembershipConfig {
  readonly consulUrl: string
  readonly token: string | undefined
  readonly clusterName: string
  readonly self: { readonly id: string; readonly grpcAddress: string; readonly peerAddress: string }
  readonly ttlMs: number
  readonly deregisterCriticalAfterMs: number
  readonly watchWaitMs: number
  readonly expected: ClusterSettings | undefined
  readonly newDataFolder: boolean
  readonly formerMember: boolean
}

/** The cluster's settings, written once by the first leader; a node configured otherwise uses these. */
export interface ClusterSettings {
  readonly replicationFactor: number
  readonly vnodes: number
}

const MEMBERSHIP_DEFAULTS = { ttlMs: 10_000, deregisterCriticalAfterMs: 60_000, watchWaitMs: 30_000 } as const

const BACKOFF_MIN_MS = 500
const BACKOFF_MAX_MS = 10_000
const MAX_WAIT_MS = 10 * 60_000
const ID_PATTERN = /^[^\s/]+$/
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/

/** Splits `host:port` or `[v6]:port`. */
function splitAddress(field: string, address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(address)
  const port = Number(m?.[3])
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw ValidationError.field(field, `must be host:port with a port from 1 to 65535, not ${JSON.stringify(address)}`)
  }
  return { host: (m[1] ?? m[2]) as string, port }
}

function joinAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

function positiveInt(field: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value <= 0 || value > max) {
    throw ValidationError.field(field, `must be an integer from 1 to ${max}, not ${value}`)
  }
  return value
}

/** Applies defaults and checks every option; the result is read-only. */
function resolveMembershipConfig(options: MembershipOptions): MembershipConfig {
  const withScheme = /^[a-z]+:\/\//i.test(options.consulUrl) ? options.consulUrl : `http://${options.consulUrl}`
  let url: URL
  try {
    url = new URL(withScheme)
  } catch {
    throw ValidationError.field('consulUrl', `must be an http(s) URL, not ${JSON.stringify(options.consulUrl)}`)
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || (url.pathname !== '/' && url.pathname !== '')) {
    throw ValidationError.field('consulUrl', `must be http(s)://host:port, not ${JSON.stringify(options.consulUrl)}`)
  }
  if (!NAME_PATTERN.test(options.clusterName)) {
    throw ValidationError.field('clusterName', 'must start with a letter or digit and hold only letters, digits, _ . -')
  }
  if (!ID_PATTERN.test(options.self.id))
    throw ValidationError.field('self.id', 'must be non-empty, without / or spaces')
  splitAddress('self.grpcAddress', options.self.grpcAddress)
  splitAddress('self.peerAddress', options.self.peerAddress)
  const ttlMs = positiveInt('ttlMs', options.ttlMs ?? MEMBERSHIP_DEFAULTS.ttlMs)
  return Object.freeze({
    consulUrl: url.origin,
    token: options.token || undefined,
    clusterName: options.clusterName,
    self: Object.freeze({ ...options.self }),
    ttlMs,
    deregisterCriticalAfterMs: positiveInt(
      'deregisterCriticalAfterMs',
      options.deregisterCriticalAfterMs ?? MEMBERSHIP_DEFAULTS.deregisterCriticalAfterMs,
    ),
    watchWaitMs: positiveInt('watchWaitMs', options.watchWaitMs ?? MEMBERSHIP_DEFAULTS.watchWaitMs, MAX_WAIT_MS),
    expected: options.expected,
    newDataFolder: options.newDataFolder ?? false,
    formerMember: options.formerMember ?? false,
  })
}

/** Whether a failed TTL update means the agent no longer knows the check (it restarted or reaped it). */
function isUnknownCheck(err: unknown): boolean {
  if (!(err instanceof ConsulError)) return false
  if (err.statusCode === 404) return true
  return err.statusCode === 500 && /does not have associated TTL|unknown check/i.test(err.message)
}

function isNodeState(v: unknown): v is NodeState {
  return v === 'joining' || v === 'active' || v === 'leaving'
}

function isToken(t: unknown): t is number {
  return typeof t === 'number' && Number.isInteger(t) && t >= 0 && t <= 0xffffffff
}

/** Parses a node key's value; undefined when it is not a valid record. */
function parseNodeRecord(text: string): NodeRecord | undefined {
  try {
    return nodeRecordOf(JSON.parse(text))
  } catch {
    return undefined
  }
}

/** A node record from its parsed JSON; undefined when it is not a valid record. */
function nodeRecordOf(v: unknown): NodeRecord | undefined {
  if (typeof v !== 'object' || v === null) return undefined
  const r = v as Record<string, unknown>
  if (typeof r.id !== 'string' || typeof r.grpcAddress !== 'string' || typeof r.peerAddress !== 'string')
    return undefined
  if (!Array.isArray(r.tokens) || !r.tokens.every(isToken) || !isNodeState(r.state)) return undefined
  if (r.term !== undefined && !(typeof r.term === 'number' && Number.isInteger(r.term))) return undefined
  return {
    id: r.id,
    grpcAddress: r.grpcAddress,
    peerAddress: r.peerAddress,
    tokens: r.tokens,
    state: r.state,
    ...(r.term !== undefined ? { term: r.term as number } : {}),
  }
}

/**
 * A whole ring from its parsed JSON (the fields of RingState, as a node keeps its last ring in its
 * data folder); undefined when it is not a valid ring.
 */
export function ringStateOf(v: unknown): RingState | undefined {
  if (typeof v !== 'object' || v === null) return undefined
  const r = v as Record<string, unknown>
  if (!Number.isSafeInteger(r.version) || !Number.isSafeInteger(r.term)) return undefined
  if (!Number.isInteger(r.replicationFactor) || !Number.isInteger(r.vnodes) || !Array.isArray(r.members))
    return undefined
  const members: NodeRecord[] = []
  for (const m of r.members as unknown[]) {
    const record = nodeRecordOf(m)
    if (record === undefined) return undefined
    members.push(record)
  }
  return {
    version: r.version as number,
    term: r.term as number,
    replicationFactor: r.replicationFactor as number,
    vnodes: r.vnodes as number,
    members: members.sort((a, b) => (a.id < b.id ? -1 : 1)),
  }
}

/** Parses `<cluster>/ring-version`: `{"version","term"}`, or a bare decimal written before terms (term 0). */
function parseVersion(text: string): { version: number; term: number } | undefined {
  if (/^\d+$/.test(text)) {
    const version = Number(text)
    return Number.isSafeInteger(version) ? { version, term: 0 } : undefined
  }
  try {
    const v: unknown = JSON.parse(text)
    if (typeof v !== 'object' || v === null) return undefined
    const { version, term } = v as Record<string, unknown>
    if (!Number.isSafeInteger(version) || !Number.isSafeInteger(term)) return undefined
    return { version: version as number, term: term as number }
  } catch {
    return undefined
  }
}

function parseMove(text: string): MoveProgress | undefined {
  try {
    const v: unknown = JSON.parse(text)
    if (typeof v !== 'object' || v === null) return undefined
    const r = v as Record<string, unknown>
    const counts = [r.version, r.rangesTotal, r.rangesDone, r.pointsMoved]
    if (!counts.every((n) => Number.isSafeInteger(n)) || typeof r.phase !== 'string') return undefined
    if (!Array.isArray(r.nodes) || !r.nodes.every((n) => typeof n === 'string')) return undefined
    return {
      version: r.version as number,
      nodes: r.nodes as string[],
      phase: r.phase,
      rangesTotal: r.rangesTotal as number,
      rangesDone: r.rangesDone as number,
      pointsMoved: r.pointsMoved as number,
    }
  } catch {
    return undefined
  }
}

function sameMember(a: NodeRecord, b: MemberRecord): boolean {
  return (
    a.id === b.id &&
    a.grpcAddress === b.grpcAddress &&
    a.peerAddress === b.peerAddress &&
    a.state === b.state &&
    a.tokens.length === b.tokens.length &&
    a.tokens.every((t, i) => t === b.tokens[i])
  )
}

function parseSettings(text: string): { replicationFactor: number; vnodes: number } | undefined {
  try {
    const v: unknown = JSON.parse(text)
    if (typeof v !== 'object' || v === null) return undefined
    const { replicationFactor, vnodes } = v as Record<string, unknown>
    if (!Number.isInteger(replicationFactor) || !Number.isInteger(vnodes)) return undefined
    return { replicationFactor: replicationFactor as number, vnodes: vnodes as number }
  } catch {
    return undefined
  }
}

/** The ring keys of one snapshot of `<cluster>/`, each with its ModifyIndex for CAS. */
interface RingKeys {
  readonly settings: { value: { replicationFactor: number; vnodes: number }; modifyIndex: number } | undefined
  readonly version: { value: { version: number; term: number }; modifyIndex: number } | undefined
  readonly nodes: ReadonlyMap<string, { record: NodeRecord; modifyIndex: number }>
  /** leader is the lock key: its holder's id when a session holds it, and its LockIndex either way. */
  readonly leader: { readonly id: string | undefined; readonly lockIndex: number } | undefined
  readonly decommissions: ReadonlyMap<string, number>
  readonly move: { value: MoveProgress; modifyIndex: number } | undefined
  /** Ring keys whose values do not parse, with their ModifyIndex, so that a commit can replace them. */
  readonly invalid: ReadonlyMap<string, number>
}

export class Membership {
  readonly config: MembershipConfig
  /** The Consul API this membership talks through; the leader election shares it. */
  readonly client: ConsulClient
  private readonly serviceId: string
  private readonly checkId: string
  private readonly prefix: string
  private readonly abort = new AbortController()
  private started = false
  private stopped = false
  private registered = false
  private renewTimer: NodeJS.Timeout | undefined
  private renewing: Promise<void> | undefined
  private readonly loops: Promise<void>[] = []
  private healthySet: ReadonlyMap<string, PeerAddresses> = new Map()
  /** The healthy nodes other than this one that registered as former ring members, sorted. */
  private formerMembersHealthy: readonly string[] = []
  private ringState: RingState | undefined
  private metaState: ClusterMeta = { leader: undefined, decommissions: [], move: undefined }
  /** The highest leader term seen: in the lock's LockIndex or in an accepted ring version. */
  private termSeen = 0
  /** See healthKnown. */
  private healthCurrent = false
  /** See consulHoldsNoRing. */
  private ringMissing = false
  /** Ring changes rejected because a deposed leader wrote them (fencing). */
  private fencedChanges = 0
  /** Whether the cluster's settings differing from this node's own were logged. */
  private settingsWarned = false
  private consul: ConsulState = { reachable: true, outages: 0, lastError: undefined }
  private outageSince = 0
  private readonly healthyListeners: ((healthy: ReadonlyMap<string, PeerAddresses>) => void)[] = []
  private readonly ringListeners: ((ring: RingState) => void)[] = []
  private readonly metaListeners: ((meta: ClusterMeta) => void)[] = []
  private readonly consulListeners: ((state: ConsulState) => void)[] = []
  /** Invalid keys already warned about, by key and ModifyIndex, so a bad key is logged once. */
  private readonly warned = new Set<string>()

  /**
   * @param client the Consul API; by default the `consul` npm client at `options.consulUrl`.
   */
  constructor(
    options: MembershipOptions,
    private readonly logger: Logger = silentLogger,
    private readonly clock: Clock = systemClock,
    client?: ConsulClient,
  ) {
    this.config = resolveMembershipConfig(options)
    const c = this.config
    this.client = client ?? new NpmConsulClient(c.consulUrl, c.token, Math.min(5000, Math.max(1000, c.ttlMs)))
    this.serviceId = `${c.clusterName}-${c.self.id}`
    this.checkId = `service:${this.serviceId}`
    this.prefix = `${c.clusterName}/`
  }

  /** The healthy nodes as last seen in Consul, by node id. */
  healthy(): ReadonlyMap<string, PeerAddresses> {
    return this.healthySet
  }

  /** The ring as last seen in Consul; undefined until one is known. A new ring is a new object. */
  ring(): RingState | undefined {
    return this.ringState
  }

  /** The leader, the pending decommissions and the change under way, as last seen in Consul. */
  meta(): ClusterMeta {
    return this.metaState
  }

  /**
   * Whether this node may lead now. A node whose data folder shows it was a ring member, while it
   * knows no ring (Consul lost it, and the node started since), may not: as the leader it would
   * start a new ring with itself alone, which would give the members' ranges to other nodes, and the
   * drops after the moves would delete their points. It waits for a node that still knows the ring
   * to write it back. Nor may a node that never was a member while it knows no ring and a healthy
   * node registered as a former member (its Consul service's `former_member` meta): Consul lost
   * the ring those nodes were members of, and a new ring of this node alone would take their ranges.
   */
  mayLead(): boolean {
    if (this.ringState !== undefined) return true
    return !this.config.formerMember && this.formerMembersHealthy.length === 0
  }

  /**
   * Whether the healthy set is Consul's current answer: false until the health watch first answers,
   * and from each failure of it (an outage, Consul restarting) until it answers again. Meanwhile the
   * set is what Consul said before, which the leader does not act on: a node that died or was
   * stopped meanwhile would still look healthy, and be added back or waited for.
   */
  healthKnown(): boolean {
    return this.healthCurrent
  }

  /**
   * Whether Consul's last answer on the ring's keys held no ring: no leader has written one yet, or
   * Consul lost its data. False until the ring watch first answers.
   */
  consulHoldsNoRing(): boolean {
    return this.ringMissing
  }

  /**
   * Takes back a ring this node kept (RingRestore decides when), while Consul holds none and this
   * node knows none: the node routes with it, and may lead, and as leader writes it back to Consul
   * (RingLeader begins each term so). Its term counts as seen, so that the leader's term passes it.
   * Answers whether the ring was taken.
   */
  restore(ring: RingState): boolean {
    if (this.ringState !== undefined || !this.ringMissing || this.stopped) return false
    this.takeKeptRing(ring, 'Consul holds no ring: taking back the ring this node kept in its data folder')
    return true
  }

  /**
   * Whether this node has not reached Consul since it started: it knows no ring, its registration
   * waits for Consul, and the last attempt failed because Consul could not be reached (an outage, not
   * a refusal). A former member may then take its kept ring back without Consul (restoreUnreached).
   */
  consulUnreachedSinceStart(): boolean {
    return this.started && !this.registered && !this.consul.reachable && !this.stopped && this.ringState === undefined
  }

  /**
   * Takes back a ring this node kept while Consul cannot be reached and never was since the start
   * (RingRestore decides when: every other member of the ring answered a ping, and none knows a newer
   * one). The node routes with the ring and takes the members that answered, with itself, as its
   * healthy set: what the other members, serving through the outage on their last ring, also do.
   * Registration goes on waiting for Consul; once it answers, its ring and healthy set take over.
   * Answers whether the ring was taken.
   */
  restoreUnreached(ring: RingState, answered: ReadonlyMap<string, PeerAddresses>): boolean {
    if (!this.consulUnreachedSinceStart()) return false
    const self = this.config.self
    const healthy = new Map(answered)
    healthy.set(self.id, { grpcAddress: self.grpcAddress, peerAddress: self.peerAddress })
    this.healthySet = healthy
    for (const l of this.healthyListeners) l(healthy)
    this.takeKeptRing(
      ring,
      'Consul cannot be reached: taking back the ring this node kept in its data folder, which every member of it answered for',
    )
    return true
  }

  /** Routes with a kept ring (restore, restoreUnreached): its term counts as seen, so a leader's passes it. */
  private takeKeptRing(ring: RingState, message: string): void {
    this.termSeen = Math.max(this.termSeen, ring.term)
    this.logger.warn({ version: ring.version, term: ring.term, members: ring.members.map((m) => m.id) }, message)
    this.setRing(ring)
  }

  /** The highest leader term seen: the lock's LockIndex, or the term of an accepted ring version. */
  highestTerm(): number {
    return this.termSeen
  }

  /** The number of ring changes rejected since start because an older leader term wrote them. */
  fencedRingChanges(): number {
    return this.fencedChanges
  }

  get consulReachable(): boolean {
    return this.consul.reachable
  }

  consulState(): ConsulState {
    return this.consul
  }

  onHealthy(listener: (healthy: ReadonlyMap<string, PeerAddresses>) => void): void {
    this.healthyListeners.push(listener)
  }

  onRing(listener: (ring: RingState) => void): void {
    this.ringListeners.push(listener)
  }

  onMeta(listener: (meta: ClusterMeta) => void): void {
    this.metaListeners.push(listener)
  }

  onConsulState(listener: (state: ConsulState) => void): void {
    this.consulListeners.push(listener)
  }

  /**
   * Registers the node's service with a TTL check, passes the check at once and keeps renewing it,
   * and starts watching the healthy set and the ring. Fails when Consul cannot be reached.
   */
  async start(): Promise<void> {
    if (this.started) throw bug('Membership.start called twice')
    this.started = true
    // A node that starts while Consul is down waits for it, as join does; a refusal is final.
    for (let attempt = 1; ; attempt++) {
      if (this.stopped) throw new UnavailableError('cannot register: membership is stopped')
      try {
        await this.refuseTakenId()
        await this.refuseNewFolder()
        await this.refuseRemoved()
        await this.register()
        break
      } catch (err) {
        if (err instanceof StartRefusedError) throw err
        this.failed(err)
        if (this.stopped) throw new UnavailableError('cannot register: membership is stopped', { cause: err })
        if (!(err instanceof ConsulError && err.outage)) throw err
        await sleep(backoff(attempt, BACKOFF_MIN_MS, BACKOFF_MAX_MS), this.abort.signal)
      }
    }
    this.succeeded()
    this.scheduleRenew()
    this.loops.push(
      this.watch(
        'healthy nodes',
        (b) => this.client.passingInstances(this.config.clusterName, b, this.abort.signal),
        (instances) => {
          this.healthCurrent = true
          this.applyHealthy(instances)
        },
        () => {
          this.healthCurrent = false
        },
      ),
      this.watch(
        'ring',
        (b) => this.client.kvList(this.prefix, b, this.abort.signal),
        (pairs) => this.applyRing(pairs),
      ),
    )
  }

  /**
   * Stops renewing and watching (in-flight blocking queries are cancelled) and deregisters the node,
   * so the others see it leave at once rather than when its TTL runs out.
   */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.abort.abort()
    clearTimeout(this.renewTimer)
    await Promise.all([this.renewing, ...this.loops])
    if (this.registered) {
      try {
        await this.client.deregisterService(this.serviceId)
      } catch (err) {
        this.logger.warn({ err: errorMessage(err), service: this.serviceId }, 'cannot deregister from Consul')
      }
    }
    this.client.close()
  }

  /**
   * Waits until the ring lists this node, which the leader adds once it sees the node healthy, and
   * returns that ring. Fails only when membership stops first.
   */
  awaitMember(): Promise<RingState> {
    const self = this.config.self.id
    const listed = (ring: RingState | undefined) => ring?.members.some((m) => m.id === self) === true
    if (listed(this.ringState)) return Promise.resolve(this.ringState as RingState)
    return new Promise((resolve, reject) => {
      const stopped = () => reject(new UnavailableError('cannot join the ring: membership is stopped'))
      if (this.stopped) return stopped()
      this.abort.signal.addEventListener('abort', stopped, { once: true })
      this.ringListeners.push((ring) => {
        if (!listed(ring)) return
        this.abort.signal.removeEventListener('abort', stopped)
        resolve(ring)
      })
    })
  }

  /**
   * Writes the ring the leader decided, under its term: each member whose key differs (or is
   * missing) is written with the term, keys of nodes no longer members are deleted, and the version
   * is bumped last, each with CAS. Writing every differing key, not only the ones the change names,
   * also overwrites whatever a deposed leader wrote since this node accepted its ring. Records the
   * settings first when no leader has yet. Retries while Consul is unreachable or a CAS loses a race,
   * until `signal` aborts (the term ended) or membership stops.
   */
  async commit(
    term: number,
    members: readonly MemberRecord[],
    settings: ClusterSettings,
    signal: AbortSignal,
  ): Promise<RingState> {
    for (let attempt = 1; ; attempt++) {
      if (term < this.termSeen) throw new UnavailableError(`term ${term} is over: term ${this.termSeen} has begun`)
      if (this.stopped || signal.aborted)
        throw new UnavailableError('cannot change the ring: this node no longer leads')
      try {
        const ring = await this.commitOnce(term, members, settings, signal)
        this.succeeded()
        this.applyRing(ring.pairs)
        return ring.state
      } catch (err) {
        if (!(err instanceof ConsulError && err.outage) && !(err instanceof RaceError)) throw err
        if (err instanceof ConsulError) this.failed(err)
        else this.logger.warn({ err: err.message, term }, 'the ring changed under the leader; writing it again')
        await sleep(backoff(attempt, BACKOFF_MIN_MS, BACKOFF_MAX_MS), signal)
      }
    }
  }

  /** Asks the leader to decommission a node: a key it watches, not a ring change. */
  async requestDecommission(id: string, signal?: AbortSignal): Promise<void> {
    await this.client.kvPut(`${this.prefix}decommission/${id}`, JSON.stringify({ at: this.clock.now() }), {}, signal)
  }

  /** Removes a decommission request, once done or when it cannot be done. */
  async clearDecommission(id: string, signal?: AbortSignal): Promise<void> {
    await this.client.kvDelete(`${this.prefix}decommission/${id}`, {}, signal)
  }

  /** Records the progress of the change under way at `<cluster>/move`, or removes it. */
  async recordMove(progress: MoveProgress | undefined, signal?: AbortSignal): Promise<void> {
    const key = `${this.prefix}move`
    if (progress === undefined) await this.client.kvDelete(key, {}, signal)
    else await this.client.kvPut(key, JSON.stringify(progress), {}, signal)
  }

  // ---- registration and the TTL check ----

  /**
   * Refuses to register a node the ring lists as a member when its data folder is new: the ranges
   * the ring gives it hold their points in the folder it had, and it would answer them empty (and a
   * later move would copy the emptiness on). A new node, or one the ring no longer lists, joins.
   */
  private async refuseNewFolder(): Promise<void> {
    const c = this.config
    if (!c.newDataFolder) return
    const { keys } = await this.snapshot(this.abort.signal)
    if (!keys.nodes.has(c.self.id)) return
    throw new StartRefusedError(
      `node ${c.self.id} is a member of the ring, but its data folder is new: the points of its ranges are in the folder it had. ` +
        `Start it on that folder; to rebuild it empty, decommission ${c.self.id} from another node first, or give it another --node-id`,
    )
  }

  /**
   * Refuses to start a node the ring once listed and lists no longer: it was decommissioned, or
   * removed while down, and its ranges went to other nodes, so its folder holds data the cluster
   * moved on from. Joined again on it, the node would take ranges back over stale points. A cluster
   * whose ring Consul lost is left to the rest of the start.
   */
  private async refuseRemoved(): Promise<void> {
    const c = this.config
    if (!c.formerMember) return
    const { keys } = await this.snapshot(this.abort.signal)
    if (keys.nodes.size === 0 || keys.nodes.has(c.self.id)) return
    throw new StartRefusedError(
      `node ${c.self.id} is no longer a member of the ring: it was decommissioned, or removed while it was down, and its ranges moved to other nodes, so its data folder is out of date. ` +
        'Start it on a new data folder to join again as a new node',
    )
  }

  /**
   * Refuses to register while another live node holds this node's id at another address: the
   * registration would replace that node's in Consul, and the cluster would send its ranges here.
   * The same address is this node itself, restarted.
   */
  private async refuseTakenId(): Promise<void> {
    const c = this.config
    const { host, port } = splitAddress('self.grpcAddress', c.self.grpcAddress)
    const { value } = await this.client.passingInstances(c.clusterName, { index: 0, waitMs: 0 }, this.abort.signal)
    const other = value.find((i) => i.serviceId === this.serviceId && (i.address !== host || i.port !== port))
    if (other === undefined) return
    throw new StartRefusedError(
      `node id ${c.self.id} is in use: the node at ${other.address}:${other.port} has it and its Consul check passes. ` +
        `Give this node another --node-id, or stop that node first (a node that died fails its check within ${c.ttlMs / 1000} s)`,
    )
  }

  private async register(): Promise<void> {
    const c = this.config
    const { host, port } = splitAddress('self.grpcAddress', c.self.grpcAddress)
    await this.client.registerService(
      {
        name: c.clusterName,
        id: this.serviceId,
        address: host,
        port,
        meta: {
          node_id: c.self.id,
          peer_address: c.self.peerAddress,
          // Read by new nodes while Consul holds no ring (see mayLead).
          ...(c.formerMember ? { former_member: 'true' } : {}),
        },
        ttlMs: c.ttlMs,
        deregisterCriticalAfterMs: c.deregisterCriticalAfterMs,
      },
      this.abort.signal,
    )
    this.registered = true
    await this.client.passCheck(this.checkId, this.abort.signal)
  }

  private scheduleRenew(): void {
    if (this.stopped) return
    this.renewTimer = setTimeout(() => {
      this.renewing = this.renew().finally(() => {
        this.renewing = undefined
        this.scheduleRenew()
      })
    }, this.config.ttlMs / 3)
  }

  private async renew(): Promise<void> {
    try {
      await this.client.passCheck(this.checkId, this.abort.signal)
      this.succeeded()
    } catch (err) {
      if (this.stopped) return
      if (!isUnknownCheck(err)) return this.failed(err)
      // The agent lost the service (it restarted, or reaped the service after a long outage).
      this.logger.warn({ service: this.serviceId }, 'Consul no longer knows this node; registering again')
      try {
        await this.register()
        this.succeeded()
      } catch (again) {
        if (!this.stopped) this.failed(again)
      }
    }
  }

  // ---- watches ----

  /**
   * Runs one blocking-query loop until stop: each answer's X-Consul-Index is the next query's index,
   * reset to 0 when it goes backwards (Consul's advice: the agent or its state was replaced) and after
   * a failure. Errors back off exponentially from 0.5 s to 10 s with jitter, never a tight loop;
   * `onFailure` hears each.
   */
  private async watch<T>(
    what: string,
    query: (blocking: Blocking) => Promise<Indexed<T>>,
    apply: (value: T) => void,
    onFailure?: () => void,
  ): Promise<void> {
    let index = 0
    let failures = 0
    while (!this.stopped) {
      try {
        const answer = await query({ index, waitMs: this.config.watchWaitMs })
        if (this.stopped) return
        this.succeeded()
        failures = 0
        index = answer.index < index ? 0 : Math.max(answer.index, 1)
        apply(answer.value)
      } catch (err) {
        if (this.stopped) return
        failures += 1
        this.failed(err, what)
        onFailure?.()
        // The next query answers at once: what changed meanwhile (Consul may have come back empty)
        // is known as soon as it answers, not at the end of a blocking wait.
        index = 0
        await sleep(backoff(failures, BACKOFF_MIN_MS, BACKOFF_MAX_MS), this.abort.signal)
      }
    }
  }

  private applyHealthy(instances: readonly ServiceInstance[]): void {
    const next = new Map<string, PeerAddresses>()
    const former: string[] = []
    for (const i of [...instances].sort((a, b) => (a.serviceId < b.serviceId ? -1 : 1))) {
      const id = i.meta.node_id
      const peerAddress = i.meta.peer_address
      if (!id || !peerAddress) continue
      next.set(id, { grpcAddress: joinAddress(i.address, i.port), peerAddress })
      if (i.meta.former_member === 'true' && id !== this.config.self.id) former.push(id)
    }
    this.formerMembersHealthy = former.sort()
    this.explainNoLead()
    const prev = this.healthySet
    const same =
      prev.size === next.size &&
      [...next].every(([id, a]) => {
        const p = prev.get(id)
        return p?.grpcAddress === a.grpcAddress && p.peerAddress === a.peerAddress
      })
    if (same) return
    this.healthySet = next
    for (const l of this.healthyListeners) l(next)
  }

  private applyRing(pairs: readonly KvPair[]): void {
    const keys = this.parseRing(pairs)
    this.applyMeta(keys)
    this.ringMissing = !keys.version || !keys.settings
    if (!keys.version || !keys.settings) {
      // Consul lost the ring (a dev agent restarted) or no leader has written one yet: keep what we know.
      if (this.ringState && this.warnOnce(`missing:${pairs.length}`)) {
        this.logger.warn(
          { cluster: this.config.clusterName },
          'the ring is missing from Consul KV; keeping the last known ring',
        )
      }
      this.explainNoLead()
      return
    }
    const { version, term } = keys.version.value
    const current = this.ringState
    if (current !== undefined && version > current.version && term < this.termSeen) {
      // A leader that lost the lock wrote this after a newer term began: fencing rejects it.
      if (this.warnOnce(`fenced:${version}:${term}`)) {
        this.fencedChanges++
        this.logger.warn(
          { version, term, currentTerm: this.termSeen },
          'rejecting a ring change written under an older leader term; keeping the ring',
        )
      }
      return
    }
    this.termSeen = Math.max(this.termSeen, term)
    this.warnSettings(keys.settings.value)
    this.setRing(this.ringOf(keys))
  }

  /** Says once why this node does not lead while Consul holds no ring (see mayLead). */
  private explainNoLead(): void {
    if (!this.ringMissing || this.ringState !== undefined) return
    const cluster = this.config.clusterName
    if (this.config.formerMember) {
      if (this.warnOnce('no ring for a former member')) {
        this.logger.error(
          { cluster },
          'Consul holds no ring, but this node was a member of one (its data folder says so): it does not lead, ' +
            'since a new ring would give its ranges to other nodes; it waits for a node that still knows the ring ' +
            'to write it back, or takes back the ring it kept in its data folder once every member of that ring ' +
            'is back and none knows a newer one',
        )
      }
    } else if (this.formerMembersHealthy.length > 0) {
      if (this.warnOnce(`former members:${this.formerMembersHealthy.join(',')}`)) {
        this.logger.warn(
          { cluster, formerMembers: this.formerMembersHealthy },
          'Consul holds no ring, but nodes that were members of one are registered: this node does not start a ' +
            'new ring, which would take their ranges; it waits for them to write theirs back',
        )
      }
    }
  }

  /** Updates the leader, the requests and the move; the lock's LockIndex raises the term seen first. */
  private applyMeta(keys: RingKeys): void {
    this.termSeen = Math.max(this.termSeen, keys.leader?.lockIndex ?? 0)
    const leaderId = keys.leader?.id
    const meta: ClusterMeta = {
      leader: leaderId === undefined ? undefined : { id: leaderId, term: keys.leader?.lockIndex ?? 0 },
      decommissions: [...keys.decommissions.keys()].sort(),
      move: keys.move?.value,
    }
    if (JSON.stringify(meta) === JSON.stringify(this.metaState)) return
    this.metaState = meta
    for (const l of this.metaListeners) l(meta)
  }

  private warnSettings(settings: ClusterSettings): void {
    if (this.settingsWarned || this.config.expected === undefined) return
    this.settingsWarned = true
    if (settings.replicationFactor !== this.config.expected.replicationFactor) {
      this.logger.warn(
        { configured: this.config.expected.replicationFactor, cluster: settings.replicationFactor },
        "the replication factor differs from the cluster's; using the cluster's",
      )
    }
    if (settings.vnodes !== this.config.expected.vnodes) {
      this.logger.warn(
        { configured: this.config.expected.vnodes, cluster: settings.vnodes },
        "the number of vnodes differs from the cluster's; using the cluster's",
      )
    }
  }

  /**
   * Takes a ring only when its version is newer: a watch answer started before the leader's own
   * commit can arrive after it, and must not take the ring back.
   */
  private setRing(ring: RingState): void {
    if (this.ringState && ring.version <= this.ringState.version) return
    this.ringState = ring
    for (const l of this.ringListeners) l(ring)
  }

  private ringOf(keys: RingKeys): RingState {
    if (!keys.version || !keys.settings) throw bug('ringOf needs a version and settings')
    return {
      version: keys.version.value.version,
      term: keys.version.value.term,
      replicationFactor: keys.settings.value.replicationFactor,
      vnodes: keys.settings.value.vnodes,
      members: [...keys.nodes.values()].map((n) => n.record).sort((a, b) => (a.id < b.id ? -1 : 1)),
    }
  }

  private warnOnce(key: string): boolean {
    if (this.warned.has(key)) return false
    this.warned.add(key)
    return true
  }

  private parseRing(pairs: readonly KvPair[]): RingKeys {
    const p = this.prefix
    let settings: RingKeys['settings']
    let version: RingKeys['version']
    let leader: RingKeys['leader']
    let move: RingKeys['move']
    const nodes = new Map<string, { record: NodeRecord; modifyIndex: number }>()
    const decommissions = new Map<string, number>()
    const invalidKeys = new Map<string, number>()
    for (const pair of pairs) {
      const invalid = () => {
        invalidKeys.set(pair.key, pair.modifyIndex)
        if (this.warnOnce(`${pair.key}@${pair.modifyIndex}`)) {
          this.logger.warn({ key: pair.key }, 'ignoring an invalid ring key in Consul KV')
        }
      }
      if (pair.key === `${p}settings`) {
        const value = parseSettings(pair.value)
        if (value) settings = { value, modifyIndex: pair.modifyIndex }
        else invalid()
      } else if (pair.key === `${p}ring-version`) {
        const value = parseVersion(pair.value)
        if (value) version = { value, modifyIndex: pair.modifyIndex }
        else invalid()
      } else if (pair.key === `${p}leader`) {
        let id: string | undefined
        if (pair.session !== undefined) {
          try {
            const node: unknown = (JSON.parse(pair.value) as Record<string, unknown>).node
            if (typeof node === 'string') id = node
          } catch {
            invalid()
          }
        }
        leader = { id, lockIndex: pair.lockIndex }
      } else if (pair.key === `${p}move`) {
        const value = parseMove(pair.value)
        if (value) move = { value, modifyIndex: pair.modifyIndex }
        else invalid()
      } else if (pair.key.startsWith(`${p}decommission/`)) {
        decommissions.set(pair.key.slice(`${p}decommission/`.length), pair.modifyIndex)
      } else if (pair.key.startsWith(`${p}nodes/`)) {
        const record = parseNodeRecord(pair.value)
        if (record && record.id === pair.key.slice(`${p}nodes/`.length)) {
          nodes.set(record.id, { record, modifyIndex: pair.modifyIndex })
        } else {
          invalid()
        }
      }
    }
    return { settings, version, nodes, leader, decommissions, move, invalid: invalidKeys }
  }

  // ---- the leader's ring writes ----

  private async snapshot(signal: AbortSignal): Promise<{ keys: RingKeys; pairs: readonly KvPair[] }> {
    const { value } = await this.client.kvList(this.prefix, { index: 0, waitMs: 0 }, signal)
    return { keys: this.parseRing(value), pairs: value }
  }

  private async commitOnce(
    term: number,
    members: readonly MemberRecord[],
    settings: ClusterSettings,
    signal: AbortSignal,
  ): Promise<{ state: RingState; pairs: readonly KvPair[] }> {
    const p = this.prefix
    const { keys } = await this.snapshot(signal)
    // The watch may lag: the lock itself says whether a newer term has begun.
    if ((keys.leader?.lockIndex ?? 0) > term) {
      throw new UnavailableError(`term ${term} is over: term ${keys.leader?.lockIndex} has begun`)
    }
    // A key whose value does not parse is replaced, at its own ModifyIndex.
    const casOf = (key: string, stored: { modifyIndex: number } | undefined) =>
      stored?.modifyIndex ?? keys.invalid.get(key) ?? 0
    const settingsKey = `${p}settings`
    const settingsCas = casOf(settingsKey, undefined)
    if (
      !keys.settings &&
      !(await this.client.kvPut(settingsKey, JSON.stringify(settings), { cas: settingsCas }, signal))
    ) {
      throw new RaceError('the cluster settings were written meanwhile')
    }
    const wanted = new Set(members.map((m) => m.id))
    for (const member of members) {
      const stored = keys.nodes.get(member.id)
      if (stored !== undefined && sameMember(stored.record, member)) continue
      const record: NodeRecord = { ...member, term }
      const key = `${p}nodes/${member.id}`
      if (!(await this.client.kvPut(key, JSON.stringify(record), { cas: casOf(key, stored) }, signal))) {
        throw new RaceError(`nodes/${member.id} changed meanwhile`)
      }
    }
    const leftOver = [
      ...[...keys.nodes].map(([id, stored]) => [`${p}nodes/${id}`, stored.modifyIndex] as const),
      ...[...keys.invalid].filter(([key]) => key.startsWith(`${p}nodes/`)),
    ]
    for (const [key, modifyIndex] of leftOver) {
      if (wanted.has(key.slice(`${p}nodes/`.length))) continue
      if (!(await this.client.kvDelete(key, { cas: modifyIndex }, signal))) {
        throw new RaceError(`${key} changed meanwhile`)
      }
    }
    const version = Math.max(keys.version?.value.version ?? 0, this.ringState?.version ?? 0) + 1
    const value = JSON.stringify({ version, term })
    const versionKey = `${p}ring-version`
    if (!(await this.client.kvPut(versionKey, value, { cas: casOf(versionKey, keys.version) }, signal))) {
      throw new RaceError('the ring version changed meanwhile')
    }
    const final = await this.snapshot(signal)
    const v = final.keys.version?.value
    if (v === undefined || v.version !== version || v.term !== term || !final.keys.settings) {
      throw new RaceError('the ring changed right after this write')
    }
    return { state: this.ringOf(final.keys), pairs: final.pairs }
  }

  // ---- Consul's reachability ----

  private succeeded(): void {
    if (this.consul.reachable) return
    this.logger.info(
      { consul: this.config.consulUrl, outageMs: this.clock.now() - this.outageSince },
      'Consul is reachable again',
    )
    this.setConsul({ ...this.consul, reachable: true })
  }

  private failed(err: unknown, what?: string): void {
    const message = errorMessage(err)
    if (!(err instanceof ConsulError && err.outage)) {
      // Consul answered but refused: a bug or a permission problem, not an outage.
      this.logger.error({ err: message, what }, 'Consul refused a request')
      this.setConsul({ ...this.consul, lastError: message })
      return
    }
    if (!this.consul.reachable) {
      this.consul = { ...this.consul, lastError: message }
      return
    }
    this.outageSince = this.clock.now()
    this.logger.warn(
      { consul: this.config.consulUrl, err: message },
      this.ringState !== undefined
        ? 'Consul is unreachable; serving on the last known ring and healthy set'
        : `Consul is unreachable; this node has no ring yet and answers UNAVAILABLE until it can join${
            this.config.formerMember ? ', or take back the ring its data folder kept' : ''
          }`,
    )
    this.setConsul({ reachable: false, outages: this.consul.outages + 1, lastError: message })
  }

  private setConsul(state: ConsulState): void {
    this.consul = state
    for (const l of this.consulListeners) l(state)
  }
}

/** Another writer changed the ring between this node's read and its CAS write; the join retries. */
class RaceError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'RaceError'
  }
}
