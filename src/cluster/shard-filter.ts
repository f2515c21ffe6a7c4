import { createHash } from 'node:crypto'
import type { SeriesFilter } from '../engine/shard.js'
import { ValidationError } from '../model/errors.js'
import { seriesToken } from '../model/series-key.js'
import { TOKEN_SPACE, type TokenSpan } from './ring.js'

/**
 * Packs spans as little-endian uint32 pairs, 8 bytes a span, writing an end of 2^32 as 0 (the
 * wire format of PeerShard.ranges). Adjacent spans are joined first, so a node's many small
 * vnode ranges usually travel as a few.
 */
export function encodeSpans(spans: readonly TokenSpan[]): Uint8Array {
  const sorted = [...spans].sort((a, b) => a.start - b.start)
  const joined: TokenSpan[] = []
  for (const span of sorted) {
    const last = joined[joined.length - 1]
    if (last !== undefined && last.end === span.start) joined[joined.length - 1] = { start: last.start, end: span.end }
    else joined.push(span)
  }
  const out = new Uint8Array(joined.length * 8)
  const view = new DataView(out.buffer)
  joined.forEach((span, i) => {
    view.setUint32(i * 8, span.start, true)
    view.setUint32(i * 8 + 4, span.end % TOKEN_SPACE, true)
  })
  return out
}

/** Reads PeerShard.ranges back; throws ValidationError (a peer's bad input) for a malformed list. */
export function decodeSpans(bytes: Uint8Array): TokenSpan[] {
  if (bytes.length % 8 !== 0)
    throw ValidationError.field('shard.ranges', `has ${bytes.length} bytes, not pairs of uint32`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const spans: TokenSpan[] = []
  let previousEnd = 0
  for (let i = 0; i < bytes.length; i += 8) {
    const start = view.getUint32(i, true)
    const rawEnd = view.getUint32(i + 4, true)
    const end = rawEnd === 0 ? TOKEN_SPACE : rawEnd
    if (end <= start || start < previousEnd) {
      throw ValidationError.field('shard.ranges', `span ${i / 8} [${start}, ${end}) is empty or out of order`)
    }
    spans.push({ start, end })
    previousEnd = end
  }
  return spans
}

/**
 * Series tokens a node has computed, by canonical key: a SHA-256 per series costs more than the
 * routing it serves, and a series' token never changes. Cleared whenever it is full, so its memory
 * stays bounded however many series pass through. One per node, for the routing of the writes it
 * coordinates (reads are narrowed by the tokens the engine keeps per series).
 */
export class SeriesTokens {
  private readonly tokens = new Map<string, number>()

  constructor(private readonly capacity = 100_000) {}

  of(key: string): number {
    let token = this.tokens.get(key)
    if (token === undefined) {
      if (this.tokens.size >= this.capacity) this.tokens.clear()
      token = seriesToken(key)
      this.tokens.set(key, token)
    }
    return token
  }
}

/**
 * The filter that accepts the series whose ring token lies in the spans: a binary search over the
 * sorted span starts.
 */
export function spanFilter(spans: readonly TokenSpan[]): SeriesFilter {
  const indexOf = spanIndex(spans)
  const digest = createHash('sha256')
  for (const span of spans) digest.update(`${span.start}-${span.end},`)
  return {
    key: `shard:${digest.digest('hex').slice(0, 32)}`,
    accepts: (_seriesKey: string, token: number): boolean => indexOf(token) >= 0,
  }
}

/** For sorted, disjoint spans: the index of the span a token lies in, or -1. */
export function spanIndex(spans: readonly TokenSpan[]): (token: number) => number {
  const starts = Float64Array.from(spans, (s) => s.start)
  const ends = Float64Array.from(spans, (s) => s.end)
  return (token) => {
    let lo = 0
    let hi = starts.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >> 1
      if (starts[mid]! <= token) lo = mid + 1
      else hi = mid - 1
    }
    return hi >= 0 && token < ends[hi]! ? hi : -1
  }
}
