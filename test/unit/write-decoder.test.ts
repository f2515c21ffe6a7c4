import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Precision } from '../../gen/v3storage/v1/common.js'
import { WriteRequest } from '../../gen/v3storage/v1/write_service.js'
import { decodeWriteRequest, WireError } from '../../src/server/write-decoder.js'

function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 0x1_0000_0000
  }
}

describe('write request decoder', () => {
  it('decodes what the generated encoder writes, for random requests', () => {
    const rand = rng(7)
    for (let n = 0; n < 300; n++) {
      const series = Array.from({ length: 1 + Math.floor(rand() * 5) }, (_, s) => {
        const count = Math.floor(rand() * 50)
        return {
          metric: `m_${s}`,
          tags: [{ key: 'host', value: `h${Math.floor(rand() * 1000)}é` }],
          timestamps: Array.from({ length: count }, () => Math.floor((rand() - 0.3) * 2 ** 52)),
          values: Array.from({ length: count }, () => (rand() - 0.5) * 10 ** Math.floor(rand() * 20)),
        }
      })
      const req = { series, precision: Precision.PRECISION_SECONDS }
      const bytes = WriteRequest.encode(req).finish()
      const got = decodeWriteRequest(bytes)
      assert.equal(got.precision, 's')
      assert.deepEqual(
        got.series.map((s) => ({ ...s, timestamps: Array.from(s.timestamps), values: Array.from(s.values) })),
        WriteRequest.decode(bytes).series,
      )
    }
  })

  it('keeps nanosecond timestamps exact as bigints and small negatives as numbers', () => {
    const ns = 1_767_225_600_123_456_789n
    const bytes = WriteRequest.encode({
      series: [{ metric: 'm', tags: [], timestamps: [0, -1, -(2 ** 53 - 1)], values: [1, 2, 3] }],
      precision: Precision.PRECISION_NANOSECONDS,
    }).finish()
    const got = decodeWriteRequest(bytes)
    assert.deepEqual(Array.from(got.series[0]?.timestamps ?? []), [0, -1, -(2 ** 53 - 1)])
    // The generated encoder cannot write a value beyond 2^53, so build that varint by hand.
    const varint: number[] = []
    let v = BigInt.asUintN(64, ns)
    while (v >= 0x80n) {
      varint.push(Number(v & 0x7fn) | 0x80)
      v >>= 7n
    }
    varint.push(Number(v))
    const series = Buffer.from([0x0a, 1, 0x6d, 0x18, ...varint, 0x21, ...new Uint8Array(Float64Array.of(5).buffer)])
    const req = Buffer.concat([Buffer.from([0x0a, series.length]), series, Buffer.from([0x10, 4])])
    const decoded = decodeWriteRequest(req)
    assert.deepEqual(decoded.series[0]?.timestamps, [ns])
    assert.deepEqual(Array.from(decoded.series[0]?.values ?? []), [5])
    assert.equal(decoded.precision, 'ns')
  })

  it('rejects truncated input', () => {
    const bytes = WriteRequest.encode({
      series: [{ metric: 'm', tags: [], timestamps: [1, 2], values: [1, 2] }],
      precision: 0,
    }).finish()
    assert.throws(() => decodeWriteRequest(bytes.subarray(0, bytes.length - 3)), WireError)
  })
})
