// Cold runs encoded in a codec worker are the bytes the event loop encodes, NaN bits included, and
// an engine that hands its seals to the worker stores what one without a worker stores.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { coldRun, coldSummary } from '../../src/codec/cold-value.js'
import { RUN_MS } from '../../src/codec/row-key.js'
import { decodeRun } from '../../src/codec/run-codec.js'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { type ColdEncodeInput, encodeCold, encodeColdInput } from '../../src/engine/cold-encode.js'
import { DecodePool } from '../../src/engine/decode-pool.js'
import { COLD_ENCODE_WORKER_MIN_POINTS } from '../../src/engine/engine-maintenance.js'
import type { SeriesBuckets } from '../../src/engine/shard.js'
import { prng } from '../../src/model/prng.js'

const RUN0 = Math.floor(Date.UTC(2025, 0, 1) / RUN_MS) * RUN_MS
/** Prometheus' staleness marker and a NaN with payload bits, which only a bit-exact path keeps. */
const ODD_NANS = new Float64Array(BigUint64Array.from([0x7ff0000000000002n, 0xfff8000000000abcn]).buffer)

function bits(a: Float64Array): bigint[] {
  return [...new BigUint64Array(a.buffer, a.byteOffset, a.length)]
}

/** Points every `stepMs` from `fromMs` within one run, values a random walk with odd NaNs here and there. */
function points(random: () => number, fromMs: number, count: number, stepMs: number): ColdEncodeInput {
  const ts = new Float64Array(count)
  const vals = new Float64Array(count)
  let v = 100
  for (let i = 0; i < count; i++) {
    ts[i] = fromMs + i * stepMs
    v += random() - 0.5
    vals[i] = v
    if (i % 97 === 5) vals.set(ODD_NANS.subarray(i % 2, (i % 2) + 1), i)
  }
  return { runStartMs: RUN0, ts, vals, old: undefined }
}

describe('cold runs encoded in a codec worker', () => {
  test('are the bytes encoded in place, with the same block counts, merged over stored runs', async () => {
    const random = prng(7)
    const inputs: ColdEncodeInput[] = []
    for (let k = 0; k < 12; k++) {
      const runStartMs = RUN0 + k * RUN_MS
      // Up to 5,300 points 500 ms apart: all within the run's hour.
      const fresh = { ...points(random, runStartMs, 2_000 + k * 300, 500), runStartMs }
      // Every other run has a stored value: half of its points at the new points' times, half between.
      const stored =
        k % 2 === 0
          ? undefined
          : encodeCold(
              { ts: fresh.ts.map((t, i) => (i % 2 === 0 ? t : t + 250)), vals: fresh.vals.map((x) => x * 2) },
              runStartMs,
            )
      inputs.push({ ...fresh, old: stored })
    }
    const pool = new DecodePool(1)
    try {
      const inWorker = await pool.encodeRuns(inputs)
      assert.equal(pool.runsEncoded, inputs.length)
      inputs.forEach((input, k) => {
        const inPlace = encodeColdInput(input)
        const got = inWorker[k]!
        // The run's bytes are equal. A sum of NaNs keeps one operand's payload, and compiled code
        // may add in either order, so the summaries are compared as numbers.
        assert.deepEqual(Buffer.from(coldRun(got.value)), Buffer.from(coldRun(inPlace.value)), `run ${k}`)
        assert.deepEqual(coldSummary(got.value, input.runStartMs), coldSummary(inPlace.value, input.runStartMs))
        assert.deepEqual([got.oldBlocks, got.newBlocks], [inPlace.oldBlocks, inPlace.newBlocks])
        // New points win where they meet stored ones, their NaN bits intact.
        const d = decodeRun(coldRun(got.value), input.runStartMs)
        const at = new Map(Array.from(d.timestamps, (t, i) => [t, i]))
        for (let i = 0; i < input.ts.length; i++) {
          const j = at.get(input.ts[i]!)
          assert.ok(j !== undefined)
          assert.deepEqual(bits(d.values.subarray(j, j + 1)), bits(input.vals.subarray(i, i + 1)))
        }
      })
      // The caller's arrays were copied, not taken: they are still whole.
      assert.ok(inputs.every((x) => x.ts.length > 0 && x.ts.buffer.byteLength > 0))
    } finally {
      await pool.close()
    }
  })

  test('an engine that seals through its worker stores what one without a worker stores', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-cold-encode-'))
    const engines = [0, 1].map(
      (decodeWorkers) => new BasicEngine({ dataDir: join(dir, `w${decodeWorkers}`), sync: 'off', decodeWorkers }),
    )
    try {
      for (const e of engines) await e.open()
      const random = prng(11)
      // Back-filled days go straight to cold runs: enough points that each seal reaches the worker.
      const series = Array.from({ length: 8 }, (_, s) => {
        const p = points(random, RUN0, 4 * COLD_ENCODE_WORKER_MIN_POINTS, 10_000 / 8)
        return { metric: 'm', tags: [{ key: 's', value: String(s) }], timestamps: [...p.ts], values: p.vals }
      })
      for (const e of engines) {
        await e.write({ series, acceptNaN: true })
        // A second write over half of the same time: the seal merges it into the stored runs.
        await e.write({
          series: series.map((x) => ({
            ...x,
            timestamps: x.timestamps.filter((_, i) => i % 2 === 0),
            values: x.values.filter((_, i) => i % 2 === 0).map((v) => v + 1),
          })),
          acceptNaN: true,
        })
        await e.compact()
      }
      const buckets: SeriesBuckets = { bucketOf: () => 0 }
      const [without, withWorker] = await Promise.all(
        engines.map((e) => e.digestShard(buckets, RUN0 - RUN_MS, RUN0 + 10 * RUN_MS)),
      )
      assert.ok((without ?? []).length > 0)
      assert.deepEqual(withWorker, without)
      const [statsWithout, statsWith] = await Promise.all(engines.map((e) => e.stats()))
      assert.deepEqual(
        [statsWith?.coldRuns, statsWith?.coldBlocks, statsWith?.pointsWritten],
        [statsWithout?.coldRuns, statsWithout?.coldBlocks, statsWithout?.pointsWritten],
      )
      const read = await engines[1]!.query({
        selector: { metric: 'm', matchers: [] },
        startMs: RUN0,
        endMs: RUN0 + 10 * RUN_MS,
      })
      assert.equal(read.length, 8)
      assert.deepEqual(
        bits(read[0]!.values.subarray(0, 1000)),
        bits(Float64Array.from(series[0]!.values.subarray(0, 1000), (v, i) => (i % 2 === 0 ? v + 1 : v))),
      )
    } finally {
      for (const e of engines) await e.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
