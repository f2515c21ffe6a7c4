import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { coldRun, coldSummary, encodeColdValue, type RunSummary } from '../../src/codec/cold-value.js'
import { CorruptDataError } from '../../src/codec/errors.js'
import { encodeRun } from '../../src/codec/run-codec.js'
import {
  ENCODING_COLD_SUMMARY,
  ENCODING_COLD_SUMMARY_SCALED,
  ENCODING_RUN_GORILLA_PACKED,
  ENCODING_RUN_SCALED,
} from '../../src/codec/schema.js'
import { summarizePoints } from '../../src/engine/aggregate.js'
import { prng } from '../../src/model/prng.js'

const RUN_START = 1_699_999_200_000

function series(count: number, value: (i: number) => number): { ts: Float64Array; vs: Float64Array } {
  return {
    ts: Float64Array.from({ length: count }, (_, i) => RUN_START + i * 10_000),
    vs: Float64Array.from({ length: count }, (_, i) => value(i)),
  }
}

/** Encodes a run and its summary, checks that both come back whole, and returns the cold value and the run. */
function roundTrip(ts: Float64Array, vs: Float64Array): { value: Buffer; run: Buffer } {
  const run = encodeRun(ts, vs, ts.length, RUN_START)
  const summary = summarizePoints(ts, vs)
  const value = encodeColdValue(run, summary)
  assert.ok(Buffer.from(coldRun(value)).equals(run), 'the run follows the summary unchanged')
  const got = coldSummary(value, RUN_START)
  for (const k of ['sum', 'min', 'max', 'first', 'last'] as const) {
    assert.ok(Object.is(got[k], summary[k]), `${k}: ${got[k]} against ${summary[k]}`)
  }
  assert.deepEqual([got.count, got.firstMs, got.lastMs], [ts.length, ts[0], ts.at(-1)])
  return { value, run }
}

describe('cold value', () => {
  it('writes the summary of a scaled run as varints of its integers, in 13 to 15 bytes for 2-decimal data', () => {
    const rand = prng(3)
    let v = 50
    const { ts, vs } = series(360, () => {
      v = Math.min(100, Math.max(0, v + rand() * 10 - 5))
      return Math.round(v * 100) / 100
    })
    const { value, run } = roundTrip(ts, vs)
    assert.equal(run[0], ENCODING_RUN_SCALED)
    assert.equal(value[0], ENCODING_COLD_SUMMARY_SCALED)
    assert.ok(value.length - run.length <= 15, `${value.length - run.length} summary bytes`)
  })

  it('keeps every summary exact at the ends of the scaled range: 9 decimals, integers near 2^50, negatives', () => {
    const cases: Array<(i: number) => number> = [
      (i) => ((i % 3) * 1e9 - 1_123_456_789) / 1e9,
      (i) => 2 ** 50 - 1 - i * 1_000_003,
      (i) => (i % 2 === 0 ? 2 ** 49 + i : -(2 ** 49) - i),
      (i) => -(i + 1) * 0.5,
      () => 0,
      (i) => i / 1e9,
    ]
    let scaled = 0
    for (const value of cases) {
      for (const count of [1, 2, 40]) {
        const { ts, vs } = series(count, value)
        const { value: encoded, run } = roundTrip(ts, vs)
        // A single point near 2^50 or 2^49 is shorter as a float, and so a Gorilla run.
        const isScaled = run[0] === ENCODING_RUN_SCALED
        assert.equal(encoded[0], isScaled ? ENCODING_COLD_SUMMARY_SCALED : ENCODING_COLD_SUMMARY)
        if (isScaled) scaled++
      }
    }
    assert.ok(scaled >= 16, `${scaled} of 18 scaled`)
  })

  it('keeps 41 bytes of floats in front of a Gorilla run', () => {
    const { ts, vs } = series(100, (i) => Math.sin(i) * Math.PI)
    const { value, run } = roundTrip(ts, vs)
    assert.equal(run[0], ENCODING_RUN_GORILLA_PACKED)
    assert.equal(value[0], ENCODING_COLD_SUMMARY)
    assert.equal(value.length - run.length, 41)
    const nan = series(5, (i) => (i === 2 ? Number.NaN : i))
    roundTrip(nan.ts, nan.vs)
  })

  it('reads a value with the 41-byte summary in front of a scaled run, as schema 1 wrote them', () => {
    const { ts, vs } = series(30, (i) => i / 4)
    const run = encodeRun(ts, vs, ts.length, RUN_START)
    const summary = summarizePoints(ts, vs)
    const old = Buffer.alloc(41 + run.length)
    old[0] = ENCODING_COLD_SUMMARY
    ;[summary.sum, summary.min, summary.max, summary.first, summary.last].forEach((x, i) => {
      old.writeDoubleBE(x, 1 + 8 * i)
    })
    run.copy(old, 41)
    assert.deepEqual({ ...coldSummary(old, RUN_START) }, { ...summary, count: 30, firstMs: ts[0], lastMs: ts.at(-1) })
    assert.ok(Buffer.from(coldRun(old)).equals(run))
  })

  it('falls back to floats for a summary that is not the run it wraps', () => {
    const { ts, vs } = series(10, (i) => i)
    const run = encodeRun(ts, vs, ts.length, RUN_START)
    // A minimum with more decimals than the run's, and a first value that is not the run's.
    const notThese: RunSummary[] = [
      { sum: 45, min: 0.5, max: 9, first: 0, last: 9 },
      { sum: 45, min: 0, max: 9, first: 3, last: 9 },
    ]
    for (const notThis of notThese) {
      const value = encodeColdValue(run, notThis)
      assert.equal(value[0], ENCODING_COLD_SUMMARY)
      assert.deepEqual({ ...coldSummary(value, RUN_START) }, { ...notThis, count: 10, firstMs: ts[0], lastMs: ts[9] })
    }
  })

  it('throws CorruptDataError for a cut summary, an unknown encoding, or a scaled summary before a Gorilla run', () => {
    const { ts, vs } = series(20, (i) => i * 3)
    const { value } = roundTrip(ts, vs)
    assert.equal(value[0], ENCODING_COLD_SUMMARY_SCALED)
    for (let n = 0; n < 12; n++) {
      assert.throws(() => coldSummary(value.subarray(0, n), RUN_START), CorruptDataError, `length ${n}`)
    }
    assert.throws(() => coldRun(Buffer.of(0x32, 0, 0)), /encoding 50 or length 3 is not a summarized run/)
    const gorilla = encodeRun(
      ts,
      Float64Array.from(vs, (x) => x + Math.PI),
      ts.length,
      RUN_START,
    )
    const wrong = Buffer.concat([value.subarray(0, value.length - coldRun(value).length), gorilla])
    assert.equal(gorilla[0], ENCODING_RUN_GORILLA_PACKED)
    assert.throws(() => coldSummary(wrong, RUN_START), /a scaled summary in front of run encoding 34/)
  })
})
