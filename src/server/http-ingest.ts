/**
 * What the HTTP endpoints of other ecosystems do with a request body once the listener has read
 * it: Prometheus remote write and remote read, InfluxDB line protocol. Each goes through the
 * StorageEngine interface, so it works alike on one node and on a cluster; each write is one
 * engine.write, so a request the engine refuses stores nothing, and a write is answered only once
 * the engine has made it durable.
 */
import { gunzip } from 'node:zlib'
import type { StorageEngine } from '../engine/storage-engine.js'
import { DeadlineError, type FieldViolation, LimitError, UnavailableError, ValidationError } from '../model/errors.js'
import type { Matcher, QueryRequest, Selector, SeriesPoints, SeriesWrite } from '../model/types.js'
import type { ServerLogger } from './errors.js'
import { type BodyChunks, gzipError, joinChunks } from './ingest-decode.js'
import type { DecodedBody, IngestPool, InPlaceDecoder } from './ingest-pool.js'
import { type LinePrecision, type PrefixCache, parseLineProtocol } from './line-protocol.js'
import {
  BodyError,
  decodeReadRequest,
  encodeReadResponse,
  RESPONSE_SAMPLES,
  type RemoteQuery,
  snappyDecode,
} from './prom-remote.js'
import { snappy } from './snappy.js'

/** An answer to send: status, headers and body. */
export interface HttpAnswer {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: string | Uint8Array
}

const NO_CONTENT: HttpAnswer = { status: 204, headers: {}, body: '' }

/**
 * Limits that bound a request, whatever the engine's load: sending the same request again cannot
 * succeed, so they answer 400 (Prometheus does not retry a 4xx). Any other limit (a peer's queue
 * full on a cluster) is load, and answers 503 so that the sender retries.
 */
const REQUEST_LIMITS = new Set(['max_series_per_request', 'max_points_per_request', 'max_points_per_query'])

/**
 * The status and message for an error. Bad input is 400; a node or quorum that cannot serve now,
 * overload and a timeout are 503, which Prometheus and Telegraf retry. Anything else is a bug or an
 * unexpected failure: 500, its cause logged and never sent.
 */
export function errorStatus(
  err: unknown,
  logger: Pick<ServerLogger, 'error'>,
  route: string,
): { status: number; message: string } {
  if (err instanceof BodyError) return { status: err.status, message: err.message }
  if (err instanceof ValidationError) return { status: 400, message: err.message }
  if (err instanceof LimitError) return { status: REQUEST_LIMITS.has(err.limit) ? 400 : 503, message: err.message }
  if (err instanceof UnavailableError || err instanceof DeadlineError) return { status: 503, message: err.message }
  logger.error({ err, route }, `${route} failed with an unexpected error`)
  return { status: 500, message: 'internal error; the server logged the cause' }
}

/**
 * The smallest body (as received, compressed or not) decoded in an ingest worker. Handing a body
 * over and building its series from the answer took the main thread 60 to 100 µs whatever the
 * body's size (measured on 2 cores, Node 20), as much as decoding about 5 KiB of line protocol or
 * of snappy remote write in place, and the round trip adds 0.1 to 0.3 ms to the answer; smaller
 * bodies are decoded in place.
 *
 * A larger threshold for remote write was tried: a Prometheus request of 2,000 samples (54 KiB)
 * decodes in about 1 ms, and decoding such bodies in place took 12 to 19% less CPU per sample under
 * a full-speed load with no other calls, at the same rate. But the event loop, busier by that 1 ms
 * a request, then answered a health check sent every 2 ms during the load in 5.1 to 5.8 ms (median)
 * against 2.7 to 3.4 ms with the worker decoding, at no higher rate: every other call waits behind
 * the decoding.
 */
export const WORKER_MIN_BODY_BYTES = 8 * 1024

/** Where bodies are decoded: in place with the caches that make repeated series cheap, or in workers. */
export interface IngestDecoding {
  /** Small remote-write bodies, and all of them without workers: decoded on the main thread by the worker's own decoder. */
  readonly inPlace: InPlaceDecoder
  readonly prefixes: PrefixCache
  /** Absent: every body is decoded on the main thread. */
  readonly pool?: IngestPool
}

/** The pool that decodes `body`, or undefined when it is decoded in place (small, or no workers). */
function workerPool(decoding: IngestDecoding, body: BodyChunks): IngestPool | undefined {
  return body.size >= WORKER_MIN_BODY_BYTES ? decoding.pool : undefined
}

/** A `prometheus.WriteRequest`, snappy-compressed, stored as one write. */
export async function remoteWrite(
  engine: StorageEngine,
  body: BodyChunks,
  maxBytes: number,
  decoding: IngestDecoding,
): Promise<{ answer: HttpAnswer; samples: number }> {
  const pool = workerPool(decoding, body)
  const request = { kind: 'remote', body, maxBytes } as const
  const decoded: DecodedBody = pool === undefined ? decoding.inPlace.decode(request) : await pool.decode(request)
  // A request of metadata alone, or of series without samples, has nothing to store.
  if (decoded.series.length === 0) return { answer: NO_CONTENT, samples: 0 }
  try {
    await engine.write({ series: decoded.series, acceptNaN: true, normalized: decoded.normalized === true })
  } catch (err) {
    const firstEntries = decoded.firstEntries
    if (!(err instanceof ValidationError) || firstEntries === undefined) throw err
    // Merged, the body's series are numbered in order of appearance: named again by their first entry.
    throw seriesRenamed(err, (v, i, rest) => ({ ...v, field: `series[${firstEntries[i]}]${rest}` }))
  }
  return { answer: NO_CONTENT, samples: decoded.points }
}

/**
 * The engine selector of a remote-read query: an equality matcher on `__name__` names the metric;
 * without one the selector has no metric and the `__name__` matchers select among all metrics.
 */
export function remoteSelector(matchers: readonly Matcher[]): Selector {
  const named = matchers.findIndex((m) => m.key === '__name__' && m.op === 'eq' && m.value !== '')
  if (named < 0) return { metric: '', matchers }
  return { metric: matchers[named]!.value, matchers: matchers.filter((_, i) => i !== named) }
}

function queryOf(q: RemoteQuery): QueryRequest {
  // Remote read's range is inclusive at both ends; the engine's end is exclusive.
  return { selector: remoteSelector(q.matchers), startMs: q.startMs, endMs: q.endMs + 1 }
}

/** The queries one remote-read request may hold (Prometheus sends one a request). */
export const MAX_READ_QUERIES = 1000

/**
 * A `prometheus.ReadRequest`, answered with the SAMPLES response type. Its queries run one after the
 * other and share one budget of `maxPoints` points (the engine's max_points_per_query): each query
 * is bounded by the engine anyway, and without a budget for the whole request, a small request that
 * repeats a query thousands of times would make the answer, and the memory it takes, as large.
 */
export async function remoteRead(
  engine: StorageEngine,
  body: Buffer,
  maxBytes: number,
  maxPoints: number,
  signal: AbortSignal,
): Promise<HttpAnswer> {
  const request = decodeReadRequest(snappyDecode(body, maxBytes))
  const types = request.acceptedResponseTypes
  if (types.length > 0 && !types.includes(RESPONSE_SAMPLES)) {
    throw new BodyError(
      400,
      'V3 answers remote read with the SAMPLES response type only; this client accepts only STREAMED_XOR_CHUNKS',
    )
  }
  if (request.queries.length > MAX_READ_QUERIES) {
    throw new BodyError(
      400,
      `a read request may hold at most ${MAX_READ_QUERIES} queries, this one holds ${request.queries.length}`,
    )
  }
  for (const [i, q] of request.queries.entries()) {
    // Checked here, in the request's own terms: the engine sees the range with its end made exclusive.
    if (q.endMs < q.startMs) {
      throw ValidationError.field(
        `queries[${i}].end_timestamp_ms`,
        `must not be before start_timestamp_ms (${q.startMs}), got ${q.endMs}`,
      )
    }
  }
  const results: SeriesPoints[][] = []
  let points = 0
  for (const [i, q] of request.queries.entries()) {
    const series = await engine.query(queryOf(q), { signal })
    for (const s of series) points += s.timestamps.length
    if (points > maxPoints) {
      throw new LimitError(
        'max_points_per_query',
        maxPoints,
        `cannot return more than ${maxPoints} points to one read request: its queries up to queries[${i}] match ${points}`,
      )
    }
    results.push(series)
  }
  return {
    status: 200,
    headers: { 'content-type': 'application/x-protobuf', 'content-encoding': 'snappy' },
    body: snappy().compressSync(encodeReadResponse(results), { copyOutputData: true }),
  }
}

/**
 * The error with each violation whose field is `series[i]…` as `rename` gives it, from i and the
 * rest of the field; a violation rename gives nothing for keeps its field.
 */
function seriesRenamed(
  err: ValidationError,
  rename: (v: FieldViolation, index: number, rest: string) => FieldViolation | undefined,
): ValidationError {
  return new ValidationError(
    err.violations.map((v) => {
      const match = /^series\[(\d+)\](.*)$/.exec(v.field)
      return (match === null ? undefined : rename(v, Number(match[1]), match[2]!)) ?? v
    }),
    { cause: err },
  )
}

/** Inflates a gzip body on libuv's thread pool, bounded by maxBytes. */
function inflate(body: Buffer, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    gunzip(body, { maxOutputLength: maxBytes }, (err, inflated) => {
      if (err === null) resolve(inflated)
      else reject(gzipError(err, maxBytes))
    })
  })
}

/** An InfluxDB line protocol body (gzip-compressed or not), stored as one write. */
export async function lineProtocolWrite(
  engine: StorageEngine,
  body: BodyChunks,
  gzip: boolean,
  precision: LinePrecision,
  nowMs: number,
  maxBytes: number,
  decoding: IngestDecoding,
): Promise<{ answer: HttpAnswer; samples: number }> {
  const pool = workerPool(decoding, body)
  let parsed: {
    readonly series: readonly SeriesWrite[]
    readonly firstLines?: ArrayLike<number>
    readonly points: number
  }
  if (pool === undefined) {
    const whole = joinChunks(body)
    parsed = parseLineProtocol(gzip ? await inflate(whole, maxBytes) : whole, precision, nowMs, decoding.prefixes)
  } else parsed = await pool.decode({ kind: 'line', body, gzip, maxBytes, precision, nowMs })
  if (parsed.series.length === 0) return { answer: NO_CONTENT, samples: 0 }
  try {
    await engine.write({ series: parsed.series })
  } catch (err) {
    const firstLines = parsed.firstLines
    if (!(err instanceof ValidationError) || firstLines === undefined) throw err
    // The sender learns which of its lines was refused: the line the series first appeared on.
    throw seriesRenamed(err, (v, i, rest) => {
      const line = firstLines[i]
      const what = rest.replace(/^\./, '') || 'series'
      return line === undefined ? undefined : { field: `line ${line}`, description: `${what} ${v.description}` }
    })
  }
  return { answer: NO_CONTENT, samples: parsed.points }
}
