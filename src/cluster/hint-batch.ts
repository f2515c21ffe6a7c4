/**
 * Delivery batches of hints. Hint bodies are peer write bodies (PeerWriteRequest: repeated series,
 * field 1), and protobuf appends the repeated fields of concatenated messages, so several hints in
 * a row are one write whose entries keep their order and each its own write version (a field of the
 * entry, not of the request). The receiving node merges repeated entries of a series by version,
 * the highest winning, then in request order, which is the order the hints were written in; one
 * such write costs the owner one commit instead of one per hint.
 */
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire'
import type { WriteLimits } from '../model/limits.js'
import type { Hint } from './hint-store.js'

/** Series entries and points of a peer write body, counted without decoding names or values. */
export function peerWriteSize(body: Uint8Array): { readonly series: number; readonly points: number } {
  let series = 0
  let points = 0
  const reader = new BinaryReader(body)
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag()
    if (no !== 1 || wireType !== WireType.LengthDelimited) {
      reader.skip(wireType, no)
      continue
    }
    series++
    const entry = new BinaryReader(reader.bytes())
    while (entry.pos < entry.len) {
      const [field, type] = entry.tag()
      // Field 3 holds the timestamps as packed float64s.
      if (field === 3 && type === WireType.LengthDelimited) points += entry.bytes().byteLength / 8
      else entry.skip(type, field)
    }
  }
  return { series, points }
}

/** One write made of consecutive hints: its body, and the sequence of its last hint to acknowledge. */
export interface HintGroup {
  readonly body: Uint8Array
  readonly throughSeq: number
}

/**
 * Splits hints, in order, into consecutive groups that each fit one write request under `limits`
 * and `maxBytes`. A hint that alone exceeds them (it was one valid request, so only under other
 * limits) goes alone, as it was written.
 */
export function groupHints(hints: readonly Hint[], limits: WriteLimits, maxBytes: number): HintGroup[] {
  const groups: HintGroup[] = []
  let bodies: Uint8Array[] = []
  let bytes = 0
  let series = 0
  let points = 0
  let last = 0
  const flush = (): void => {
    if (bodies.length === 0) return
    groups.push({ body: bodies.length === 1 ? bodies[0]! : Buffer.concat(bodies), throughSeq: last })
    bodies = []
    bytes = 0
    series = 0
    points = 0
  }
  for (const hint of hints) {
    const size = peerWriteSize(hint.body)
    const fits =
      bytes + hint.body.byteLength <= maxBytes &&
      series + size.series <= limits.maxSeriesPerRequest &&
      points + size.points <= limits.maxPointsPerRequest
    if (!fits) flush()
    bodies.push(hint.body)
    bytes += hint.body.byteLength
    series += size.series
    points += size.points
    last = hint.seq
  }
  flush()
  return groups
}
