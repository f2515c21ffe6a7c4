/**
 * The HTTP listener beside the gRPC port. It serves monitoring, open to anyone who reaches it:
 * `/metrics` (Prometheus text format), `/healthz` (liveness) and `/readyz` (readiness: 503 before
 * start and while shutting down). Given an engine, it also speaks the protocols other tools already
 * send: Prometheus remote write and remote read (`/api/v1/write`, `/api/v1/read`), InfluxDB line
 * protocol (`/write`, `/api/v2/write`) and, given a query API, the Prometheus HTTP query API (the
 * other paths under `/api/v1/`).
 *
 * Those endpoints read and write data, so they follow gRPC's rules: bearer tokens with the same
 * roles (write endpoints need write, read endpoints read), TLS with the same certificate, and the
 * refusal to serve a non-loopback address without both unless --insecure is given. Plain node:http
 * or node:https, because every one of these clients speaks HTTP/1.1.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { availableParallelism } from 'node:os'
import type { StorageEngine } from '../engine/storage-engine.js'
import { loadTokens, ROLES, type Role, roleOf, type TokenTable } from './auth.js'
import {
  errorStatus,
  type HttpAnswer,
  type IngestDecoding,
  lineProtocolWrite,
  remoteRead,
  remoteWrite,
} from './http-ingest.js'
import { type BodyChunks, joinChunks } from './ingest-decode.js'
import { IngestPool, InPlaceDecoder } from './ingest-pool.js'
import { PrefixCache, parseLinePrecision } from './line-protocol.js'
import type { ServerMetrics } from './metrics.js'
import { BodyError } from './prom-remote.js'
import { readTlsFiles, type TlsOptions } from './tls.js'
import { checkCanListen, checkExposure, positive, splitHostPort } from './transport.js'
import { WriteGate } from './write-gate.js'

export const HTTP_DEFAULTS = {
  /**
   * The largest request body read, compressed or not, and the largest a compressed body may
   * declare or inflate to: 64 MiB holds far more than one Prometheus remote-write batch (a few
   * thousand samples) or one Telegraf flush, and bounds the memory one request can take.
   */
  maxBodyBytes: 64 * 1024 * 1024,
  /**
   * How long a write request may wait for a slot: Prometheus gives up on a remote write after 30 s
   * (remote_timeout) and retries; an answer well before that lets it back off instead.
   */
  writeQueueTimeoutMs: 10_000,
  /**
   * How long an idle keep-alive connection stays open. Node's default, 5 s, is Prometheus' batch
   * send deadline: a quiet remote-write queue sends every 5 s, and a request that crosses the
   * server's close on the wire fails and is retried with a warning. 65 s outlasts that and the
   * 60 s idle timeout of common load balancers in front, as VictoriaMetrics' one minute does.
   */
  keepAliveMs: 65_000,
  /**
   * How long a request body may go without a byte before the request is answered 408 and its
   * connection closed. A stalled or half-open sender otherwise holds its write slot until Node's
   * requestTimeout (5 minutes), and a few of them hold every slot.
   */
  bodyIdleTimeoutMs: 10_000,
} as const

/** Write requests served at once when not set: twice the cores, at least four, as VictoriaMetrics does for inserts. */
function defaultMaxConcurrentWrites(): number {
  return Math.max(4, 2 * availableParallelism())
}

/** What the listener logs with; the process logger fits. */
export interface HttpLogger {
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

/** The Prometheus query API as the listener calls it (src/server/promql/api.ts implements it). */
export interface QueryApi {
  /** undefined: not one of its paths. The body is JSON. */
  handle(
    path: string,
    params: URLSearchParams,
    signal: AbortSignal,
  ): Promise<{ status: number; body: string } | undefined>
}

export interface HttpSettings {
  /** host:port; port 0 picks a free one. */
  readonly listen: string
  /** Bearer tokens; absent: no authentication, allowed only on loopback unless insecure. */
  readonly tokensFile?: string
  /** Serve HTTPS with this certificate (and require client certificates with its client CA). */
  readonly tls?: TlsOptions
  /** Serve a non-loopback address without TLS and tokens. */
  readonly insecure?: boolean
  /** The largest request body, before and after decompression. Default 64 MiB. */
  readonly maxBodyBytes?: number
  /** Write requests read, decoded and written at once; more wait. Default: twice the cores, at least 4. */
  readonly maxConcurrentWrites?: number
  /** How long a write request waits for a slot before a 503, in ms. Default 10 s. */
  readonly writeQueueTimeoutMs?: number
  /** How long a request body may go without a byte before a 408, in ms. Default 10 s. */
  readonly bodyIdleTimeoutMs?: number
  /**
   * Worker threads that decode write bodies, so that the event loop only writes them; 0 decodes
   * on the event loop. Default: one fewer than the cores, at least one.
   */
  readonly ingestWorkers?: number
  readonly logger: HttpLogger
}

export interface HttpServing {
  readonly metrics: ServerMetrics
  /** Whether the node serves calls now; /readyz answers 200 only then. */
  readonly ready: () => boolean
  /** The engine behind the write and read endpoints; absent: monitoring only. */
  readonly engine?: StorageEngine
  /** The Prometheus query API; absent: its paths answer 404. */
  readonly queryApi?: QueryApi
  /** The clock line protocol takes for a line without a timestamp; default Date.now. */
  readonly now?: () => number
  /** The points a remote-read request may return in all its queries together: max_points_per_query. */
  readonly maxReadPoints: number
}

export interface RunningHttpEndpoint {
  /** host:port as bound. */
  readonly address: string
  /** http or https. */
  readonly scheme: 'http' | 'https'
  close(): Promise<void>
}

export interface PreparedHttpEndpoint {
  start(serving: HttpServing): Promise<RunningHttpEndpoint>
}

type Need = 'open' | Role

interface Route {
  /** The path label of the request counter. */
  readonly label: string
  readonly methods: readonly string[]
  readonly need: Need
  /** A write: it takes a slot of the write gate before its body is read. */
  readonly write?: true
  handle(ctx: RequestContext): Promise<HttpAnswer>
  /** A refusal in the shape the route's clients read. */
  fail(refusal: Refusal): HttpAnswer
}

interface RequestContext {
  readonly req: IncomingMessage
  readonly path: string
  readonly query: URLSearchParams
  readonly signal: AbortSignal
}

const MONITORING_METHODS = ['GET', 'HEAD']

function text(status: number, body: string, headers: Record<string, string> = {}): HttpAnswer {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8', ...headers }, body: `${body}\n` }
}

function json(status: number, value: unknown, headers: Record<string, string> = {}): HttpAnswer {
  return { status, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(value) }
}

function textFailure(r: Refusal): HttpAnswer {
  return text(r.status, r.message, r.headers)
}

/** InfluxDB's error shape, which Telegraf and the InfluxDB clients print: `{"code", "message"}` (v2), `{"error"}` (v1). */
function influxFailure(r: Refusal): HttpAnswer {
  return json(r.status, { code: influxCode(r.status), message: r.message, error: r.message }, r.headers)
}

function influxCode(status: number): string {
  // InfluxDB's own codes: EUnauthorized for a missing or unknown token, EForbidden for a weak one.
  if (status === 401) return 'unauthorized'
  if (status === 403) return 'forbidden'
  if (status === 413) return 'request too large'
  if (status < 500) return 'invalid'
  return status === 503 ? 'unavailable' : 'internal error'
}

/** Prometheus' API error shape: `{"status": "error", "errorType", "error"}`. */
function prometheusFailure(r: Refusal): HttpAnswer {
  const errorType =
    r.status === 401 || r.status === 403
      ? 'unauthorized'
      : r.status === 404
        ? 'not_found'
        : r.status === 503
          ? 'unavailable'
          : r.status < 500
            ? 'bad_data'
            : 'internal'
  return json(r.status, { status: 'error', errorType, error: r.message }, r.headers)
}

/**
 * Checks the settings and reads the files they name before the engine opens, as prepareServer does
 * for gRPC: an exposed address or an unreadable file refuses the start with the data folder untouched.
 */
export async function prepareHttpEndpoint(settings: HttpSettings): Promise<PreparedHttpEndpoint> {
  const { host: bracketed, port } = splitHostPort(settings.listen)
  const body: BodyLimits = {
    maxBytes: positive('maxBodyBytes', settings.maxBodyBytes ?? HTTP_DEFAULTS.maxBodyBytes),
    idleMs: positive('bodyIdleTimeoutMs', settings.bodyIdleTimeoutMs ?? HTTP_DEFAULTS.bodyIdleTimeoutMs),
  }
  const writeSlots = {
    maxConcurrent: positive('maxConcurrentWrites', settings.maxConcurrentWrites ?? defaultMaxConcurrentWrites()),
    queueTimeoutMs: positive('writeQueueTimeoutMs', settings.writeQueueTimeoutMs ?? HTTP_DEFAULTS.writeQueueTimeoutMs),
  }
  const ingestWorkers = settings.ingestWorkers ?? Math.max(1, availableParallelism() - 1)
  if (!Number.isInteger(ingestWorkers) || ingestWorkers < 0) {
    throw new Error(`ingestWorkers must be a whole number of workers, got ${ingestWorkers}`)
  }
  const warning = checkExposure({
    host: bracketed,
    listen: settings.listen,
    tls: settings.tls !== undefined,
    tokens: settings.tokensFile !== undefined,
    insecure: settings.insecure ?? false,
  })
  if (warning !== undefined) settings.logger.warn({ listen: settings.listen }, `HTTP: ${warning}`)
  const tokens = settings.tokensFile === undefined ? undefined : await loadTokens(settings.tokensFile)
  const pem = settings.tls === undefined ? undefined : await readTlsFiles(settings.tls)
  await checkCanListen(settings.listen, 'HTTP')
  const host = bracketed.replace(/^\[(.*)\]$/, '$1')
  return {
    start: (serving) => listen({ settings, host, port, body, writeSlots, ingestWorkers, tokens, pem, serving }),
  }
}

interface Listening {
  readonly settings: HttpSettings
  readonly host: string
  readonly port: number
  readonly body: BodyLimits
  readonly writeSlots: { readonly maxConcurrent: number; readonly queueTimeoutMs: number }
  readonly ingestWorkers: number
  readonly tokens: TokenTable | undefined
  readonly pem: Awaited<ReturnType<typeof readTlsFiles>> | undefined
  readonly serving: HttpServing
}

interface Refusal {
  readonly status: number
  readonly message: string
  readonly headers?: Record<string, string>
}

/** The refusal for a request's Authorization header, or undefined when it may go on. */
function authorize(tokens: TokenTable | undefined, need: Need, header: string | undefined): Refusal | undefined {
  if (need === 'open' || tokens === undefined) return undefined
  const headers = { 'www-authenticate': 'Bearer realm="v3"' }
  // InfluxDB v2 clients (Telegraf's outputs.influxdb_v2) send "Token <t>"; everyone else "Bearer <t>".
  const match = header === undefined ? null : /^(?:Bearer|Token) +(\S+)\s*$/i.exec(header)
  if (match?.[1] === undefined) {
    return { status: 401, message: 'missing "Authorization: Bearer <token>" header', headers }
  }
  const role = roleOf(tokens, match[1])
  if (role === undefined) return { status: 401, message: 'unknown bearer token', headers }
  if (ROLES.indexOf(role) < ROLES.indexOf(need)) {
    return { status: 403, message: `this endpoint needs the ${need} role; this token has ${role}` }
  }
  return undefined
}

/**
 * A body refused for its size is read to its end and dropped, up to this many times the limit,
 * before the 413: the answer closes the connection, and one closed while the client still sends
 * makes it see a reset instead of the answer.
 */
const DRAIN_FACTOR = 4

/**
 * The status counted for a request whose sender went away before its body ended, as nginx and
 * Prometheus count it: no answer reaches anyone, and it is not the server's error.
 */
const CLIENT_CLOSED = 499

/** The Content-Encoding each kind of body may come with; identity (none) always. */
type BodyEncoding = 'gzip' | 'snappy' | 'identity'

/**
 * Reads the whole body, refusing one larger than max (by its Content-Length before reading, else
 * as it arrives) and one in an encoding not accepted; a gzip body is inflated by its decoder, bounded
 * by max too. A refused body up to DRAIN_FACTOR times the limit is read to its end and dropped
 * before the 413 (see DRAIN_FACTOR); a larger one is drained, not read, after it.
 */
async function readBody(req: IncomingMessage, limits: BodyLimits, accepted: BodyEncoding): Promise<Buffer> {
  return joinChunks(await readChunks(req, limits, accepted))
}

/** What a body may be: at most maxBytes, with no pause longer than idleMs between its bytes. */
interface BodyLimits {
  readonly maxBytes: number
  readonly idleMs: number
}

/** As readBody, the body in the chunks it came in: an ingest worker joins them, not the main thread. */
async function readChunks(req: IncomingMessage, limits: BodyLimits, accepted: BodyEncoding): Promise<BodyChunks> {
  const max = limits.maxBytes
  const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase()
  if (encoding !== 'identity' && encoding !== accepted) {
    throw new BodyError(415, `Content-Encoding ${encoding} is not accepted here`)
  }
  const declared = Number(req.headers['content-length'])
  const tooLarge = (): BodyError =>
    new BodyError(
      413,
      declared > max
        ? `the body is ${declared} bytes, more than the limit of ${max}`
        : `the body is more than the limit of ${max} bytes`,
    )
  if (declared > DRAIN_FACTOR * max) throw tooLarge()
  return new Promise<BodyChunks>((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    // Refused by its Content-Length, or once more than max has come: the rest is dropped as it
    // comes, up to DRAIN_FACTOR times the limit, and refused at its end; past that, at once, and
    // drained, not read, until the connection closes.
    const refused = (): boolean => declared > max || size > max
    const stop = (): void => {
      clearTimeout(idle)
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
    }
    const onIdle = (): void => {
      stop()
      reject(new BodyError(408, `no byte of the body came for ${limits.idleMs / 1000} s; send it again`))
    }
    const idle = setTimeout(onIdle, limits.idleMs)
    const onData = (chunk: Buffer): void => {
      idle.refresh()
      size += chunk.length
      if (!refused()) {
        chunks.push(chunk)
        return
      }
      chunks.length = 0
      if (size <= DRAIN_FACTOR * max) return
      stop()
      req.resume()
      reject(tooLarge())
    }
    const onEnd = (): void => {
      stop()
      if (refused()) reject(tooLarge())
      else resolve({ chunks, size })
    }
    // The sender closed the connection before its body ended: nobody is left to answer.
    const onError = (err: Error): void => {
      stop()
      reject(new BodyError(CLIENT_CLOSED, `the client closed the connection before the body ended (${err.message})`))
    }
    req.on('data', onData)
    req.once('end', onEnd)
    req.once('error', onError)
  })
}

/**
 * Refuses with 415 a body that is not the protobuf message `message`: Remote-Write 2.0 senders name
 * theirs in the Content-Type (`application/x-protobuf;proto=io.prometheus.write.v2.Request`), and
 * the 2.0 specification asks a receiver without it for a 415. Read as a 1.0 request, a 2.0 one
 * would decode to no series and be acknowledged with nothing stored. A missing Content-Type is
 * taken as the 1.0 message.
 */
function checkProtobufType(req: IncomingMessage, message: string): void {
  const header = req.headers['content-type']
  if (header === undefined) return
  const [type, ...params] = header.split(';').map((p) => p.trim())
  const proto = params.find((p) => /^proto=/i.test(p))?.slice('proto='.length)
  if (type?.toLowerCase() === 'application/x-protobuf' && (proto === undefined || proto === message)) return
  throw new BodyError(
    415,
    `Content-Type ${JSON.stringify(header)} is not accepted here: send application/x-protobuf (proto=${message})`,
  )
}

function routes(l: Listening, pool: IngestPool | undefined): Map<string, Route> {
  const { serving, body: bodyLimits, settings } = l
  const maxBodyBytes = bodyLimits.maxBytes
  const table = new Map<string, Route>()
  const monitoring = (path: string, handle: () => Promise<HttpAnswer>) =>
    table.set(path, { label: path, methods: MONITORING_METHODS, need: 'open', handle, fail: textFailure })
  monitoring('/healthz', async () => text(200, 'ok'))
  monitoring('/readyz', async () => (serving.ready() ? text(200, 'ready') : text(503, 'not ready')))
  monitoring('/metrics', async () => {
    try {
      const body = await serving.metrics.render()
      return { status: 200, headers: { 'content-type': serving.metrics.contentType }, body }
    } catch (err) {
      settings.logger.error({ err }, 'cannot render metrics')
      return text(503, 'metrics unavailable')
    }
  })
  const engine = serving.engine
  if (engine === undefined) return table
  const now = serving.now ?? Date.now
  const maxReadPoints = serving.maxReadPoints
  const decoding: IngestDecoding = {
    inPlace: new InPlaceDecoder(),
    prefixes: new PrefixCache(),
    ...(pool === undefined ? {} : { pool }),
  }

  table.set('/api/v1/write', {
    label: '/api/v1/write',
    methods: ['POST'],
    need: 'write',
    write: true,
    fail: textFailure,
    async handle({ req }) {
      checkProtobufType(req, 'prometheus.WriteRequest')
      const body = await readChunks(req, bodyLimits, 'snappy')
      const { answer, samples } = await remoteWrite(engine, body, maxBodyBytes, decoding)
      serving.metrics.httpSamples('prometheus_remote_write', samples)
      return answer
    },
  })
  table.set('/api/v1/read', {
    label: '/api/v1/read',
    methods: ['POST'],
    need: 'read',
    fail: textFailure,
    handle: async ({ req, signal }) => {
      checkProtobufType(req, 'prometheus.ReadRequest')
      return remoteRead(engine, await readBody(req, bodyLimits, 'snappy'), maxBodyBytes, maxReadPoints, signal)
    },
  })
  // Line protocol: v1 takes n, u, ms, s, m and h; v2 ns, us, ms and s. Both default to nanoseconds.
  const influx = (path: string, precisions: ReadonlySet<string>) =>
    table.set(path, {
      label: path,
      methods: ['POST'],
      need: 'write',
      write: true,
      fail: influxFailure,
      async handle({ req, query }) {
        const given = query.get('precision')
        const precision = given === null || precisions.has(given) ? parseLinePrecision(given) : undefined
        if (precision === undefined) {
          throw new BodyError(
            400,
            `precision must be one of ${[...precisions].join(', ')}, got ${JSON.stringify(given)}`,
          )
        }
        const received = now()
        const body = await readChunks(req, bodyLimits, 'gzip')
        const gzip = (req.headers['content-encoding'] ?? '').toLowerCase() === 'gzip'
        const { answer, samples } = await lineProtocolWrite(
          engine,
          body,
          gzip,
          precision,
          received,
          maxBodyBytes,
          decoding,
        )
        serving.metrics.httpSamples('influx_line_protocol', samples)
        return answer
      },
    })
  influx('/write', new Set(['n', 'ns', 'u', 'us', 'ms', 's', 'm', 'h']))
  influx('/api/v2/write', new Set(['ns', 'us', 'ms', 's']))
  return table
}

/**
 * The query API's route for a path under /api/v1/: GET and POST, a form body merged with the query
 * string (as Prometheus does, so Grafana may send either), JSON out.
 */
function queryApiRoute(api: QueryApi, bodyLimits: BodyLimits): Route {
  return {
    label: '/api/v1/*',
    methods: ['GET', 'POST'],
    need: 'read',
    fail: prometheusFailure,
    async handle({ req, path, query, signal }) {
      // The form body's values come first, then the query string's: a parameter in both takes the
      // body's, as Go's ParseForm gives it to Prometheus.
      const params = new URLSearchParams()
      const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase()
      if (req.method === 'POST' && type === 'application/x-www-form-urlencoded') {
        const body = await readBody(req, bodyLimits, 'identity')
        for (const [k, v] of new URLSearchParams(body.toString('utf8'))) params.append(k, v)
      }
      for (const [k, v] of new URLSearchParams(query)) params.append(k, v)
      const answer = await api.handle(path, params, signal)
      if (answer === undefined)
        return json(404, { status: 'error', errorType: 'not_found', error: `unknown path ${path}` })
      return { status: answer.status, headers: { 'content-type': 'application/json' }, body: answer.body }
    },
  }
}

/** The query API's paths, as labels of the request counter. */
const QUERY_API_PATHS = new Set([
  '/api/v1/query',
  '/api/v1/query_range',
  '/api/v1/series',
  '/api/v1/labels',
  '/api/v1/status/buildinfo',
  '/api/v1/metadata',
  '/api/v1/query_exemplars',
])

/**
 * The label of a query API path in the request counter: label names are cut out and unknown paths
 * share one label, so that no client can grow the counter's series without bound.
 */
function queryApiLabel(path: string): string {
  if (QUERY_API_PATHS.has(path)) return path
  return /^\/api\/v1\/label\/[^/]+\/values$/.test(path) ? '/api/v1/label/:name/values' : '/other'
}

async function listen(l: Listening): Promise<RunningHttpEndpoint> {
  const { settings, tokens, serving } = l
  const gate = new WriteGate(l.writeSlots.maxConcurrent, l.writeSlots.queueTimeoutMs, (inProgress, waiting) =>
    serving.metrics.httpWrites(inProgress, waiting),
  )
  // Only the write endpoints decode in workers, and they exist only with an engine.
  const pool =
    serving.engine === undefined || l.ingestWorkers === 0
      ? undefined
      : new IngestPool(l.ingestWorkers, {
          onError: (err) => settings.logger.error({ err }, 'an HTTP ingest worker died; starting another'),
        })
  const table = routes(l, pool)
  const api = serving.queryApi === undefined ? undefined : queryApiRoute(serving.queryApi, l.body)

  const respond = (req: IncomingMessage, res: ServerResponse, label: string, answer: HttpAnswer): void => {
    serving.metrics.httpRequest(label, answer.status)
    if (res.destroyed) return
    res.writeHead(answer.status, answer.headers)
    res.end(req.method === 'HEAD' ? undefined : answer.body)
  }

  /** A write, once the gate gives it a slot; a 503 that asks to retry when none came in time. */
  const gated = async (route: Route, ctx: RequestContext): Promise<HttpAnswer> => {
    if (!(await gate.enter(ctx.signal))) {
      return route.fail({
        status: 503,
        message: `the server is busy: all ${gate.maxConcurrent} write slots (--http-max-concurrent-writes) stayed taken while this write waited ${gate.queueTimeoutMs} ms for one; retry later`,
        headers: { 'retry-after': '1' },
      })
    }
    try {
      return await route.handle(ctx)
    } finally {
      gate.leave()
    }
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const path = q < 0 ? url : url.slice(0, q)
    const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1))
    let route = table.get(path)
    if (route === undefined && api !== undefined && path.startsWith('/api/v1/')) route = api
    if (route === undefined) {
      respond(req, res, '/other', text(404, 'not found: try /metrics, /healthz or /readyz'))
      return
    }
    const found = route
    const label = found === api ? queryApiLabel(path) : found.label
    if (!found.methods.includes(req.method ?? '')) {
      const allow = found.methods.join(', ')
      respond(req, res, label, found.fail({ status: 405, message: `${path} takes ${allow}`, headers: { allow } }))
      return
    }
    const refusal = authorize(tokens, found.need, req.headers.authorization)
    if (refusal !== undefined) {
      respond(req, res, label, found.fail(refusal))
      return
    }
    // A client that goes away before its answer aborts the work done for it (a long query).
    const aborter = new AbortController()
    res.once('close', () => {
      if (!res.writableFinished) aborter.abort()
    })
    const ctx = { req, path, query, signal: aborter.signal }
    ;(found.write === true ? gated(found, ctx) : found.handle(ctx)).then(
      (answer) => respond(req, res, label, answer),
      (err: unknown) => {
        const { status, message } = errorStatus(err, settings.logger, path)
        // A body refused before it was read whole leaves the rest on the connection: close it.
        if (status === 413 || status === 408) res.setHeader('connection', 'close')
        respond(req, res, label, found.fail({ status, message }))
      },
    )
  }

  const server: Server =
    l.pem === undefined
      ? createHttpServer(handler)
      : createHttpsServer(
          {
            cert: l.pem.cert,
            key: l.pem.key,
            ...(l.pem.clientCa === null ? {} : { ca: l.pem.clientCa, requestCert: true, rejectUnauthorized: true }),
          },
          handler,
        )
  server.keepAliveTimeout = HTTP_DEFAULTS.keepAliveMs
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new Error(`cannot listen on ${settings.listen} for HTTP: ${err.message}`)))
      server.listen(l.port, l.host, resolve)
    })
  } catch (err) {
    await pool?.close()
    throw err
  }
  const bound = server.address()
  const boundPort = typeof bound === 'object' && bound !== null ? bound.port : l.port
  const address = `${l.host.includes(':') ? `[${l.host}]` : l.host}:${boundPort}`
  return {
    address,
    scheme: l.pem === undefined ? 'http' : 'https',
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        // Scrapers keep connections alive; without this close() would wait for them to time out.
        server.closeAllConnections()
      })
      await pool?.close()
    },
  }
}

/** Prepares and starts in one step, for callers that have the engine already. */
export async function startHttpEndpoint(settings: HttpSettings, serving: HttpServing): Promise<RunningHttpEndpoint> {
  return (await prepareHttpEndpoint(settings)).start(serving)
}
