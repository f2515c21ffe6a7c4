// The bench's own encoder of Prometheus remote write 1.0 bodies: a protobuf prometheus.WriteRequest
// (timeseries = 1 { labels = 1 { name = 1, value = 2 }, samples = 2 { value = 1 double, timestamp = 2
// int64 } }) compressed as one snappy block. Written by hand rather than through a generic protobuf
// writer because the bench encodes millions of samples before the clock starts: a series' labels
// are encoded once and copied into every TimeSeries of it, and a whole request is sized first and
// written into one buffer.
import { compressSync } from 'snappy'

/** One sample of a request: its series' labels as `encodeLabels` made them, a time in ms and a value. */
export interface RemoteSample {
  readonly labels: Buffer
  readonly timestampMs: number
  readonly value: number
}

/** Protobuf wire types: 1 is a 64-bit fixed field, 2 a length-delimited one, 0 a varint. */
const LEN = 2
const I64 = 1
const VARINT = 0
const tag = (field: number, wireType: number): number => (field << 3) | wireType

function varintSize(n: number): number {
  let size = 1
  while (n >= 0x80) {
    n = Math.floor(n / 0x80)
    size++
  }
  return size
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  // Division instead of shifts: timestamps in ms exceed the 32 bits JavaScript's shift operators keep.
  while (n >= 0x80) {
    buf[at++] = (n % 0x80) | 0x80
    n = Math.floor(n / 0x80)
  }
  buf[at++] = n
  return at
}

/**
 * The label fields (field 1 of a prometheus.TimeSeries, one per label) of a series, sorted by name
 * as remote write requires; `__name__` is one of the labels.
 */
export function encodeLabels(labels: Readonly<Record<string, string>>): Buffer {
  const parts: Buffer[] = []
  const names = Object.keys(labels).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
  for (const name of names) {
    const n = Buffer.from(name)
    const v = Buffer.from(labels[name] as string)
    const inner = 1 + varintSize(n.length) + n.length + 1 + varintSize(v.length) + v.length
    const out = Buffer.alloc(1 + varintSize(inner) + inner)
    let at = 0
    out[at++] = tag(1, LEN)
    at = writeVarint(out, at, inner)
    out[at++] = tag(1, LEN)
    at = writeVarint(out, at, n.length)
    at += n.copy(out, at)
    out[at++] = tag(2, LEN)
    at = writeVarint(out, at, v.length)
    v.copy(out, at)
    parts.push(out)
  }
  return Buffer.concat(parts)
}

/** The Sample message of one point: the value as a double, the timestamp as a varint. */
function sampleSize(timestampMs: number): number {
  return 1 + 8 + 1 + varintSize(timestampMs)
}

/**
 * A prometheus.WriteRequest holding each sample as its own TimeSeries with the full label set, the
 * way Prometheus' remote-write queue builds its requests; not compressed. Timestamps must be
 * non-negative integers (ms since the epoch), which is all the bench sends.
 */
export function encodeWriteRequest(samples: readonly RemoteSample[]): Buffer {
  let size = 0
  for (const s of samples) {
    if (!Number.isSafeInteger(s.timestampMs) || s.timestampMs < 0) {
      throw new Error(`cannot encode timestamp ${s.timestampMs}: the bench encoder takes non-negative integers`)
    }
    const sample = sampleSize(s.timestampMs)
    const series = s.labels.length + 1 + varintSize(sample) + sample
    size += 1 + varintSize(series) + series
  }
  const out = Buffer.allocUnsafe(size)
  let at = 0
  for (const s of samples) {
    const sample = sampleSize(s.timestampMs)
    const series = s.labels.length + 1 + varintSize(sample) + sample
    out[at++] = tag(1, LEN)
    at = writeVarint(out, at, series)
    at += s.labels.copy(out, at)
    out[at++] = tag(2, LEN)
    at = writeVarint(out, at, sample)
    out[at++] = tag(1, I64)
    at = out.writeDoubleLE(s.value, at)
    out[at++] = tag(2, VARINT)
    at = writeVarint(out, at, s.timestampMs)
  }
  if (at !== size) throw new Error(`BUG: remote write request sized ${size} bytes, wrote ${at}`)
  return out
}

/** A remote write 1.0 body: the WriteRequest compressed as one snappy block (not the framed format). */
export function encodeRemoteWriteBody(samples: readonly RemoteSample[]): Buffer {
  return compressSync(encodeWriteRequest(samples))
}
