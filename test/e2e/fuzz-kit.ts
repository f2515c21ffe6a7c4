/**
 * What the fuzz and hostile-input tests share: a seeded PRNG, hand-encoded requests that can say
 * what the typed client never would (int64 beyond 2^53, invalid UTF-8), raw calls with identity
 * serializers on any RPC, and the checks that a server is still healthy.
 */
import { BinaryWriter } from '@bufbuild/protobuf/wire'
import {
  Client,
  type ClientDuplexStream,
  type ClientReadableStream,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from '@grpc/grpc-js'
import { prng } from '../../src/model/prng.js'

export class Rng {
  readonly next: () => number
  constructor(readonly seed: number) {
    this.next = prng(seed)
  }
  int(n: number): number {
    return Math.floor(this.next() * n)
  }
  pick<T>(items: readonly T[]): T {
    const item = items[this.int(items.length)]
    if (item === undefined) throw new Error('pick from an empty list')
    return item
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) out[i] = this.int(256)
    return out
  }
}

/** A string field's value: text, or raw bytes that may not be UTF-8. */
export type Str = string | Uint8Array

function str(w: BinaryWriter, field: number, value: Str | undefined): void {
  if (value === undefined) return
  w.uint32((field << 3) | 2)
  if (typeof value === 'string') w.string(value)
  else w.bytes(value)
}

function int64(w: BinaryWriter, field: number, value: bigint | number | undefined): void {
  if (value !== undefined) w.uint32(field << 3).int64(value)
}

function message(w: BinaryWriter, field: number, bytes: Uint8Array | undefined): void {
  if (bytes !== undefined) w.uint32((field << 3) | 2).bytes(bytes)
}

export const MatchOp = { EQ: 1, NEQ: 2, REGEX: 3, NOT_REGEX: 4 } as const

export interface RawMatcher {
  readonly key?: Str
  readonly value?: Str
  readonly op?: number
}

export interface RawSelector {
  readonly metric?: Str
  readonly matchers?: readonly RawMatcher[]
}

export interface RawAggregation {
  readonly func?: number
  readonly stepMs?: bigint | number
  readonly groupBy?: readonly Str[]
  readonly mergeSeries?: boolean
}

export interface RawQuery {
  readonly selector?: RawSelector
  readonly startMs?: bigint | number
  readonly endMs?: bigint | number
  readonly aggregation?: RawAggregation
  readonly valueFilter?: { readonly op: number; readonly value: number }
  readonly additionalSelectors?: readonly RawSelector[]
}

export function encodeSelector(s: RawSelector): Uint8Array {
  const w = new BinaryWriter()
  str(w, 1, s.metric)
  for (const m of s.matchers ?? []) {
    const mw = new BinaryWriter()
    str(mw, 1, m.key)
    str(mw, 2, m.value)
    if (m.op !== undefined) mw.uint32(0x18).int32(m.op)
    message(w, 2, mw.finish())
  }
  return w.finish()
}

/** QueryRequest and QueryStreamRequest share their fields. */
export function encodeQuery(q: RawQuery): Buffer {
  const w = new BinaryWriter()
  if (q.selector) message(w, 1, encodeSelector(q.selector))
  int64(w, 2, q.startMs)
  int64(w, 3, q.endMs)
  if (q.aggregation) {
    const a = q.aggregation
    const aw = new BinaryWriter()
    if (a.func !== undefined) aw.uint32(0x08).int32(a.func)
    int64(aw, 2, a.stepMs)
    for (const g of a.groupBy ?? []) str(aw, 3, g)
    if (a.mergeSeries) aw.uint32(0x20).bool(true)
    message(w, 4, aw.finish())
  }
  if (q.valueFilter) {
    message(
      w,
      5,
      new BinaryWriter().uint32(0x08).int32(q.valueFilter.op).uint32(0x11).double(q.valueFilter.value).finish(),
    )
  }
  for (const s of q.additionalSelectors ?? []) message(w, 6, encodeSelector(s))
  return Buffer.from(w.finish())
}

/** LatestRequest and ListSeriesRequest: a selector only. */
export function encodeSelectorRequest(selector: RawSelector): Buffer {
  const w = new BinaryWriter()
  message(w, 1, encodeSelector(selector))
  return Buffer.from(w.finish())
}

export function encodeSubscribe(selector: RawSelector, sinceMs?: bigint | number): Buffer {
  const w = new BinaryWriter()
  message(w, 1, encodeSelector(selector))
  int64(w, 2, sinceMs)
  return Buffer.from(w.finish())
}

export function encodeDelete(selector: RawSelector, startMs?: bigint | number, endMs?: bigint | number): Buffer {
  const w = new BinaryWriter()
  message(w, 1, encodeSelector(selector))
  int64(w, 2, startMs)
  int64(w, 3, endMs)
  return Buffer.from(w.finish())
}

export function encodeLocate(metric: Str, tags: readonly { key: Str; value: Str }[] = []): Buffer {
  const w = new BinaryWriter()
  str(w, 1, metric)
  for (const t of tags) {
    const tw = new BinaryWriter()
    str(tw, 1, t.key)
    str(tw, 2, t.value)
    message(w, 2, tw.finish())
  }
  return Buffer.from(w.finish())
}

export interface RawSeries {
  readonly metric?: Str
  readonly tags?: readonly { key: Str; value: Str }[]
  readonly timestamps?: readonly (bigint | number)[]
  readonly values?: readonly number[]
}

export function encodeWrite(series: readonly RawSeries[], precision = 0): Buffer {
  const w = new BinaryWriter()
  for (const s of series) {
    const sw = new BinaryWriter()
    str(sw, 1, s.metric)
    for (const t of s.tags ?? []) {
      const tw = new BinaryWriter()
      str(tw, 1, t.key)
      str(tw, 2, t.value)
      message(sw, 2, tw.finish())
    }
    if (s.timestamps && s.timestamps.length > 0) {
      sw.uint32(0x1a).fork()
      for (const t of s.timestamps) sw.int64(t)
      sw.join()
    }
    if (s.values && s.values.length > 0) {
      sw.uint32(0x22).fork()
      for (const v of s.values) sw.double(v)
      sw.join()
    }
    message(w, 1, sw.finish())
  }
  if (precision !== 0) w.uint32(0x10).int32(precision)
  return Buffer.from(w.finish())
}

export function encodeIngest(sequence: number, write: Uint8Array): Buffer {
  return Buffer.from(new BinaryWriter().uint32(0x08).uint64(sequence).uint32(0x12).bytes(write).finish())
}

export type RpcKind = 'unary' | 'server' | 'client' | 'bidi'

export interface RawResult {
  readonly code: status
  readonly details: string
  readonly responses: Buffer[]
}

const identity = (b: Buffer): Buffer => b

export interface RawCallOptions {
  readonly timeoutMs?: number
  /** Cancel a server stream once its first message arrives (Subscribe never ends on its own). */
  readonly cancelAfterFirst?: boolean
}

/** One call with identity serializers: the bytes go out as they are and come back undecoded. */
export function rawCall(
  client: Client,
  path: string,
  kind: RpcKind,
  messages: readonly Buffer[],
  options: RawCallOptions = {},
): Promise<RawResult> {
  const deadline = Date.now() + (options.timeoutMs ?? 20_000)
  const responses: Buffer[] = []
  return new Promise<RawResult>((resolve) => {
    const done = (err: ServiceError | null): void =>
      resolve({ code: err ? err.code : status.OK, details: err ? err.details : '', responses })
    if (kind === 'unary' || kind === 'client') {
      const cb = (err: ServiceError | null, value?: Buffer): void => {
        if (value) responses.push(value)
        done(err)
      }
      if (kind === 'unary') {
        client.makeUnaryRequest(
          path,
          identity,
          identity,
          messages[0] ?? Buffer.alloc(0),
          new Metadata(),
          { deadline },
          cb,
        )
        return
      }
      const stream = client.makeClientStreamRequest(path, identity, identity, new Metadata(), { deadline }, cb)
      for (const m of messages) stream.write(m)
      stream.end()
      return
    }
    let cancelled = false
    const listen = (stream: ClientReadableStream<Buffer> | ClientDuplexStream<Buffer, Buffer>): void => {
      stream.on('data', (b: Buffer) => {
        responses.push(b)
        if (options.cancelAfterFirst && !cancelled) {
          cancelled = true
          stream.cancel()
        }
      })
      // The status event carries the outcome; an error event comes with every non-OK status.
      stream.on('error', () => {})
      stream.on('status', (s: { code: status; details: string }) => {
        resolve({ code: cancelled && s.code === status.CANCELLED ? status.OK : s.code, details: s.details, responses })
      })
    }
    if (kind === 'server') {
      const first = messages[0] ?? Buffer.alloc(0)
      listen(client.makeServerStreamRequest(path, identity, identity, first, new Metadata(), { deadline }))
      return
    }
    const stream = client.makeBidiStreamRequest(path, identity, identity, new Metadata(), { deadline })
    listen(stream)
    for (const m of messages) stream.write(m)
    stream.end()
  })
}

export function rawClient(address: string): Client {
  return new Client(address, credentials.createInsecure(), {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    'grpc.max_send_message_length': 64 * 1024 * 1024,
  })
}

/** grpc.health.v1 Check for the whole server ("" service): true when it answers SERVING in time. */
export async function healthServing(client: Client, timeoutMs = 2000): Promise<boolean> {
  const r = await rawCall(client, '/grpc.health.v1.Health/Check', 'unary', [Buffer.alloc(0)], { timeoutMs })
  // HealthCheckResponse { status = 1 }, SERVING = 1.
  return r.code === status.OK && r.responses[0]?.equals(Buffer.from([0x08, 0x01])) === true
}
