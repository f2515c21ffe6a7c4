/**
 * Codec benchmark: bytes per point and encode/decode speed of blocks and cold runs.
 * Run: node --import tsx bench/codec-bench.ts
 *
 * Data: a random walk clamped to [0, 100] with steps uniform in [-5, 5] (53 random bits each, so
 * full precision means full mantissas), one point every 10 s for an hour (360 points a series),
 * in full precision and rounded to 2 decimals; plus a dense block of one point per millisecond. Targets: a full-precision hour run well under 8 bytes a
 * point, a 2-decimal one under about 1.5; encode well over 10 M points/s, decode faster.
 */
import { decodeBlockInto, encodeBlock } from '../src/codec/block-codec.js'
import { decodeRunInto, encodeRun, readRunHeader } from '../src/codec/run-codec.js'
import { BLOCK_MS, ENCODING_RUN_SCALED } from '../src/codec/schema.js'
import { prng } from '../src/model/prng.js'

const SERIES = 2000
const POINTS = 360
const INTERVAL_MS = 10_000
const RUN_START_MS = 1_700_000_000_000 - (1_700_000_000_000 % 3_600_000)

/** Uniform in [0, 1) with all 53 bits random, as Math.random(): full-precision data has no spare zero bits. */
function prng53(seed: number): () => number {
  const next = prng(seed)
  return () => (Math.floor(next() * 2 ** 26) * 2 ** 27 + Math.floor(next() * 2 ** 27)) / 2 ** 53
}

interface Series {
  timestamps: Float64Array
  values: Float64Array
}

function walk(seed: number, decimals: number | null, jitterMs: number): Series {
  const rand = prng53(seed)
  const timestamps = new Float64Array(POINTS)
  const values = new Float64Array(POINTS)
  let v = rand() * 100
  for (let i = 0; i < POINTS; i++) {
    v = Math.min(100, Math.max(0, v + (rand() * 10 - 5)))
    const jitter = jitterMs === 0 ? 0 : Math.floor(rand() * (2 * jitterMs + 1)) - jitterMs
    timestamps[i] = RUN_START_MS + i * INTERVAL_MS + Math.max(0, jitter + (i === 0 ? jitterMs : 0))
    values[i] = decimals === null ? v : Math.round(v * 10 ** decimals) / 10 ** decimals
  }
  return { timestamps, values }
}

function time(fn: () => void): number {
  fn()
  let best = Number.POSITIVE_INFINITY
  for (let round = 0; round < 5; round++) {
    const t0 = process.hrtime.bigint()
    fn()
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9)
  }
  return best
}

function mps(points: number, seconds: number): string {
  return `${(points / seconds / 1e6).toFixed(1)} M points/s`
}

function benchRuns(label: string, series: Series[]): void {
  const encoded: Buffer[] = series.map((s) => encodeRun(s.timestamps, s.values, POINTS, RUN_START_MS))
  const bytes = encoded.reduce((n, b) => n + b.length, 0)
  const scaled = encoded.filter((b) => readRunHeader(b, RUN_START_MS).encoding === ENCODING_RUN_SCALED).length
  const points = series.length * POINTS
  const enc = time(() => {
    for (const s of series) encodeRun(s.timestamps, s.values, POINTS, RUN_START_MS)
  })
  const ts = new Float64Array(POINTS)
  const vs = new Float64Array(POINTS)
  const dec = time(() => {
    for (const b of encoded) decodeRunInto(b, RUN_START_MS, ts, vs, 0)
  })
  console.log(
    `run   ${label.padEnd(34)} ${(bytes / points).toFixed(3)} B/point  scaled ${scaled}/${series.length}  ` +
      `encode ${mps(points, enc)}  decode ${mps(points, dec)}`,
  )
}

/** The same series cut into 30-second blocks, as the hot family stores them. */
function benchBlocks(label: string, series: Series[]): void {
  const blocks: { ts: Float64Array; vs: Float64Array; start: number; enc: Buffer }[] = []
  for (const s of series) {
    let i = 0
    while (i < POINTS) {
      const start = Math.floor(s.timestamps[i]! / BLOCK_MS) * BLOCK_MS
      let j = i
      while (j < POINTS && s.timestamps[j]! < start + BLOCK_MS) j++
      const ts = s.timestamps.subarray(i, j)
      const vs = s.values.subarray(i, j)
      blocks.push({ ts, vs, start, enc: encodeBlock(ts, vs, j - i, start) })
      i = j
    }
  }
  const bytes = blocks.reduce((n, b) => n + b.enc.length, 0)
  const points = series.length * POINTS
  const enc = time(() => {
    for (const b of blocks) encodeBlock(b.ts, b.vs, b.ts.length, b.start)
  })
  const ts = new Float64Array(POINTS)
  const vs = new Float64Array(POINTS)
  const dec = time(() => {
    let at = 0
    for (const b of blocks) at = (at + decodeBlockInto(b.enc, b.start, ts, vs, at)) % (POINTS - 8)
  })
  console.log(
    `block ${label.padEnd(34)} ${(bytes / points).toFixed(3)} B/point  ${blocks.length} blocks       ` +
      `encode ${mps(points, enc)}  decode ${mps(points, dec)}`,
  )
}

function benchDenseBlock(): void {
  const n = BLOCK_MS
  const start = RUN_START_MS
  const rand = prng53(7)
  const ts = new Float64Array(n)
  const vs = new Float64Array(n)
  let v = 50
  for (let i = 0; i < n; i++) {
    ts[i] = start + i
    v = Math.min(100, Math.max(0, v + (rand() * 10 - 5)))
    vs[i] = v
  }
  const enc = encodeBlock(ts, vs, n, start)
  const reps = 50
  const e = time(() => {
    for (let r = 0; r < reps; r++) encodeBlock(ts, vs, n, start)
  })
  const outT = new Float64Array(n)
  const outV = new Float64Array(n)
  const d = time(() => {
    for (let r = 0; r < reps; r++) decodeBlockInto(enc, start, outT, outV, 0)
  })
  console.log(
    `block ${'dense, 1 point/ms, full precision'.padEnd(34)} ${(enc.length / n).toFixed(3)} B/point  1 block of ${n}  ` +
      `encode ${mps(n * reps, e)}  decode ${mps(n * reps, d)}`,
  )
}

/**
 * The entropy of the steps between successive values in hundredths (order 0, over every series): an
 * encoder that codes each step on its own needs at least this many bits a point for the values of a
 * 2-decimal walk, however it packs them.
 */
function stepEntropy(series: Series[]): { bits: number; distinct: number } {
  const counts = new Map<number, number>()
  let steps = 0
  for (const s of series) {
    for (let i = 1; i < POINTS; i++) {
      const step = Math.round(s.values[i]! * 100) - Math.round(s.values[i - 1]! * 100)
      counts.set(step, (counts.get(step) ?? 0) + 1)
      steps++
    }
  }
  let bits = 0
  for (const n of counts.values()) bits -= (n / steps) * Math.log2(n / steps)
  return { bits, distinct: counts.size }
}

const full: Series[] = []
const full2: Series[] = []
const jittered2: Series[] = []
for (let s = 0; s < SERIES; s++) {
  full.push(walk(s + 1, null, 0))
  full2.push(walk(s + 1, 2, 0))
  jittered2.push(walk(s + 1, 2, 20))
}
console.log(`${SERIES} series x ${POINTS} points (10 s interval, 1 hour), random walk in [0, 100], steps +-5`)
benchRuns('full precision', full)
benchRuns('2 decimals', full2)
const entropy = stepEntropy(full2)
console.log(
  `      ${'2 decimals: entropy of the steps'.padEnd(34)} ${(entropy.bits / 8).toFixed(3)} B/point  ` +
    `(${entropy.bits.toFixed(2)} bits over ${entropy.distinct} distinct steps; the values' floor)`,
)
benchRuns('2 decimals, timestamps +-20 ms', jittered2)
benchBlocks('full precision', full)
benchBlocks('2 decimals', full2)
benchDenseBlock()
