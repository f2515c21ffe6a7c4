/**
 * Membership in Consul: the node's service registration with a TTL check that it renews, the set of
 * healthy nodes and the ring state, both watched with blocking queries, and the join that writes the
 * node's tokens into the ring under a session lock.
 *
 * Ring state lives in Consul KV under `<cluster>/`, one key per node rather than one key for the
 * whole ring (Consul caps a value at 512 KB, and one hot key becomes a CAS bottleneck):
 *
 *   <cluster>/settings       {"replicationFactor":3,"vnodes":128}, written once by the first node
 *   <cluster>/nodes/<id>     {"id","grpcAddress","peerAddress","tokens":[…],"state","term"?}
 *   <cluster>/ring-version   a decimal integer, bumped with CAS after every ring change
 *   <cluster>/ring-lock      held by a session while a node joins
 *
 * Readers watch the whole prefix in one recursive blocking query, so the version and the node keys
 * they see come from one snapshot; a writer writes node keys first and bumps the version last, so a
 * snapshot at version N holds every change made before N.
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
  readonly replicationFactor: number
  readonly vnodes: number
  /** members are sorted by id. */
  readonly members: readonly NodeRecord[]
}

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
}

export interface MembershipConfig {
  readonly consulUrl: string
  readonly token: string | undefined
  readonly clusterName: string
  readonly self: { readonly id: string; readonly grpcAddress: string; readonly peerAddress: string }
  readonly ttlMs: number
  readonly deregisterCriticalAfterMs: number
  readonly watchWaitMs: number
}

export interface JoinParams {
  /** vnodes is the number of tokens per node the first node records; later nodes use the cluster's. */
  readonly vnodes: number
  /** replicationFactor is recorded by the first node; a node with another value uses the cluster's. */
  readonly replicationFactor: number
  /** chooseTokens picks `count` new tokens for `nodeId`, distinct from those of the existing members. */
  readonly chooseTokens: (
    existing: readonly { id: string; tokens: readonly number[] }[],
    nodeId: string,
    count: number,
  ) => number[]
  /** state is the state a new member enters with; default 'active'. A member that returns keeps its own. */
  readonly state?: NodeState
}

const MEMBERSHIP_DEFAULTS = { ttlMs: 10_000, deregisterCriticalAfterMs: 60_000, watchWaitMs: 30_000 } as const

/** Consul refuses session TTLs below 10 s. */
const MIN_SESSION_TTL_MS = 10_000
/**
 * Lock-delay of the join lock. It only matters when a joiner dies holding the lock: the next joiner
 * waits this long past the session's expiry. Every ring write is a CAS anyway, so it can be short.
 */
const LOCK_DELAY_MS = 1000
const BACKOFF_MIN_MS = 500
const BACKOFF_MAX_MS = 10_000
const LOCK_RETRY_MIN_MS = 50
const LOCK_RETRY_MAX_MS = 2000
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
  })
}

/** Exponential backoff with jitter: attempt 1 waits about `min`, doubling up to `max`. */
function backoff(attempt: number, min: number, max: number): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt - 1, 30))
  return ceiling / 2 + Math.random() * (ceiling / 2)
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const done = () => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
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
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return undefined
  }
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
  readonly version: { value: number; modifyIndex: number } | undefined
  readonly nodes: ReadonlyMap<string, { record: NodeRecord; modifyIndex: number }>
}

export class Membership {
  readonly config: MembershipConfig
  private readonly client: ConsulClient
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
  private ringState: RingState | undefined
  private consul: ConsulState = { reachable: true, outages: 0, lastError: undefined }
  private outageSince = 0
  private readonly healthyListeners: ((healthy: ReadonlyMap<string, PeerAddresses>) => void)[] = []
  private readonly ringListeners: ((ring: RingState) => void)[] = []
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
        await this.register()
        break
      } catch (err) {
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
        (instances) => this.applyHealthy(instances),
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
   * Writes this node into the ring, under the ring lock: records the cluster's settings if this is
   * the first node, keeps the tokens a returning node already has (updating its addresses), gives a
   * new node `chooseTokens`' tokens, and bumps the ring version. Retries while Consul is unreachable
   * or the lock is busy, until it succeeds or `stop` is called.
   */
  async join(params: JoinParams): Promise<RingState> {
    positiveInt('vnodes', params.vnodes)
    positiveInt('replicationFactor', params.replicationFactor)
    for (let attempt = 1; ; attempt++) {
      if (this.stopped) throw new UnavailableError('cannot join the ring: membership is stopped')
      try {
        const ring = await this.joinOnce(params)
        this.succeeded()
        this.setRing(ring)
        return ring
      } catch (err) {
        if (this.stopped) throw new UnavailableError('cannot join the ring: membership is stopped', { cause: err })
        if (!(err instanceof ConsulError && err.outage) && !(err instanceof RaceError)) throw err
        if (err instanceof ConsulError) this.failed(err)
        await sleep(backoff(attempt, BACKOFF_MIN_MS, BACKOFF_MAX_MS), this.abort.signal)
      }
    }
  }

  // ---- registration and the TTL check ----

  private async register(): Promise<void> {
    const c = this.config
    const { host, port } = splitAddress('self.grpcAddress', c.self.grpcAddress)
    await this.client.registerService(
      {
        name: c.clusterName,
        id: this.serviceId,
        address: host,
        port,
        meta: { node_id: c.self.id, peer_address: c.self.peerAddress },
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
   * reset to 0 when it goes backwards (Consul's advice: the agent or its state was replaced). Errors
   * back off exponentially from 0.5 s to 10 s with jitter, never a tight loop.
   */
  private async watch<T>(
    what: string,
    query: (blocking: Blocking) => Promise<Indexed<T>>,
    apply: (value: T) => void,
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
        await sleep(backoff(failures, BACKOFF_MIN_MS, BACKOFF_MAX_MS), this.abort.signal)
      }
    }
  }

  private applyHealthy(instances: readonly ServiceInstance[]): void {
    const next = new Map<string, PeerAddresses>()
    for (const i of [...instances].sort((a, b) => (a.serviceId < b.serviceId ? -1 : 1))) {
      const id = i.meta.node_id
      const peerAddress = i.meta.peer_address
      if (!id || !peerAddress) continue
      next.set(id, { grpcAddress: joinAddress(i.address, i.port), peerAddress })
    }
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
    if (!keys.version || !keys.settings) {
      // Consul lost the ring (a dev agent restarted) or no node has joined yet: keep what we know.
      if (this.ringState && this.warnOnce(`missing:${pairs.length}`)) {
        this.logger.warn(
          { cluster: this.config.clusterName },
          'the ring is missing from Consul KV; keeping the last known ring',
        )
      }
      return
    }
    this.setRing(this.ringOf(keys))
  }

  /**
   * Takes a ring only when its version is newer: a watch answer started before this node's own join
   * can arrive after the join returned, and must not take the ring back.
   */
  private setRing(ring: RingState): void {
    if (this.ringState && ring.version <= this.ringState.version) return
    this.ringState = ring
    for (const l of this.ringListeners) l(ring)
  }

  private ringOf(keys: RingKeys): RingState {
    if (!keys.version || !keys.settings) throw bug('ringOf needs a version and settings')
    return {
      version: keys.version.value,
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
    const nodes = new Map<string, { record: NodeRecord; modifyIndex: number }>()
    for (const pair of pairs) {
      const invalid = () => {
        if (this.warnOnce(`${pair.key}@${pair.modifyIndex}`)) {
          this.logger.warn({ key: pair.key }, 'ignoring an invalid ring key in Consul KV')
        }
      }
      if (pair.key === `${p}settings`) {
        const value = parseSettings(pair.value)
        if (value) settings = { value, modifyIndex: pair.modifyIndex }
        else invalid()
      } else if (pair.key === `${p}ring-version`) {
        const value = /^\d+$/.test(pair.value) ? Number(pair.value) : Number.NaN
        if (Number.isSafeInteger(value)) version = { value, modifyIndex: pair.modifyIndex }
        else invalid()
      } else if (pair.key.startsWith(`${p}nodes/`)) {
        const record = parseNodeRecord(pair.value)
        if (record && record.id === pair.key.slice(`${p}nodes/`.length)) {
          nodes.set(record.id, { record, modifyIndex: pair.modifyIndex })
        } else {
          invalid()
        }
      }
    }
    return { settings, version, nodes }
  }

  // ---- the join ----

  private async joinOnce(params: JoinParams): Promise<RingState> {
    const c = this.config
    const signal = this.abort.signal
    const session = await this.client.createSession(
      {
        name: `${c.clusterName} ring lock for ${c.self.id}`,
        ttlMs: Math.max(MIN_SESSION_TTL_MS, c.ttlMs),
        lockDelayMs: LOCK_DELAY_MS,
      },
      signal,
    )
    try {
      await this.acquireLock(session)
      try {
        return await this.writeSelf(params)
      } finally {
        // Releasing before destroying the session leaves no lock-delay on the key.
        await this.client
          .kvPut(`${this.prefix}ring-lock`, '', { release: session })
          .catch((err: unknown) => this.logger.warn({ err: errorMessage(err) }, 'cannot release the ring lock'))
      }
    } finally {
      await this.client
        .destroySession(session)
        .catch((err: unknown) => this.logger.warn({ err: errorMessage(err) }, 'cannot destroy the ring lock session'))
    }
  }

  private async acquireLock(session: string): Promise<void> {
    const key = `${this.prefix}ring-lock`
    const value = JSON.stringify({ node: this.config.self.id })
    for (let attempt = 1; ; attempt++) {
      if (await this.client.kvPut(key, value, { acquire: session }, this.abort.signal)) return
      if (this.stopped) throw new UnavailableError('cannot join the ring: membership is stopped')
      await sleep(backoff(attempt, LOCK_RETRY_MIN_MS, LOCK_RETRY_MAX_MS), this.abort.signal)
      // Waiting for a slow holder may outlast the session's TTL.
      await this.client.renewSession(session, this.abort.signal)
    }
  }

  private async snapshot(): Promise<RingKeys> {
    const { value } = await this.client.kvList(this.prefix, { index: 0, waitMs: 0 }, this.abort.signal)
    return this.parseRing(value)
  }

  private async writeSelf(params: JoinParams): Promise<RingState> {
    const c = this.config
    const signal = this.abort.signal
    const keys = await this.snapshot()
    let settings = keys.settings?.value
    if (!settings) {
      // A CAS create that succeeds stored exactly these settings, so there is nothing to read back;
      // the final snapshot below still fails the join should they vanish.
      settings = { replicationFactor: params.replicationFactor, vnodes: params.vnodes }
      if (!(await this.client.kvPut(`${this.prefix}settings`, JSON.stringify(settings), { cas: 0 }, signal))) {
        throw new RaceError('the cluster settings were written by another node')
      }
    }
    if (settings.replicationFactor !== params.replicationFactor) {
      this.logger.warn(
        { configured: params.replicationFactor, cluster: settings.replicationFactor },
        "the replication factor differs from the cluster's; using the cluster's",
      )
    }
    if (settings.vnodes !== params.vnodes) {
      this.logger.warn(
        { configured: params.vnodes, cluster: settings.vnodes },
        "the number of vnodes differs from the cluster's; using the cluster's",
      )
    }

    const nodeKey = `${this.prefix}nodes/${c.self.id}`
    const own = keys.nodes.get(c.self.id)
    let changed = false
    if (own) {
      const r = own.record
      if (r.grpcAddress !== c.self.grpcAddress || r.peerAddress !== c.self.peerAddress) {
        const record: NodeRecord = { ...r, grpcAddress: c.self.grpcAddress, peerAddress: c.self.peerAddress }
        if (!(await this.client.kvPut(nodeKey, JSON.stringify(record), { cas: own.modifyIndex }, signal))) {
          throw new RaceError(`${nodeKey} changed while this node was updating it`)
        }
        this.logger.info({ node: c.self.id }, 'updated this node’s addresses in the ring')
        changed = true
      }
    } else {
      const existing = [...keys.nodes.values()].map((n) => ({ id: n.record.id, tokens: n.record.tokens }))
      const tokens = params.chooseTokens(existing, c.self.id, settings.vnodes)
      checkTokens(tokens, settings.vnodes, existing)
      const record: NodeRecord = {
        id: c.self.id,
        grpcAddress: c.self.grpcAddress,
        peerAddress: c.self.peerAddress,
        tokens,
        state: params.state ?? 'active',
      }
      if (!(await this.client.kvPut(nodeKey, JSON.stringify(record), { cas: 0 }, signal))) {
        throw new RaceError(`${nodeKey} was written by another node`)
      }
      changed = true
    }
    if (changed || !keys.version) await this.bumpVersion()
    const final = await this.snapshot()
    if (!final.version || !final.settings || !final.nodes.has(c.self.id)) {
      throw new RaceError('the ring changed while this node was joining')
    }
    return this.ringOf(final)
  }

  /** Bumps `<cluster>/ring-version` with CAS, retrying when another writer bumped it first. */
  private async bumpVersion(): Promise<void> {
    const key = `${this.prefix}ring-version`
    for (let attempt = 1; ; attempt++) {
      const { version } = await this.snapshot()
      const next = String((version?.value ?? 0) + 1)
      if (await this.client.kvPut(key, next, { cas: version?.modifyIndex ?? 0 }, this.abort.signal)) return
      if (this.stopped) throw new UnavailableError('cannot bump the ring version: membership is stopped')
      await sleep(backoff(attempt, LOCK_RETRY_MIN_MS, LOCK_RETRY_MAX_MS), this.abort.signal)
    }
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
      'Consul is unreachable; serving on the last known ring and healthy set',
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

/** Checks that `chooseTokens` gave `count` distinct uint32 tokens that no other member holds. */
function checkTokens(
  tokens: readonly number[],
  count: number,
  existing: readonly { id: string; tokens: readonly number[] }[],
): void {
  if (tokens.length !== count || !tokens.every(isToken) || new Set(tokens).size !== count) {
    throw bug(`chooseTokens must return ${count} distinct uint32 tokens`)
  }
  const taken = new Set(existing.flatMap((e) => e.tokens))
  const clash = tokens.find((t) => taken.has(t))
  if (clash !== undefined) throw bug(`chooseTokens returned token ${clash}, which another node holds`)
}
