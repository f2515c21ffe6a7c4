/**
 * The few Consul HTTP API calls membership and the leader election make, behind an interface, and
 * their implementation over the `consul` npm client. The interface keeps their logic apart from the
 * transport (a test may hand them another implementation); the implementation is the one place that
 * knows the client's quirks: its typings omit `baseUrl`, `index` and `wait`, it reports X-Consul-Index
 * only through a `ctx` with `includeResponse`, and it resolves a KV write that Consul refused
 * (`false`) as undefined.
 */
import { EventEmitter } from 'node:events'
import Consul from 'consul'
import { UnavailableError } from '../model/errors.js'

/** A blocking query: wait until the resource's index passes `index`, for at most `waitMs`. */
export interface Blocking {
  /** index is the X-Consul-Index of the caller's last answer; 0 answers at once. */
  readonly index: number
  readonly waitMs: number
}

/** An answer with the X-Consul-Index it came with. */
export interface Indexed<T> {
  readonly index: number
  readonly value: T
}

export interface ServiceInstance {
  readonly serviceId: string
  /** address is the service's address, else its node's. */
  readonly address: string
  readonly port: number
  readonly meta: Readonly<Record<string, string>>
}

export interface KvPair {
  readonly key: string
  /** value is the UTF-8 text of the value; empty for an empty value. */
  readonly value: string
  readonly modifyIndex: number
  /** lockIndex counts the times a session acquired the key; 0 for a key never locked. */
  readonly lockIndex: number
  /** session is the ID of the session that holds the key's lock; absent when nobody holds it. */
  readonly session?: string
}

export interface ServiceRegistration {
  readonly name: string
  readonly id: string
  readonly address: string
  readonly port: number
  readonly meta: Readonly<Record<string, string>>
  readonly ttlMs: number
  readonly deregisterCriticalAfterMs: number
}

export interface KvWrite {
  /** cas is the ModifyIndex the key must have; 0 means the key must not exist. */
  readonly cas?: number
  readonly acquire?: string
  readonly release?: string
}

export interface ConsulClient {
  registerService(registration: ServiceRegistration, signal?: AbortSignal): Promise<void>
  deregisterService(id: string, signal?: AbortSignal): Promise<void>
  passCheck(checkId: string, signal?: AbortSignal): Promise<void>
  /** The instances of `service` whose checks all pass. */
  passingInstances(service: string, blocking: Blocking, signal?: AbortSignal): Promise<Indexed<ServiceInstance[]>>
  /** Every key under `prefix`, in key order. */
  kvList(prefix: string, blocking: Blocking, signal?: AbortSignal): Promise<Indexed<KvPair[]>>
  /** The key, read consistently (through the Raft leader); undefined when it does not exist. */
  kvGet(key: string, signal?: AbortSignal): Promise<KvPair | undefined>
  /** Whether Consul made the write; false when a cas, acquire or release condition failed. */
  kvPut(key: string, value: string, write: KvWrite, signal?: AbortSignal): Promise<boolean>
  /**
   * Deletes one key. Whether Consul deleted it or found it already gone; false when `cas` did not match
   * an existing key's ModifyIndex (Consul deletes nothing for a cas of 0).
   */
  kvDelete(key: string, write: { cas?: number }, signal?: AbortSignal): Promise<boolean>
  createSession(session: { name: string; ttlMs: number; lockDelayMs: number }, signal?: AbortSignal): Promise<string>
  renewSession(id: string, signal?: AbortSignal): Promise<void>
  destroySession(id: string, signal?: AbortSignal): Promise<void>
  /** Closes the client's pooled connections. */
  close(): void
}

/**
 * A Consul call failed. `statusCode` is Consul's HTTP status; undefined when no answer came (refused,
 * reset, timed out). Either that or a 5xx means Consul cannot serve now.
 */
export class ConsulError extends UnavailableError {
  readonly statusCode: number | undefined

  constructor(message: string, statusCode: number | undefined, options?: ErrorOptions) {
    super(message, options)
    this.name = 'ConsulError'
    this.statusCode = statusCode
  }

  /** Whether the error means Consul is down or unreachable, rather than that it refused the request. */
  get outage(): boolean {
    return this.statusCode === undefined || this.statusCode >= 500
  }
}

/** Formats milliseconds as a Go duration, the form Consul's durations take. */
function goDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${Math.ceil(ms)}ms`
}

interface RawResponse {
  readonly headers: Record<string, string | string[] | undefined>
}

interface CallContext extends EventEmitter {
  includeResponse: true
}

/** The options every call takes; built as a variable, as the client's typings omit some of them. */
interface CallOptions {
  ctx: CallContext
  timeout: number
  index?: string
  wait?: string
}

function asRecord(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {}
}

/** One entry of a KV read, as the client decodes it (Value already base64-decoded); undefined if malformed. */
function kvPairOf(raw: unknown): KvPair | undefined {
  const e = asRecord(raw)
  if (typeof e.Key !== 'string' || typeof e.ModifyIndex !== 'number') return undefined
  return {
    key: e.Key,
    value: typeof e.Value === 'string' ? e.Value : '',
    modifyIndex: e.ModifyIndex,
    lockIndex: typeof e.LockIndex === 'number' ? e.LockIndex : 0,
    ...(typeof e.Session === 'string' && e.Session !== '' ? { session: e.Session } : {}),
  }
}

function stringRecord(value: unknown): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(asRecord(value))) if (typeof v === 'string') out[k] = v
  return out
}

/** The `consul` npm client behind {@link ConsulClient}. */
export class NpmConsulClient implements ConsulClient {
  private readonly consul: Consul

  /**
   * @param url the agent's address, `http(s)://host:port`, without a path.
   * @param requestTimeoutMs how long a call other than a blocking query may take.
   */
  constructor(
    url: string,
    token: string | undefined,
    private readonly requestTimeoutMs: number,
  ) {
    const options = { baseUrl: `${url}/v1`, defaults: token ? { token } : {} }
    this.consul = new Consul(options)
  }

  close(): void {
    this.consul.destroy()
  }

  /**
   * Runs one call, passing it a context that returns the raw response and cancels the request when
   * `signal` aborts, and turns its failures into {@link ConsulError}.
   */
  private async call(
    what: string,
    run: (options: CallOptions) => Promise<unknown>,
    signal: AbortSignal | undefined,
    blocking?: Blocking,
  ): Promise<{ index: number; body: unknown }> {
    const ctx = Object.assign(new EventEmitter(), { includeResponse: true as const })
    const options: CallOptions = { ctx, timeout: this.requestTimeoutMs }
    if (blocking && blocking.index > 0) {
      options.index = String(blocking.index)
      options.wait = goDuration(blocking.waitMs)
      // Consul adds up to wait/16 of jitter to the wait; allow for that and for a slow answer.
      options.timeout = blocking.waitMs + blocking.waitMs / 16 + this.requestTimeoutMs
    }
    const cancel = () => ctx.emit('cancel')
    signal?.addEventListener('abort', cancel, { once: true })
    try {
      if (signal?.aborted) throw new ConsulError(`cannot ${what}: cancelled`, undefined)
      const result = await run(options)
      const [res, body] = Array.isArray(result) ? (result as [RawResponse | undefined, unknown]) : [undefined, result]
      const header = res?.headers['x-consul-index']
      return { index: Number(Array.isArray(header) ? header[0] : header) || 0, body }
    } catch (err) {
      if (err instanceof ConsulError) throw err
      const status = asRecord(err).statusCode
      const message = err instanceof Error ? err.message : String(err)
      throw new ConsulError(`cannot ${what}: ${message}`, typeof status === 'number' ? status : undefined, {
        cause: err,
      })
    } finally {
      signal?.removeEventListener('abort', cancel)
    }
  }

  async registerService(r: ServiceRegistration, signal?: AbortSignal): Promise<void> {
    const check = {
      name: `${r.name} TTL`,
      ttl: goDuration(r.ttlMs),
      deregistercriticalserviceafter: goDuration(r.deregisterCriticalAfterMs),
      // The typings require a timeout, which Consul ignores for TTL checks.
      timeout: goDuration(r.ttlMs),
    }
    const registration = { name: r.name, id: r.id, address: r.address, port: r.port, meta: { ...r.meta }, check }
    await this.call(
      `register service ${r.id}`,
      (o) => this.consul.agent.service.register({ ...registration, ...o }),
      signal,
    )
  }

  async deregisterService(id: string, signal?: AbortSignal): Promise<void> {
    await this.call(`deregister service ${id}`, (o) => this.consul.agent.service.deregister({ id, ...o }), signal)
  }

  async passCheck(checkId: string, signal?: AbortSignal): Promise<void> {
    await this.call(`pass check ${checkId}`, (o) => this.consul.agent.check.pass({ id: checkId, ...o }), signal)
  }

  async passingInstances(
    service: string,
    blocking: Blocking,
    signal?: AbortSignal,
  ): Promise<Indexed<ServiceInstance[]>> {
    const { index, body } = await this.call(
      `read the healthy instances of ${service}`,
      (o) => this.consul.health.service({ service, passing: true, ...o }),
      signal,
      blocking,
    )
    const value: ServiceInstance[] = []
    for (const raw of Array.isArray(body) ? body : []) {
      const entry = asRecord(raw)
      const svc = asRecord(entry.Service)
      const node = asRecord(entry.Node)
      if (typeof svc.ID !== 'string' || typeof svc.Port !== 'number') continue
      const address = typeof svc.Address === 'string' && svc.Address !== '' ? svc.Address : node.Address
      value.push({
        serviceId: svc.ID,
        address: typeof address === 'string' ? address : '',
        port: svc.Port,
        meta: stringRecord(svc.Meta),
      })
    }
    return { index, value }
  }

  async kvList(prefix: string, blocking: Blocking, signal?: AbortSignal): Promise<Indexed<KvPair[]>> {
    const { index, body } = await this.call(
      `read the keys under ${prefix}`,
      (o) => this.consul.kv.get({ key: prefix, recurse: true, ...o }),
      signal,
      blocking,
    )
    const value: KvPair[] = []
    for (const raw of Array.isArray(body) ? body : []) {
      const pair = kvPairOf(raw)
      if (pair) value.push(pair)
    }
    return { index, value }
  }

  async kvGet(key: string, signal?: AbortSignal): Promise<KvPair | undefined> {
    // The client answers a 404 with an undefined body, and a found key with its one entry. A
    // consistent read, as a caller checking who holds a lock must not get a stale follower's answer.
    const read = { key, consistent: true }
    const { body } = await this.call(`read ${key}`, (o) => this.consul.kv.get({ ...read, ...o }), signal)
    return body === undefined || body === null ? undefined : kvPairOf(body)
  }

  async kvPut(key: string, value: string, write: KvWrite, signal?: AbortSignal): Promise<boolean> {
    const { body } = await this.call(`write ${key}`, (o) => this.consul.kv.set({ key, value, ...write, ...o }), signal)
    return body === true
  }

  async kvDelete(key: string, write: { cas?: number }, signal?: AbortSignal): Promise<boolean> {
    // The client sends `cas` whenever the property exists, even when it is undefined.
    const cas = write.cas !== undefined ? { cas: write.cas } : {}
    const { body } = await this.call(`delete ${key}`, (o) => this.consul.kv.del({ key, ...cas, ...o }), signal)
    return body === true
  }

  async createSession(s: { name: string; ttlMs: number; lockDelayMs: number }, signal?: AbortSignal): Promise<string> {
    const { body } = await this.call(
      `create session ${s.name}`,
      (o) =>
        this.consul.session.create({
          name: s.name,
          ttl: goDuration(s.ttlMs),
          lockdelay: goDuration(s.lockDelayMs),
          behavior: 'release',
          ...o,
        }),
      signal,
    )
    const id = asRecord(body).ID
    if (typeof id !== 'string') throw new ConsulError(`cannot create session ${s.name}: no ID in the answer`, 500)
    return id
  }

  async renewSession(id: string, signal?: AbortSignal): Promise<void> {
    await this.call(`renew session ${id}`, (o) => this.consul.session.renew({ id, ...o }), signal)
  }

  async destroySession(id: string, signal?: AbortSignal): Promise<void> {
    await this.call(`destroy session ${id}`, (o) => this.consul.session.destroy({ id, ...o }), signal)
  }
}
