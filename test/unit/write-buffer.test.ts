// Write-buffer records: what encodeBufferRecord writes is the documented layout byte for byte
// (docs/format/buffer.md), so records written before and after any change to the encoder replay
// alike, whether the points are small views of one shared arena (a remote write's) or arrays of
// their own, and every NaN keeps its bits.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { ENCODING_BUFFER_V1, ENCODING_BUFFER_V2 } from '../../src/codec/schema.js'
import { decodeBufferRecord, encodeBufferRecord, type RecordPoints } from '../../src/engine/write-buffer.js'
import { bitsOf, doubles, OTHER_NAN, STALE_NAN } from '../fixtures/nan-values.js'

/** The V1 layout, written out field by field with DataView. */
function byHand(ids: readonly Buffer[], points: readonly RecordPoints[]): Buffer {
  const parts: Buffer[] = [Buffer.from([ENCODING_BUFFER_V1, 0, 0, 0, 0])]
  parts[0]!.writeUInt32LE(points.length, 1)
  points.forEach((p, i) => {
    const n = p.timestamps.length
    const part = Buffer.alloc(12 + 16 * n)
    ids[i]!.copy(part, 0)
    part.writeUInt32LE(n, 8)
    const view = new DataView(part.buffer, part.byteOffset, part.length)
    const bits = (a: Float64Array) => new BigUint64Array(a.buffer, a.byteOffset, a.length)
    bits(p.timestamps).forEach((b, j) => {
      view.setBigUint64(12 + 8 * j, b, true)
    })
    bits(p.values).forEach((b, j) => {
      view.setBigUint64(12 + 8 * (n + j), b, true)
    })
    parts.push(part)
  })
  return Buffer.concat(parts)
}

const id = (k: number): Buffer => Buffer.alloc(8, k)

describe('write-buffer records', () => {
  test('V1: small series from one arena and large ones of their own, byte for byte', () => {
    // One arena, as validation hands out a request's points, with the staleness marker among them.
    const arena = new Float64Array(64)
    arena.set([1000, 2000, 1.5, 2.5, 3000, 0])
    new BigUint64Array(arena.buffer)[5] = STALE_NAN
    const large = 40
    const points: RecordPoints[] = [
      { timestamps: arena.subarray(0, 2), values: arena.subarray(2, 4) },
      { timestamps: arena.subarray(4, 5), values: arena.subarray(5, 6) },
      {
        timestamps: Float64Array.from({ length: large }, (_, j) => 10_000 + j),
        values: doubles(Array.from({ length: large }, (_, j) => (j % 2 ? OTHER_NAN : BigInt(j) << 52n))),
      },
      { timestamps: new Float64Array(new ArrayBuffer(24), 8, 1).fill(5), values: doubles([OTHER_NAN]) },
    ]
    const ids = points.map((_, k) => id(k + 1))
    const record = encodeBufferRecord(
      ids.map((b) => ({ id: b })),
      points,
    )
    assert.deepEqual(record, byHand(ids, points))
    const back = decodeBufferRecord(record, 0)
    assert.equal(back.length, points.length)
    back.forEach((s, k) => {
      assert.deepEqual(s.id, ids[k])
      assert.deepEqual([...s.ts], [...points[k]!.timestamps])
      assert.deepEqual(bitsOf(s.vals), bitsOf(points[k]!.values))
      assert.equal(s.vers, undefined)
    })
    assert.equal(bitsOf(back[1]!.vals)[0], STALE_NAN)
  })

  test('V1: timestamps and values from separate buffers, and a third between them, byte for byte', () => {
    // The ingest path hands a body's timestamps in one buffer and its values in another; the encoder
    // keeps views of the last two buffers, so a third one in between must not mix them up.
    const times = Float64Array.of(1, 2, 3, 4, 5, 6)
    const values = doubles([1n << 52n, STALE_NAN, OTHER_NAN, 3n << 52n, 5n << 52n, 7n << 52n])
    const third = new Float64Array(new ArrayBuffer(40), 8, 3)
    third.set([9, 10, 11])
    const points: RecordPoints[] = [
      { timestamps: times.subarray(0, 2), values: values.subarray(0, 2) },
      { timestamps: third.subarray(0, 1), values: values.subarray(2, 3) },
      { timestamps: times.subarray(2, 3), values: third.subarray(1, 2) },
      { timestamps: times.subarray(3, 6), values: values.subarray(3, 6) },
    ]
    const ids = points.map((_, k) => id(k + 1))
    const record = encodeBufferRecord(
      ids.map((b) => ({ id: b })),
      points,
    )
    assert.deepEqual(record, byHand(ids, points))
    assert.deepEqual(bitsOf(decodeBufferRecord(record, 0)[0]!.vals), [1n << 52n, STALE_NAN])
  })

  test('a record written by hand in the documented layout decodes', () => {
    const points: RecordPoints[] = [{ timestamps: Float64Array.of(7, 8), values: doubles([STALE_NAN, 1n]) }]
    const back = decodeBufferRecord(byHand([id(9)], points), 3)
    assert.deepEqual([...back[0]!.ts], [7, 8])
    assert.deepEqual(bitsOf(back[0]!.vals), [STALE_NAN, 1n])
  })

  test('V2: versions with small series from one arena round trip', () => {
    const arena = Float64Array.of(1, 2, 10, 20, 3, 30, 0, 0)
    const record = encodeBufferRecord(
      [{ id: id(1) }, { id: id(2) }],
      [
        { timestamps: arena.subarray(0, 2), values: arena.subarray(2, 4), versions: Float64Array.of(5, 6) },
        { timestamps: arena.subarray(4, 5), values: arena.subarray(5, 6) },
      ],
    )
    assert.equal(record[0], ENCODING_BUFFER_V2)
    const back = decodeBufferRecord(record, 0)
    assert.deepEqual([...back[0]!.ts, ...back[0]!.vals, ...back[0]!.vers!], [1, 2, 10, 20, 5, 6])
    assert.deepEqual([...back[1]!.ts, ...back[1]!.vals], [3, 30])
    assert.equal(back[1]!.vers, undefined)
  })
})
