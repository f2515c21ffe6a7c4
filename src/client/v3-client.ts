import {
  type ChannelCredentials,
  Client,
  type ClientOptions,
  type ClientReadableStream,
  type ClientWritableStream,
  connectivityState,
  credentials,
  type CallOptions as GrpcCallOptions,
  Metadata,
  type ServiceError,
  status,
} from '@grpc/grpc-js'
import { AdminServiceService, type GetStatsResponse } from '../../gen/v3storage/v1/admin_service.js'
import { ClusterServiceService, type Node, NodeLifecycle, NodeState } from '../../gen/v3storage/v1/cluster_service.js'
import {
  AggFunc as ProtoAggFunc,
  type Aggregation as ProtoAggregation,
  CompareOp as ProtoCompareOp,
  type Consistency as ProtoConsistency,
  MatchOp as ProtoMatchOp,
  type Precision as ProtoPrecision,
  type Selector as ProtoSelector,
} from '../../gen/v3storage/v1/common.js'
import { QueryServiceService } from '../../gen/v3storage/v1/query_service.js'
import { WriteResponse, WriteServiceService, WriteStreamResponse } from '../../gen/v3storage/v1/write_service.js'
import { type FieldViolation, ValidationError } from '../model/errors.js'
import type {
  AggFunc,
  CompareOp,
  ConsistencyLevel,
  Matcher,
  MatchOp,
  Precision,
  RawTimestamp,
  SeriesPoints,
  SeriesRef,
  Tag,
  ValueFilter,
  WriteResult,
} from '../model/types.js'
import { MAX_VIOLATIONS } from '../model/validate.js'
import { decodeSeriesList, encodeWriteRequest, SeriesHeaderCache, type WireSeries } from '../wire/series-codec.js'
import { consistencyToProto, precisionToProto } from './consistency.js'
import { closedError, toClientError, V3ClientError } from './errors.js'
import { tlsMismatch } from './protocol-probe.js'
import { type LiveSubscription, openSubscription, type SubscribeOptions } from './subscribe.js'
import { readTlsFiles, TLS_OPTION_NAMES, type TlsSettingNames } from './tls-files.js'

/** Tags as an object (`{ host: 'a' }`) or as a list of key/value pairs. */
export type TagsInput = Readonly<Record<string, string>> | readonly Tag[]

export interface SeriesInput {
  readonly metric: string
  readonly tags?: TagsInput
  /** Integers in the write's precision; bigint where they exceed 2^53 (nanoseconds since the epoch do). */
  readonly timestamps: ArrayLike<RawTimestamp>
  readonly values: ArrayLike<number>
}

export interface SelectorInput {
  readonly metric: string
  readonly matchers?: readonly Matcher[]
}

export interface AggregationInput {
  readonly func: AggFunc
  /** Bucket width in ms; 0 or absent makes the whole range one bucket. */
  readonly stepMs?: number
  readonly groupBy?: readonly string[]
  readonly mergeSeries?: boolean
}

export interface QueryInput {
  readonly selector: SelectorInput
  /**
   * Further selectors answered in the same call, each as if queried alone; their series follow
   * the selector's, in order. At most 100. This is how one call reads several metrics.
   */
  readonly additionalSelectors?: readonly SelectorInput[]
  /** Inclusive, ms since the epoch. */
  readonly startMs: number
  /** Exclusive, ms since the epoch. */
  readonly endMs: number
  /** Absent: raw points. */
  readonly aggregation?: AggregationInput
  /** Keeps the points whose value compares true (before any aggregation), e.g. { op: 'gt', value: 90 }. */
  readonly valueFilter?: ValueFilter
}

export interface DeleteInput {
  readonly selector: SelectorInput
  /** With endMs, the range to delete in ms; both absent delete every point and the series themselves. */
  readonly startMs?: number
  readonly endMs?: number
}

/** A WriteStream call in progress; see V3Client.writeStream. */
export interface WriteStreamHandle {
  /**
   * Sends one batch; resolves when flow control has room for the next. Rejects once the stream
   * failed, and with FAILED_PRECONDITION after end().
   */
  write(series: readonly SeriesInput[]): Promise<void>
  /** Ends the stream; resolves with the totals once every batch is durable. */
  end(): Promise<WriteResult>
}

export interface CallOptions {
  /** Deadline of this call in ms from now; absent takes the client's defaultTimeoutMs. */
  readonly timeoutMs?: number
  /** Cancels the call when aborted; the call then fails with CANCELLED. */
  readonly signal?: AbortSignal
}

export interface WriteOptions extends CallOptions {
  /** Precision of every timestamp of the write. Default ms. */
  readonly precision?: Precision
  /**
   * How many owners of each series must have the write durable before it is acknowledged: one, a
   * majority (quorum) or all. Absent: the server's --write-consistency (quorum unless set). A single
   * node meets every level.
   */
  readonly consistency?: ConsistencyLevel
}

/** Options of query, queryStream, latest and listSeries. */
export interface ReadOptions extends CallOptions {
  /**
   * How many owners of each series the read asks, their answers merged: one, a majority (quorum) or
   * all. Absent: one. A single node meets every level.
   */
  readonly consistency?: ConsistencyLevel
}

export interface LatencyStats {
  readonly count: number
  readonly p50Ms: number
  readonly p99Ms: number
}

export interface ServerStats {
  readonly series: number
  readonly pointsWritten: number
  readonly bufferedPoints: number
  readonly hotBlocks: number
  readonly coldRuns: number
  readonly coldBlocks: number
  readonly bytesOnDisk: number
  readonly writes: LatencyStats
  readonly queries: LatencyStats
  /** Hits and misses of the query-result, decoded-block and selector caches. */
  readonly caches: {
    readonly results: CacheCounts
    readonly decodedBlocks: CacheCounts
    readonly selectors: CacheCounts
  }
  /** On a cluster, each node's own figures; the totals above add them up. Empty on a single node. */
  readonly nodes: readonly { readonly id: string; readonly stats: ServerStats }[]
}

export interface CacheCounts {
  readonly hits: number
  readonly misses: number
}

export interface CompactStats {
  readonly blocksSealed: number
  readonly blocksMoved: number
  readonly seriesExpired: number
}

export type NodeStateName = 'healthy' | 'suspect' | 'down' | 'unspecified'

export interface NodeInfo {
  readonly id: string
  readonly address: string
  readonly state: NodeStateName
  readonly leader: boolean
  /** Where the node takes node-to-node traffic; empty on a single node. */
  readonly peerAddress: string
  readonly lifecycle: 'joining' | 'active' | 'leaving' | 'unspecified'
  /** Its share of the ring as primary owner, 0 to 1. */
  readonly ringShare: number
  /** Writes the node that answered keeps as hints for this node, waiting for it to be back. */
  readonly hintsPending: number
  /** On a node joining or leaving: the change's step, and the ranges and points copied so far. */
  readonly move:
    | {
        readonly phase: string
        readonly rangesTotal: number
        readonly rangesDone: number
        readonly pointsMoved: number
      }
    | undefined
}

/** A decommission once the node has left the ring (ClusterService.Decommission). */
export interface DecommissionReport {
  readonly nodeId: string
  /** The first ring version without the node. */
  readonly ringVersion: number
  readonly durationMs: number
}

/** What one node's repair pass did (ClusterService.Repair). */
export interface RepairNodeReport {
  readonly nodeId: string
  /** Token ranges whose owners' digests the node compared. */
  readonly rangesCompared: number
  /** (token range, hour) blocks whose copies differed and were brought in line. */
  readonly rangesRepaired: number
  /** Points the node wrote to other owners. */
  readonly pointsSent: number
  /** Points from other owners the node wrote to itself. */
  readonly pointsReceived: number
  readonly durationMs: number
}

/** A repair of the whole cluster: one pass per healthy node. */
export interface RepairReport {
  readonly nodes: readonly RepairNodeReport[]
  /** Members that were down: their copies were not repaired. */
  readonly downNodes: readonly string[]
  /** The passes covered every point before this time, in ms since the epoch. */
  readonly endMs: number
  readonly durationMs: number
}

export interface V3ClientTlsOptions {
  /** PEM CA certificates that sign the server's certificate. Absent: the system's trusted roots. */
  readonly caFile?: string
  /** PEM client certificate, for a server that requires mutual TLS; needs keyFile. */
  readonly certFile?: string
  /** PEM private key of certFile. */
  readonly keyFile?: string
}

/** How a client reaches a node: shared by V3Client and BatchingWriter. */
export interface ConnectionOptions {
  /** grpc-js channel credentials, for what tls cannot express. Default plaintext; not with tls. */
  readonly credentials?: ChannelCredentials
  /** Connect with TLS (mutual TLS with certFile and keyFile). Absent: plaintext, unless credentials says otherwise. */
  readonly tls?: V3ClientTlsOptions
  /** Sent as `authorization: Bearer <token>` with every call, for a server started with a tokens file. */
  readonly token?: string
  /** Idle time after which the client pings the server while calls are open, in ms. Default 5 min. */
  readonly keepaliveTimeMs?: number
  /** How long a ping may go unanswered before the connection counts as dead, in ms. Default 20 s. */
  readonly keepaliveTimeoutMs?: number
  /**
   * The HTTP/2 receive window of the connection and of each call, in bytes: how much of an answer
   * the server may send before the client has read it. Default 8 MiB. grpc-js otherwise keeps
   * Node's 65,535 bytes, and an answer larger than that (a day of raw points is about 140 KB) waits
   * for a window update from the client for every 64 KiB. From 65535 to 2^31 - 1.
   */
  readonly receiveWindowBytes?: number
  /** Further grpc-js channel options. */
  readonly channelOptions?: ClientOptions
  /**
   * What error messages call the TLS settings, for a tool that sets them under other names (the v3
   * command line: --tls-ca, --tls-cert, --tls-key). Default tls.caFile, tls.certFile, tls.keyFile.
   */
  readonly tlsSettingNames?: TlsSettingNames
}

export interface V3ClientOptions extends ConnectionOptions {
  /**
   * The largest response accepted, in bytes. Default 64 MiB, above the server's 16 MiB default:
   * grpc-js's own default of 4 MiB would refuse unary results the server is willing to send.
   */
  readonly maxReceiveMessageBytes?: number
  /** Deadline of every call that sets none, in ms; absent: no deadline. */
  readonly defaultTimeoutMs?: number
}

// Maps rather than plain objects: a caller's 'toString' or '__proto__' must not look like an op.
const MATCH_OPS: ReadonlyMap<string, ProtoMatchOp> = new Map(
  Object.entries({
    eq: ProtoMatchOp.MATCH_OP_EQ,
    neq: ProtoMatchOp.MATCH_OP_NEQ,
    regex: ProtoMatchOp.MATCH_OP_REGEX,
    not_regex: ProtoMatchOp.MATCH_OP_NOT_REGEX,
  } satisfies Record<MatchOp, ProtoMatchOp>),
)

const AGG_FUNCS: ReadonlyMap<string, ProtoAggFunc> = new Map(
  Object.entries({
    count: ProtoAggFunc.AGG_FUNC_COUNT,
    sum: ProtoAggFunc.AGG_FUNC_SUM,
    min: ProtoAggFunc.AGG_FUNC_MIN,
    max: ProtoAggFunc.AGG_FUNC_MAX,
    avg: ProtoAggFunc.AGG_FUNC_AVG,
    first: ProtoAggFunc.AGG_FUNC_FIRST,
    last: ProtoAggFunc.AGG_FUNC_LAST,
    stddev: ProtoAggFunc.AGG_FUNC_STDDEV,
    p50: ProtoAggFunc.AGG_FUNC_P50,
    p90: ProtoAggFunc.AGG_FUNC_P90,
    p95: ProtoAggFunc.AGG_FUNC_P95,
    p99: ProtoAggFunc.AGG_FUNC_P99,
  } satisfies Record<AggFunc, ProtoAggFunc>),
)

const COMPARE_OPS: ReadonlyMap<string, ProtoCompareOp> = new Map(
  Object.entries({
    gt: ProtoCompareOp.COMPARE_OP_GT,
    gte: ProtoCompareOp.COMPARE_OP_GTE,
    lt: ProtoCompareOp.COMPARE_OP_LT,
    lte: ProtoCompareOp.COMPARE_OP_LTE,
    eq: ProtoCompareOp.COMPARE_OP_EQ,
    neq: ProtoCompareOp.COMPARE_OP_NEQ,
  } satisfies Record<CompareOp, ProtoCompareOp>),
)

const NODE_STATES: ReadonlyMap<number, NodeStateName> = new Map([
  [NodeState.NODE_STATE_HEALTHY, 'healthy'],
  [NodeState.NODE_STATE_SUSPECT, 'suspect'],
  [NodeState.NODE_STATE_DOWN, 'down'],
])

/** Tags as a list, from either form the client accepts. */
export function tagsToList(tags: TagsInput | undefined): Tag[] {
  if (tags === undefined) return []
  if (Array.isArray(tags)) return tags.map((t: Tag) => ({ key: t.key, value: t.value }))
  return Object.entries(tags).map(([key, value]) => ({ key, value }))
}

/*
 * Read requests are checked before they are sent, for what the serializer would otherwise turn into
 * INTERNAL ("invalid int32: undefined", "cannot be converted to a BigInt"), a TypeError, or a
 * silently coerced value (7 sent as "7"). Each problem is a violation named as the server names
 * the field (server/convert.ts, the engine's range check), so that a refusal reads the same from
 * either side. The server still checks everything else (names, regexes, empty ranges).
 */

/** A caller's value in a message: strings quoted, so that 7 and "7" read apart. */
function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object' && value !== null) return 'an object'
  if (typeof value === 'function') return 'a function'
  return String(value)
}

/** Fails with INVALID_ARGUMENT carrying every violation found, as the server would answer; a no-op without. */
function refuse(violations: readonly FieldViolation[]): void {
  if (violations.length > 0) throw toClientError(new ValidationError(violations))
}

function isObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null
}

/** An int64 ms field: a safe integer, or the serializer fails with INTERNAL (or loses precision). */
function checkMs(value: unknown, field: string, violations: FieldViolation[], nonNegative = false): void {
  if (Number.isSafeInteger(value) && (!nonNegative || (value as number) >= 0)) return
  const what = nonNegative ? '0 or a positive number of milliseconds' : 'an integer number of milliseconds'
  violations.push({ field, description: `must be ${what}, got ${show(value)}` })
}

function checkString(value: unknown, field: string, violations: FieldViolation[]): void {
  if (typeof value !== 'string') violations.push({ field, description: `must be a string, got ${show(value)}` })
}

function checkEnum(
  table: ReadonlyMap<string, number>,
  value: unknown,
  field: string,
  violations: FieldViolation[],
): number {
  const n = typeof value === 'string' ? table.get(value) : undefined
  if (n !== undefined) return n
  violations.push({ field, description: `must be one of ${[...table.keys()].join(', ')}, got ${show(value)}` })
  return 0
}

/** The selector as the contract's message; what cannot be sent as given goes into `violations`, named under `field`. */
function selectorToProto(
  selector: SelectorInput | undefined,
  field: string,
  violations: FieldViolation[],
): ProtoSelector {
  if (!isObject(selector)) {
    violations.push({ field, description: 'is required' })
    return { metric: '', matchers: [] }
  }
  checkString(selector.metric, `${field}.metric`, violations)
  const matchers: unknown = selector.matchers ?? []
  if (!Array.isArray(matchers)) {
    violations.push({ field: `${field}.matchers`, description: `must be a list of matchers, got ${show(matchers)}` })
    return { metric: selector.metric, matchers: [] }
  }
  return {
    metric: selector.metric,
    matchers: matchers.map((m: unknown, i) => {
      const at = `${field}.matchers[${i}]`
      if (!isObject(m)) {
        violations.push({ field: at, description: `must be a matcher { key, value, op }, got ${show(m)}` })
        return { key: '', value: '', op: 0 }
      }
      const { key, value, op } = m as Partial<Matcher>
      checkString(key, `${at}.key`, violations)
      checkString(value, `${at}.value`, violations)
      return { key: key as string, value: value as string, op: checkEnum(MATCH_OPS, op, `${at}.op`, violations) }
    }),
  }
}

/** The selector of a request that holds nothing else to check (Latest, ListSeries). */
function selectorOnly(selector: SelectorInput): ProtoSelector {
  const violations: FieldViolation[] = []
  const message = selectorToProto(selector, 'selector', violations)
  refuse(violations)
  return message
}

/** Response timestamps are milliseconds and always fit a double; the codec keeps them in one. */
function toSeriesPoints(s: WireSeries): SeriesPoints {
  const timestamps = s.timestamps instanceof Float64Array ? s.timestamps : Float64Array.from(s.timestamps, Number)
  return { metric: s.metric, tags: s.tags, timestamps, values: s.values }
}

/**
 * Encodes a WriteRequest (or WriteStreamRequest) up front, so that a point that cannot be encoded
 * is reported with its field instead of grpc-js's "Request message serialization failure".
 */
function encodeSeries(
  series: readonly SeriesInput[],
  precision: ProtoPrecision,
  consistency: ProtoConsistency,
): Buffer {
  refuse(seriesShapeViolations(series))
  try {
    return encodeWriteRequest(
      series.map((s) => ({ metric: s.metric, tags: tagsToList(s.tags), timestamps: s.timestamps, values: s.values })),
      precision,
      consistency,
    )
  } catch (err) {
    throw toClientError(err)
  }
}

/**
 * What a caller without TypeScript may pass where a write's series go, refused with its field before
 * anything is encoded: a missing or misnamed array would otherwise fail as a TypeError (UNKNOWN), and
 * tags given as a string would be sent as one tag per character. The encoder checks the rest (the
 * types of names and points, equal counts).
 */
function seriesShapeViolations(series: unknown): FieldViolation[] {
  if (!Array.isArray(series)) return [{ field: 'series', description: `must be a list of series, got ${show(series)}` }]
  const violations: FieldViolation[] = []
  for (let i = 0; i < series.length && violations.length < MAX_VIOLATIONS; i++) {
    const s: unknown = series[i]
    const at = `series[${i}]`
    if (!isObject(s) || Array.isArray(s)) {
      violations.push({
        field: at,
        description: `must be an object with metric, tags, timestamps and values, got ${show(s)}`,
      })
      continue
    }
    const { tags, timestamps, values } = s as Partial<SeriesInput>
    if (tags !== undefined && !isObject(tags)) {
      violations.push({ field: `${at}.tags`, description: `must be an object or a list of tags, got ${show(tags)}` })
    } else if (Array.isArray(tags)) {
      tags.forEach((t: unknown, j) => {
        if (!isObject(t))
          violations.push({ field: `${at}.tags[${j}]`, description: `must be a {key, value} object, got ${show(t)}` })
      })
    }
    if (!isList(timestamps)) {
      violations.push({
        field: `${at}.timestamps`,
        description: `must be a list of timestamps, got ${show(timestamps)}`,
      })
    }
    if (!isList(values))
      violations.push({ field: `${at}.values`, description: `must be a list of numbers, got ${show(values)}` })
  }
  return violations.slice(0, MAX_VIOLATIONS)
}

/** An array, a typed array or another ArrayLike: what a series' timestamps and values may be. */
function isList(value: unknown): boolean {
  return isObject(value) && typeof (value as { length?: unknown }).length === 'number'
}

function identity(bytes: Buffer): Buffer {
  return bytes
}

/** The longest wait between a channel's connection attempts. */
const MAX_RECONNECT_BACKOFF_MS = 5000

/** The receive window of a client's connection and calls unless ConnectionOptions.receiveWindowBytes says otherwise. */
export const DEFAULT_RECEIVE_WINDOW_BYTES = 8 * 1024 * 1024

/** A grpc-js channel to `address` with the credentials, keepalive, receive window and options given. */
export function openChannel(address: string, options: ConnectionOptions, extra: ClientOptions = {}): Client {
  const window = options.receiveWindowBytes ?? DEFAULT_RECEIVE_WINDOW_BYTES
  if (!Number.isInteger(window) || window < 65_535 || window > 2 ** 31 - 1) {
    throw new RangeError(`receiveWindowBytes must be an integer from 65535 to 2147483647, not ${window}`)
  }
  return new Client(address, channelCredentials(options), {
    // grpc-js reads this on its client only: the initial window of each call, and the connection's.
    'grpc-node.flow_control_window': window,
    'grpc.keepalive_time_ms': options.keepaliveTimeMs ?? 5 * 60_000,
    'grpc.keepalive_timeout_ms': options.keepaliveTimeoutMs ?? 20_000,
    // gRPC backs off up to 120 s between connection attempts: after an outage that long, a client
    // kept failing calls for a minute or more with the server back. At most 5 s here.
    'grpc.max_reconnect_backoff_ms': MAX_RECONNECT_BACKOFF_MS,
    ...extra,
    ...options.channelOptions,
  })
}

function channelCredentials(options: ConnectionOptions): ChannelCredentials {
  const tls = options.tls
  if (tls === undefined) return options.credentials ?? credentials.createInsecure()
  if (options.credentials !== undefined) throw new RangeError('give credentials or tls, not both')
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new RangeError('tls.certFile and tls.keyFile go together')
  }
  const files = readTlsFiles(tls, options.tlsSettingNames ?? TLS_OPTION_NAMES)
  return credentials.createSsl(files.ca, files.key, files.cert)
}

/** The longest call timeout: the range of Node's timers, which grpc-js arms a deadline with (24.8 days). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1

/** How long waitForAnswer asks a failed server whether it speaks the other protocol (TLS or not). */
const PROBE_TIMEOUT_MS = 2000

/**
 * A typed client for a V3 node. Every method returns a promise (queryStream an async iterator) and
 * fails with V3ClientError, which carries the gRPC status and, for bad input, the offending fields.
 */
export class V3Client {
  /** Series headers seen in answers: repeated series decode once (see SeriesHeaderCache). */
  private readonly headers = new SeriesHeaderCache(10_000)
  private readonly decodeList = (bytes: Buffer): SeriesPoints[] =>
    decodeSeriesList(bytes, this.headers).map(toSeriesPoints)
  private readonly client: Client
  private readonly defaultTimeoutMs: number | undefined
  private readonly authorization: string | undefined
  private closed = false
  /** The waitForReady calls under way, failed by close(). */
  private readonly readyWaiters = new Set<(err: V3ClientError) => void>()
  /** What waitForAnswer needs to name a server that speaks the other protocol. */
  private readonly connection: { readonly address: string; readonly options: ConnectionOptions }

  constructor(address: string, options: V3ClientOptions = {}) {
    this.connection = { address, options }
    this.client = openChannel(address, options, {
      'grpc.max_receive_message_length': options.maxReceiveMessageBytes ?? 64 * 1024 * 1024,
    })
    this.defaultTimeoutMs = options.defaultTimeoutMs
    this.authorization = options.token === undefined ? undefined : `Bearer ${options.token}`
  }

  /** Stores the series; resolves once the server has them in its write-ahead log. */
  async write(series: readonly SeriesInput[], options: WriteOptions = {}): Promise<WriteResult> {
    const bytes = encodeSeries(series, precisionToProto(options.precision), consistencyToProto(options.consistency))
    const response = await this.unary(
      WriteServiceService.write.path,
      identity,
      (b: Buffer) => WriteResponse.decode(b),
      bytes,
      options,
    )
    return { pointsWritten: response.pointsWritten, seriesWritten: response.seriesWritten }
  }

  /**
   * Opens a WriteStream: many batches on one call, for ingestion pipelines and bulk loads.
   * `write()` resolves once the batch is handed to the transport and gRPC flow control has room for
   * more, so a fast producer is slowed to the server's pace; `end()` resolves with the totals once
   * every batch is durable. A bad batch ends the stream with INVALID_ARGUMENT naming
   * `messages[i]`: the batches before it stay written, none after it is stored.
   */
  writeStream(options: WriteOptions = {}): WriteStreamHandle {
    const precision = precisionToProto(options.precision)
    // Every batch of the stream carries the level.
    const consistency = consistencyToProto(options.consistency)
    const channel = this.channel()
    const onAbort = (): void => call.cancel()
    let failure: V3ClientError | undefined
    let call!: ClientWritableStream<Buffer>
    // Settles when the server answers; end() hands it out, write() checks for an early failure.
    const outcome = new Promise<WriteResult>((resolve, reject) => {
      call = channel.makeClientStreamRequest(
        WriteServiceService.writeStream.path,
        identity,
        (b: Buffer) => WriteStreamResponse.decode(b),
        this.metadata(),
        this.callOptions(options),
        (err: ServiceError | null, response?: WriteStreamResponse) => {
          options.signal?.removeEventListener('abort', onAbort)
          if (err || response === undefined) {
            failure = toClientError(err ?? new Error('BUG: a stream ended without a response'))
            reject(failure)
          } else {
            resolve({ pointsWritten: response.pointsWritten, seriesWritten: response.seriesWritten })
          }
        },
      )
    })
    // Settles when the call does, either way. It also observes the failure, which write() or end()
    // reports: an unobserved one must not crash the process.
    const ended = outcome.then(
      () => undefined,
      () => undefined,
    )
    if (options.signal?.aborted) call.cancel()
    else options.signal?.addEventListener('abort', onAbort, { once: true })
    let ending = false
    return {
      write: async (series: readonly SeriesInput[]): Promise<void> => {
        if (failure) throw failure
        if (ending) throw new V3ClientError(status.FAILED_PRECONDITION, 'the stream has ended: end() was called', [])
        if (!call.write(encodeSeries(series, precision, consistency))) {
          // A call the server ended while its send buffer was full emits neither 'drain' nor
          // 'close': its end settles the wait too.
          let done = (): void => {}
          await Promise.race([
            new Promise<void>((resolve) => {
              done = resolve
              call.on('drain', done)
              call.on('close', done)
            }),
            ended,
          ])
          call.off('drain', done)
          call.off('close', done)
        }
        if (failure) throw failure
      },
      end: (): Promise<WriteResult> => {
        if (!ending) call.end()
        ending = true
        return outcome
      },
    }
  }

  /** Raw points sorted by timestamp, or aggregated buckets; series without points are left out. */
  async query(request: QueryInput, options: ReadOptions = {}): Promise<SeriesPoints[]> {
    const def = QueryServiceService.query
    return this.unary(def.path, def.requestSerialize, this.decodeList, queryToProto(request, options), options)
  }

  /**
   * The answer to a query in chunks, one array of series per message. A series too large for one
   * message continues in the next with the same metric and tags; mergeChunks joins them.
   */
  async *queryStream(request: QueryInput, options: ReadOptions = {}): AsyncGenerator<SeriesPoints[]> {
    const def = QueryServiceService.queryStream
    const call: ClientReadableStream<SeriesPoints[]> = this.channel().makeServerStreamRequest(
      def.path,
      def.requestSerialize,
      this.decodeList,
      queryToProto(request, options),
      this.metadata(),
      this.callOptions(options),
    )
    const onAbort = (): void => call.cancel()
    options.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      if (options.signal?.aborted) call.cancel()
      for await (const chunk of call) yield chunk as SeriesPoints[]
    } catch (err) {
      throw toClientError(err)
    } finally {
      options.signal?.removeEventListener('abort', onAbort)
      // Ends the call when the consumer stops early; a no-op once the server has finished.
      call.cancel()
    }
  }

  /** The last point of every matching series. */
  async latest(selector: SelectorInput, options: ReadOptions = {}): Promise<SeriesPoints[]> {
    const def = QueryServiceService.latest
    const message = { selector: selectorOnly(selector), consistency: consistencyToProto(options.consistency) }
    return this.unary(def.path, def.requestSerialize, this.decodeList, message, options)
  }

  /** The identity of every matching series. */
  async listSeries(selector: SelectorInput, options: ReadOptions = {}): Promise<SeriesRef[]> {
    const def = QueryServiceService.listSeries
    const message = { selector: selectorOnly(selector), consistency: consistencyToProto(options.consistency) }
    const response = await this.unary(def.path, def.requestSerialize, def.responseDeserialize, message, options)
    return response.series.map((s) => ({ metric: s.metric, tags: s.tags }))
  }

  async stats(options: CallOptions = {}): Promise<ServerStats> {
    const def = AdminServiceService.getStats
    return statsFromProto(await this.unary(def.path, def.requestSerialize, def.responseDeserialize, {}, options))
  }

  /** Seals buffered points, moves blocks past the hot window to the cold tier and applies retention now. */
  compact(options: CallOptions = {}): Promise<CompactStats> {
    const def = AdminServiceService.compact
    return this.unary(def.path, def.requestSerialize, def.responseDeserialize, {}, options)
  }

  /** Deletes the points of the selected series in [startMs, endMs), or, without a range, the series themselves. */
  async deleteSeries(request: DeleteInput, options: CallOptions = {}): Promise<{ seriesMatched: number }> {
    const def = AdminServiceService.deleteSeries
    const given: Partial<DeleteInput> = isObject(request) ? request : {}
    const violations: FieldViolation[] = []
    const message = {
      selector: selectorToProto(given.selector, 'selector', violations),
      startMs: given.startMs ?? 0,
      endMs: given.endMs ?? 0,
    }
    checkMs(message.startMs, 'start_ms', violations)
    checkMs(message.endMs, 'end_ms', violations)
    refuse(violations)
    const response = await this.unary(def.path, def.requestSerialize, def.responseDeserialize, message, options)
    return { seriesMatched: response.seriesMatched }
  }

  async listNodes(options: CallOptions = {}): Promise<NodeInfo[]> {
    const def = ClusterServiceService.listNodes
    const response = await this.unary(def.path, def.requestSerialize, def.responseDeserialize, {}, options)
    return response.nodes.map(nodeFromProto)
  }

  /** The nodes that own the series, primary first. */
  async locate(metric: string, tags?: TagsInput, options: CallOptions = {}): Promise<NodeInfo[]> {
    const def = ClusterServiceService.locate
    const message = { metric, tags: tagsToList(tags) }
    const response = await this.unary(def.path, def.requestSerialize, def.responseDeserialize, message, options)
    return response.nodes.map(nodeFromProto)
  }

  /**
   * Runs anti-entropy repair on every healthy node now, over all data up to now, and resolves once
   * every node's pass is done. Give it a long timeoutMs on large data.
   */
  async repair(options: CallOptions = {}): Promise<RepairReport> {
    const def = ClusterServiceService.repair
    return this.unary(def.path, def.requestSerialize, def.responseDeserialize, {}, options)
  }

  /**
   * Moves a member's ranges to the nodes that take them over, while the cluster serves, and removes
   * it from the ring; resolves once it has left, when it may be stopped. Needs the admin role.
   */
  async decommission(nodeId: string, options: CallOptions = {}): Promise<DecommissionReport> {
    const def = ClusterServiceService.decommission
    const response = await this.unary(def.path, def.requestSerialize, def.responseDeserialize, { nodeId }, options)
    return { nodeId: response.nodeId, ringVersion: response.ringVersion, durationMs: response.durationMs }
  }

  /**
   * Tails the points written to the selected series from now on (with sinceMs, the stored points
   * from then first): `for await (const series of client.subscribe(...))`. `live` resolves once
   * every later write is sure to be seen. Throws V3ClientError INVALID_ARGUMENT, naming the field,
   * for a selector or sinceMs it cannot send, and CANCELLED once the client is closed.
   */
  subscribe(selector: SelectorInput, options: SubscribeOptions = {}): LiveSubscription {
    const channel = this.channel()
    const violations: FieldViolation[] = []
    const message = selectorToProto(selector, 'selector', violations)
    if (options.sinceMs !== undefined) checkMs(options.sinceMs, 'since_ms', violations, true)
    refuse(violations)
    return openSubscription(channel, this.metadata(), message, options)
  }

  /**
   * Resolves once the channel is connected to the server; otherwise the first call connects it. Fails
   * with V3ClientError DEADLINE_EXCEEDED when no connection is up within `timeoutMs` (default 10 s),
   * and with CANCELLED once the client is closed.
   */
  waitForReady(timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const channel = this.channel()
      const fail = (err: V3ClientError): void => {
        this.readyWaiters.delete(fail)
        reject(err)
      }
      this.readyWaiters.add(fail)
      channel.waitForReady(Date.now() + timeoutMs, (err) => {
        if (!this.readyWaiters.delete(fail)) return
        if (err === undefined || err === null) resolve()
        else reject(new V3ClientError(status.DEADLINE_EXCEEDED, err.message, [], undefined, { cause: err }))
      })
    })
  }

  /**
   * Resolves once the channel is connected, or as soon as an attempt to connect fails (refused,
   * unknown host, a TLS handshake that fails): the next call then fails at once and says why. Fails
   * with V3ClientError DEADLINE_EXCEEDED when the server neither answers nor refuses within
   * `timeoutMs`, as a port whose process is stopped or that speaks something other than HTTP/2 does.
   * Fails with UNAVAILABLE, naming the cause, when the server speaks the other protocol: TLS to a
   * plaintext client, or plaintext to a TLS one. For tools that should not wait on a server that
   * does not answer; waitForReady waits through failed attempts instead.
   */
  waitForAnswer(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const channel = this.channel().getChannel()
      const deadline = Date.now() + timeoutMs
      // A failure or silence is worth one question in the other protocol before it is reported.
      const settle = (otherwise: () => void): void => {
        this.tlsMismatch(Math.min(PROBE_TIMEOUT_MS, timeoutMs)).then((message) => {
          if (message === undefined) otherwise()
          else reject(new V3ClientError(status.UNAVAILABLE, message, []))
        }, reject)
      }
      const watch = (): void => {
        const state = channel.getConnectivityState(true)
        if (state === connectivityState.READY || state === connectivityState.SHUTDOWN) {
          resolve()
          return
        }
        if (state === connectivityState.TRANSIENT_FAILURE) {
          settle(resolve)
          return
        }
        channel.watchConnectivityState(state, deadline, (err) => {
          if (err === undefined || err === null) watch()
          else settle(() => reject(new V3ClientError(status.DEADLINE_EXCEEDED, `no answer within ${timeoutMs} ms`, [])))
        })
      }
      watch()
    })
  }

  /** Why the server cannot be reached when it speaks the other protocol (TLS or plaintext); else undefined. */
  private async tlsMismatch(probeTimeoutMs: number): Promise<string | undefined> {
    const { address, options } = this.connection
    // Custom credentials may or may not be TLS: nothing to compare the server with.
    if (options.tls === undefined && options.credentials !== undefined) return undefined
    return tlsMismatch(address, options.tls, options.tlsSettingNames ?? TLS_OPTION_NAMES, probeTimeoutMs)
  }

  /**
   * Closes the channel. Calls in flight still get their answers; a waitForReady under way, and every
   * call made after it, fail at once with CANCELLED.
   */
  close(): void {
    this.closed = true
    for (const fail of [...this.readyWaiters]) fail(closedError('the client'))
    this.client.close()
  }

  /** The channel, for a new call: throws CANCELLED once the client is closed. */
  private channel(): Client {
    if (this.closed) throw closedError('the client')
    return this.client
  }

  /**
   * The token goes in per-call metadata rather than grpc-js call credentials, because grpc-js
   * refuses call credentials on a plaintext channel and a loopback server may check tokens without TLS.
   */
  private metadata(): Metadata {
    const metadata = new Metadata()
    if (this.authorization !== undefined) metadata.set('authorization', this.authorization)
    return metadata
  }

  private callOptions(options: CallOptions): GrpcCallOptions {
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs
    if (timeoutMs === undefined) return {}
    // grpc-js throws a deadline it cannot arm (NaN, past its timer's range) from a later tick, out
    // of reach of the caller's catch: it ended the process.
    // A timeout of 0 or less is a deadline already passed: the call fails with DEADLINE_EXCEEDED.
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs > MAX_TIMEOUT_MS) {
      throw toClientError(
        ValidationError.field('timeoutMs', `must be a number of ms up to ${MAX_TIMEOUT_MS}, got ${String(timeoutMs)}`),
      )
    }
    return { deadline: Date.now() + timeoutMs }
  }

  private unary<Req, Res>(
    path: string,
    serialize: (value: Req) => Buffer,
    deserialize: (bytes: Buffer) => Res,
    request: Req,
    options: CallOptions,
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      const onAbort = (): void => call.cancel()
      const call = this.channel().makeUnaryRequest(
        path,
        serialize,
        deserialize,
        request,
        this.metadata(),
        this.callOptions(options),
        (err: ServiceError | null, response?: Res) => {
          options.signal?.removeEventListener('abort', onAbort)
          if (err) reject(toClientError(err))
          else if (response === undefined) reject(toClientError(new Error('BUG: a call succeeded without a response')))
          else resolve(response)
        },
      )
      if (options.signal?.aborted) call.cancel()
      else options.signal?.addEventListener('abort', onAbort, { once: true })
    })
  }
}

/** The QueryRequest (or QueryStreamRequest) of a query; fails with INVALID_ARGUMENT for what cannot be sent as given. */
function queryToProto(input: QueryInput, options: ReadOptions) {
  const consistency = consistencyToProto(options.consistency)
  // A missing request reads as one without its fields: the violations then name them.
  const request: Partial<QueryInput> = isObject(input) ? input : {}
  const violations: FieldViolation[] = []
  const selector = selectorToProto(request.selector, 'selector', violations)
  const extra: unknown = request.additionalSelectors ?? []
  const additionalSelectors = Array.isArray(extra)
    ? extra.map((s: SelectorInput, i) => selectorToProto(s, `additional_selectors[${i}]`, violations))
    : []
  if (!Array.isArray(extra)) {
    violations.push({ field: 'additional_selectors', description: `must be a list of selectors, got ${show(extra)}` })
  }
  checkMs(request.startMs, 'start_ms', violations)
  checkMs(request.endMs, 'end_ms', violations)
  const aggregation =
    request.aggregation === undefined ? undefined : aggregationToProto(request.aggregation, violations)
  const filter: unknown = request.valueFilter
  let valueFilter: { op: ProtoCompareOp; value: number } | undefined
  if (isObject(filter)) {
    const { op, value } = filter as Partial<ValueFilter>
    if (typeof value !== 'number') {
      violations.push({ field: 'value_filter.value', description: `must be a number, got ${show(value)}` })
    }
    valueFilter = { op: checkEnum(COMPARE_OPS, op, 'value_filter.op', violations), value: value as number }
  } else if (filter !== undefined) {
    violations.push({ field: 'value_filter', description: `must be { op, value }, got ${show(filter)}` })
  }
  refuse(violations)
  return {
    consistency,
    selector,
    additionalSelectors,
    startMs: request.startMs as number,
    endMs: request.endMs as number,
    aggregation,
    valueFilter,
  }
}

function aggregationToProto(input: AggregationInput, violations: FieldViolation[]): ProtoAggregation {
  if (!isObject(input)) {
    violations.push({ field: 'aggregation', description: `must be { func, stepMs?, groupBy? }, got ${show(input)}` })
    return { func: 0, stepMs: 0, groupBy: [], mergeSeries: false }
  }
  const stepMs = input.stepMs ?? 0
  checkMs(stepMs, 'aggregation.step_ms', violations, true)
  const keys: unknown = input.groupBy ?? []
  const groupBy: string[] = []
  if (Array.isArray(keys)) {
    for (const [i, key] of keys.entries()) {
      checkString(key, `aggregation.group_by[${i}]`, violations)
      groupBy.push(key)
    }
  } else {
    violations.push({ field: 'aggregation.group_by', description: `must be a list of tag keys, got ${show(keys)}` })
  }
  return {
    func: checkEnum(AGG_FUNCS, input.func, 'aggregation.func', violations),
    stepMs,
    groupBy,
    mergeSeries: input.mergeSeries ?? false,
  }
}

function statsFromProto(r: GetStatsResponse): ServerStats {
  const latency = (l: typeof r.writeLatency): LatencyStats => ({
    count: l?.count ?? 0,
    p50Ms: l?.p50Ms ?? 0,
    p99Ms: l?.p99Ms ?? 0,
  })
  return {
    series: r.series,
    pointsWritten: r.pointsWritten,
    bufferedPoints: r.bufferedPoints,
    hotBlocks: r.hotBlocks,
    coldRuns: r.coldRuns,
    coldBlocks: r.coldBlocks,
    bytesOnDisk: r.bytesOnDisk,
    writes: latency(r.writeLatency),
    queries: latency(r.queryLatency),
    caches: {
      results: { hits: r.resultCache?.hits ?? 0, misses: r.resultCache?.misses ?? 0 },
      decodedBlocks: { hits: r.decodedBlockCache?.hits ?? 0, misses: r.decodedBlockCache?.misses ?? 0 },
      selectors: { hits: r.selectorCache?.hits ?? 0, misses: r.selectorCache?.misses ?? 0 },
    },
    nodes: r.nodes.flatMap((n) => (n.stats === undefined ? [] : [{ id: n.nodeId, stats: statsFromProto(n.stats) }])),
  }
}

const LIFECYCLES: ReadonlyMap<NodeLifecycle, NodeInfo['lifecycle']> = new Map([
  [NodeLifecycle.NODE_LIFECYCLE_JOINING, 'joining'],
  [NodeLifecycle.NODE_LIFECYCLE_ACTIVE, 'active'],
  [NodeLifecycle.NODE_LIFECYCLE_LEAVING, 'leaving'],
])

function nodeFromProto(node: Node): NodeInfo {
  return {
    id: node.id,
    address: node.address,
    state: NODE_STATES.get(node.state) ?? 'unspecified',
    leader: node.leader,
    peerAddress: node.peerAddress,
    lifecycle: LIFECYCLES.get(node.lifecycle) ?? 'unspecified',
    ringShare: node.ringShare,
    hintsPending: node.hintsPending,
    move:
      node.movePhase === ''
        ? undefined
        : {
            phase: node.movePhase,
            rangesTotal: node.rangesToMove,
            rangesDone: node.rangesMoved,
            pointsMoved: node.pointsMoved,
          },
  }
}

/**
 * Joins the chunks of a queryStream into whole series: consecutive parts of the same series (same
 * metric and tags) become one, in the order the server sent them.
 */
export async function mergeChunks(chunks: AsyncIterable<SeriesPoints[]>): Promise<SeriesPoints[]> {
  const merged: { key: string; series: SeriesPoints; parts: SeriesPoints[] }[] = []
  for await (const chunk of chunks) {
    for (const part of chunk) {
      const key = JSON.stringify([part.metric, part.tags])
      const last = merged[merged.length - 1]
      if (last !== undefined && last.key === key) last.parts.push(part)
      else merged.push({ key, series: part, parts: [part] })
    }
  }
  return merged.map(({ series, parts }) => {
    if (parts.length === 1) return series
    const n = parts.reduce((sum, p) => sum + p.timestamps.length, 0)
    const timestamps = new Float64Array(n)
    const values = new Float64Array(n)
    let at = 0
    for (const p of parts) {
      timestamps.set(p.timestamps, at)
      values.set(p.values, at)
      at += p.timestamps.length
    }
    return { metric: series.metric, tags: series.tags, timestamps, values }
  })
}
