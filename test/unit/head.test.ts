import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Head, type HoldRuns, sortDedupLastWins, type Taken } from '../../src/engine/head.js'
import { runToEnd } from '../../src/engine/slicer.js'

/** Head.takeDueSteps to the end at once, as a seal does between its slices. */
function takeDue(head: Head, nowMs: number, idleMs: number, force: boolean, hold?: HoldRuns): Taken[] {
  return runToEnd(head.takeDueSteps(nowMs, idleMs, force, hold))
}

function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 0x1_0000_0000
  }
}

/** The obvious implementation: a map from timestamp to the last value written for it. */
function reference(ts: number[], vals: number[]): { ts: number[]; vals: number[] } {
  const last = new Map<number, number>()
  ts.forEach((t, i) => {
    last.set(t, vals[i] as number)
  })
  const keys = [...last.keys()].sort((a, b) => a - b)
  return { ts: keys, vals: keys.map((k) => last.get(k) as number) }
}

/**
 * Timestamps of whole writes that overtook each other: ascending chunks, some with a timestamp
 * twice in a row, in shuffled order. Chunks are disjoint in time unless `touching`, when some
 * begin at the timestamp the chunk before them ends with, so that runs tie across writes.
 */
function overtakingWrites(rand: () => number, touching: boolean): number[] {
  const chunks: number[][] = []
  let t = 0
  for (let j = 0, count = 1 + Math.floor(rand() * 20); j < count; j++) {
    const chunk: number[] = []
    if (!(touching && j > 0 && rand() < 0.5)) t += 10
    for (let i = 0, m = 1 + Math.floor(rand() * 30); i < m; i++) {
      if (i > 0 && rand() >= 0.1) t += 10
      chunk.push(t)
    }
    chunks.push(chunk)
  }
  for (let j = chunks.length - 1; j > 0; j--) {
    const k = Math.floor(rand() * (j + 1))
    ;[chunks[j], chunks[k]] = [chunks[k] as number[], chunks[j] as number[]]
  }
  return chunks.flat()
}

describe('write buffer', () => {
  it('sorts and deduplicates, the last write of a timestamp winning, for any arrival order', () => {
    const rand = rng(3)
    for (let c = 0; c < 500; c++) {
      const n = Math.floor(rand() * 200)
      const shape = c % 5
      const ts: number[] = shape >= 3 ? overtakingWrites(rand, shape === 4) : []
      for (let i = 0; i < n && shape < 3; i++) {
        // Ascending runs, random order, or heavy duplication; or whole writes out of order (above).
        if (shape === 0) ts.push(Math.floor(i / 2) * 10 + (i % 7 === 0 ? -100 : 0))
        else if (shape === 1) ts.push(Math.floor(rand() * 1000))
        else ts.push(Math.floor(rand() * 5))
      }
      const vals = ts.map(() => rand())
      const got = sortDedupLastWins(ts, vals)
      const want = reference(ts, vals)
      assert.deepEqual(Array.from(got.ts), want.ts)
      assert.deepEqual(Array.from(got.vals), want.vals)
    }
  })

  it('with versions, keeps the highest version of a timestamp, then the last, for any arrival order', () => {
    const rand = rng(5)
    for (let c = 0; c < 500; c++) {
      const n = Math.floor(rand() * 200)
      const shape = c % 6
      const ts: number[] = shape >= 4 ? overtakingWrites(rand, shape === 5) : []
      for (let i = 0; i < n && shape < 4; i++) {
        // A few ascending runs (writes that crossed), random order, heavy duplication, or 100 short
        // runs; or whole writes out of order (above).
        if (shape === 0) ts.push((i % 50) * 10 + Math.floor(i / 50))
        else if (shape === 1) ts.push(Math.floor(rand() * 1000))
        else if (shape === 2) ts.push(Math.floor(rand() * 5))
        else ts.push((i % 2) * 10 + Math.floor(i / 2))
      }
      const vals = ts.map(() => rand())
      const vers = ts.map(() => Math.floor(rand() * 3))
      const best = new Map<number, { val: number; ver: number }>()
      ts.forEach((t, i) => {
        const seen = best.get(t)
        if (seen === undefined || (vers[i] as number) >= seen.ver)
          best.set(t, { val: vals[i] as number, ver: vers[i] as number })
      })
      const keys = [...best.keys()].sort((a, b) => a - b)
      const got = sortDedupLastWins(Float64Array.from(ts), Float64Array.from(vals), Float64Array.from(vers))
      assert.deepEqual(Array.from(got.ts), keys)
      assert.deepEqual(
        Array.from(got.vals),
        keys.map((k) => best.get(k)?.val),
      )
      assert.deepEqual(
        Array.from(got.vers ?? []),
        keys.map((k) => best.get(k)?.ver),
      )
    }
  })

  it('takes only ended blocks, keeps the rest, and tracks the oldest sequence still needed', () => {
    const head = new Head()
    head.append(1, Float64Array.of(0, 1000, 40_000), Float64Array.of(1, 2, 3), 5)
    head.append(1, Float64Array.of(1000), Float64Array.of(9), 6)
    assert.equal(head.bufferedPoints, 4)
    // At 45 s with 2 s idle, block [0, 30 s) is due and block [30 s, 60 s) is still open.
    const taken = takeDue(head, 45_000, 2000, false)
    assert.equal(taken.length, 1)
    assert.deepEqual(Array.from(taken[0]?.ts ?? []), [0, 1000])
    assert.deepEqual(Array.from(taken[0]?.vals ?? []), [1, 9])
    assert.equal(head.minSeq(), 5)
    assert.deepEqual(Array.from(head.read(1, 0, 100_000)?.vals ?? []), [1, 9, 3])
    head.finishSeal(taken)
    assert.equal(head.bufferedPoints, 1)
    assert.equal(head.minSeq(), 5)
    assert.deepEqual(head.last(1), { ts: 40_000, val: 3 })
    const rest = takeDue(head, 0, 0, true)
    head.abortSeal(rest)
    assert.equal(head.bufferedPoints, 1)
    head.drop(1, 0, 50_000)
    assert.equal(head.bufferedPoints, 0)
    assert.equal(head.minSeq(), undefined)
  })

  it('keeps the open cold run of a series being written, and takes it once the series is not written', () => {
    const HOUR = 3_600_000
    const hold = { coldRunsBeforeMs: 10 * HOUR, maxPoints: 100 }
    const head = new Head()
    // A backfill: series 1 has hours 0 and 1 and the start of hour 2, series 2 the start of hour 9
    // (a run that reaches the hot tier's start, 10 h, still ends at or before it).
    head.append(1, Float64Array.of(0, 60_000, HOUR, 2 * HOUR, 2 * HOUR + 10_000), Float64Array.of(1, 2, 3, 4, 5), 1)
    head.append(2, Float64Array.of(9 * HOUR), Float64Array.of(6), 1)
    // Series 3's newest run ends past the hot tier's start: it is not held.
    head.append(3, Float64Array.of(9 * HOUR, 10 * HOUR), Float64Array.of(7, 8), 1)
    const first = takeDue(head, 100 * HOUR, 0, false, hold)
    assert.deepEqual(
      first.map((t) => [t.handle, ...t.ts]),
      [
        [1, 0, 60_000, HOUR],
        [3, 9 * HOUR, 10 * HOUR],
      ],
    )
    head.finishSeal(first)
    assert.equal(head.bufferedPoints, 3)
    assert.deepEqual([...head.read(1, 0, 3 * HOUR)!.vals], [4, 5])
    // Series 1 goes on into hour 3: hour 2 is complete and goes, hour 3 stays.
    head.append(1, Float64Array.of(2 * HOUR + 20_000, 3 * HOUR), Float64Array.of(9, 10), 2)
    const second = takeDue(head, 100 * HOUR, 0, false, hold)
    assert.deepEqual(
      second.map((t) => [t.handle, ...t.ts]),
      [
        [1, 2 * HOUR, 2 * HOUR + 10_000, 2 * HOUR + 20_000],
        [2, 9 * HOUR],
      ],
      'series 2 was not written since the last seal: its run goes whole',
    )
    head.finishSeal(second)
    // Nothing written since: the held run goes too.
    const third = takeDue(head, 100 * HOUR, 0, false, hold)
    assert.deepEqual(
      third.map((t) => [t.handle, ...t.ts]),
      [[1, 3 * HOUR]],
    )
    head.finishSeal(third)
    assert.equal(head.bufferedPoints, 0)
  })

  it('holds no run when the held runs would keep more points than allowed, nor when forced', () => {
    const HOUR = 3_600_000
    const fill = (head: Head) => {
      for (let handle = 0; handle < 3; handle++) {
        head.append(handle, Float64Array.of(0, HOUR, HOUR + 1000, HOUR + 2000), Float64Array.of(1, 2, 3, 4), 1)
      }
    }
    const points = (taken: Taken[]) => taken.reduce((n, t) => n + t.ts.length, 0)
    const head = new Head()
    fill(head)
    // Three held runs of three points each: 9, more than 8.
    assert.equal(points(takeDue(head, 100 * HOUR, 0, false, { coldRunsBeforeMs: 10 * HOUR, maxPoints: 8 })), 12)
    const held = new Head()
    fill(held)
    assert.equal(points(takeDue(held, 100 * HOUR, 0, false, { coldRunsBeforeMs: 10 * HOUR, maxPoints: 9 })), 3)
    const forced = new Head()
    fill(forced)
    assert.equal(points(takeDue(forced, 100 * HOUR, 0, true)), 12)
  })

  it('a series emptied by a seal takes new points while the taken ones stay as they were', () => {
    const head = new Head()
    for (let handle = 0; handle < 3; handle++) {
      head.append(handle, Float64Array.of(1000, 2000), Float64Array.of(handle, handle + 0.5), 1)
    }
    // Every point is due: the buffers are emptied whole and kept for what comes next.
    const first = takeDue(head, 1_000_000, 0, false)
    assert.deepEqual(
      first.map((t) => [t.handle, ...t.ts, ...t.vals]),
      [
        [0, 1000, 2000, 0, 0.5],
        [1, 1000, 2000, 1, 1.5],
        [2, 1000, 2000, 2, 2.5],
      ],
    )
    // Written again while the seal runs: the taken runs must not see the new points.
    head.append(0, Float64Array.of(3000, 4000), Float64Array.of(30, 40), 2)
    head.append(1, Float64Array.of(2000), Float64Array.of(99), 2)
    assert.deepEqual([...first[0]!.ts, ...first[0]!.vals], [1000, 2000, 0, 0.5])
    assert.deepEqual([...first[1]!.ts, ...first[1]!.vals], [1000, 2000, 1, 1.5])
    // Reads merge the points being sealed with the new ones, the newer winning.
    assert.deepEqual([...head.read(1, 0, 10_000)!.vals], [1, 99])
    assert.equal(head.minSeq(), 1)
    head.finishSeal(first)
    assert.equal(head.bufferedPoints, 3)
    assert.equal(head.minSeq(), 2)
    assert.deepEqual([...head.read(0, 0, 10_000)!.ts], [3000, 4000])
    assert.equal(head.read(2, 0, 10_000), undefined)
    // The next seal takes only the new points, and series 2, written no more, leaves the head.
    const second = takeDue(head, 1_000_000, 0, false)
    assert.deepEqual(
      second.map((t) => [t.handle, ...t.ts, ...t.vals]),
      [
        [0, 3000, 4000, 30, 40],
        [1, 2000, 99],
      ],
    )
    head.finishSeal(second)
    assert.equal(head.bufferedPoints, 0)
    assert.equal(head.minSeq(), undefined)
    head.append(2, Float64Array.of(5000), Float64Array.of(5), 3)
    assert.deepEqual([...head.read(2, 0, 10_000)!.vals], [5])
  })

  it('after a seal, points written without versions count as version 0 against later versioned ones', () => {
    const head = new Head()
    head.append(4, Float64Array.of(1000, 2000), Float64Array.of(1, 2), 1, Float64Array.of(100, 100))
    const first = takeDue(head, 1_000_000, 0, true)
    assert.deepEqual([...first[0]!.vers!], [100, 100])
    head.finishSeal(first)
    // The series' buffer is kept with its versions array from the sealed cycle; a point without a
    // version, then a versioned one of the same timestamp and one later point.
    head.append(4, Float64Array.of(3000), Float64Array.of(3), 2)
    head.append(4, Float64Array.of(3000, 4000), Float64Array.of(30, 40), 3, Float64Array.of(50, 50))
    assert.deepEqual([...head.versionsAt(4, Float64Array.of(3000, 4000))], [50, 50])
    assert.deepEqual([...head.read(4, 0, 10_000)!.vals], [30, 40])
    // A later point without a version has version 0.
    head.append(4, Float64Array.of(5000), Float64Array.of(5), 4)
    const second = takeDue(head, 1_000_000, 0, true)
    assert.deepEqual(
      second.map((t) => [...t.ts, ...t.vals, ...t.vers!]),
      [[3000, 4000, 5000, 30, 40, 5, 50, 50, 0]],
    )
    // The taken run keeps its versions when the buffer takes versioned points again.
    head.append(4, Float64Array.of(6000), Float64Array.of(6), 5, Float64Array.of(70))
    assert.deepEqual([...second[0]!.vers!], [50, 50, 0])
    head.finishSeal(second)
    assert.deepEqual([...head.versionsAt(4, Float64Array.of(6000))], [70])
  })

  it('one version for a whole push is the version of each of its points, beside pushes with one per point', () => {
    const head = new Head()
    head.append(5, Float64Array.of(1000, 2000), Float64Array.of(1, 2), 1)
    head.append(5, Float64Array.of(2000, 3000), Float64Array.of(20, 30), 2, 40)
    head.append(5, Float64Array.of(3000, 4000), Float64Array.of(31, 41), 3, Float64Array.of(39, 60))
    head.append(5, Float64Array.of(1000), Float64Array.of(11), 4, 7)
    assert.deepEqual([...head.versionsAt(5, Float64Array.of(1000, 2000, 3000, 4000))], [7, 40, 40, 60])
    assert.deepEqual([...head.read(5, 0, 10_000)!.vals], [11, 20, 30, 41])
    const taken = takeDue(head, 1_000_000, 0, true)
    assert.deepEqual(
      taken.map((t) => [...t.ts, ...t.vals, ...t.vers!]),
      [[1000, 2000, 3000, 4000, 11, 20, 30, 41, 7, 40, 40, 60]],
    )
  })

  it('points taken from part of a buffer stay as they were when the buffer takes new ones', () => {
    const head = new Head()
    head.append(7, Float64Array.of(1000, 40_000, 2000), Float64Array.of(1, 4, 2), 1)
    const taken = takeDue(head, 45_000, 2000, false)
    head.append(7, Float64Array.of(41_000, 42_000, 43_000), Float64Array.of(5, 6, 7), 2)
    assert.deepEqual([...taken[0]!.ts, ...taken[0]!.vals], [1000, 2000, 1, 2])
    head.finishSeal(taken)
    assert.deepEqual([...head.read(7, 0, 100_000)!.vals], [4, 5, 6, 7])
  })
})

describe('write buffer sequences', () => {
  /**
   * The buffer family's records are trimmed below Head.minSeq(), so it must never pass the oldest
   * write of a point still held. The model keeps a sequence per point: a seal's run must carry the
   * oldest sequence of the points it took, and the buffer the oldest of the points it kept, through
   * writes of many points and of one, partial and whole seals, failed seals and deletes,
   * also of points being sealed. The buffered point count must follow.
   */
  it('minSeq is the oldest write of any point still held, through seals, failed seals and drops', () => {
    const BLOCK = 30_000
    for (let seed = 1; seed <= 40; seed++) {
      const rand = rng(seed)
      const head = new Head()
      /** Per point: its handle, timestamp and write sequence, and the seal's run holding it. */
      let model: { handle: number; ts: number; seq: number; run: Taken | undefined }[] = []
      let seq = 0
      let now = 10 * BLOCK
      const seals: Taken[][] = []
      const expected = (): number | undefined => {
        let min = Number.POSITIVE_INFINITY
        for (const p of model) if (p.run === undefined && p.seq < min) min = p.seq
        for (const taken of seals) for (const t of taken) if (t.minSeq < min) min = t.minSeq
        return min === Number.POSITIVE_INFINITY ? undefined : min
      }
      for (let step = 0; step < 300; step++) {
        const what = rand()
        if (what < 0.55) {
          // A write: a few series, one point or many each, around the present, under one sequence.
          seq += 1 + Math.floor(rand() * 3)
          const series = 1 + Math.floor(rand() * 3)
          for (let s = 0; s < series; s++) {
            const handle = Math.floor(rand() * 4)
            const n = 1 + Math.floor(rand() * (rand() < 0.5 ? 3 : 40))
            const ts = Float64Array.from({ length: n }, () => now - Math.floor(rand() * 3 * BLOCK))
            head.append(handle, ts, new Float64Array(n), seq)
            for (const t of ts) model.push({ handle, ts: t, seq, run: undefined })
          }
          now += Math.floor(rand() * BLOCK)
        } else if (what < 0.75) {
          // A seal of the ended blocks, or of everything.
          const force = rand() < 0.2
          const idle = Math.floor(rand() * BLOCK)
          const boundary = Math.floor((now - idle) / BLOCK) * BLOCK
          const taken = takeDue(head, now, idle, force)
          for (const t of taken) {
            let min = Number.POSITIVE_INFINITY
            for (const p of model) {
              if (p.handle !== t.handle || p.run !== undefined || (!force && p.ts >= boundary)) continue
              p.run = t
              if (p.seq < min) min = p.seq
            }
            assert.equal(t.minSeq, min, `seed ${seed}, step ${step}: the run of series ${t.handle}`)
          }
          seals.push(taken)
        } else if (what < 0.9 && seals.length > 0) {
          // The oldest seal finishes, or fails and puts its points back under its runs' sequences.
          const taken = seals.shift() as Taken[]
          const runs = new Set(taken)
          if (rand() < 0.7) {
            head.finishSeal(taken)
            model = model.filter((p) => p.run === undefined || !runs.has(p.run))
          } else {
            head.abortSeal(taken)
            // A run holds one point per timestamp, the last written: so do the points put back.
            const back = new Set<string>()
            model = model.filter((p) => {
              if (p.run === undefined || !runs.has(p.run)) return true
              const key = `${p.handle} ${p.ts}`
              if (back.has(key)) return false
              back.add(key)
              p.seq = p.run.minSeq
              p.run = undefined
              return true
            })
          }
        } else {
          // A delete of a time range of one series drops its points, buffered or being sealed. (The
          // engine runs deletes and seals one at a time, but the head must stay consistent.)
          const handle = Math.floor(rand() * 4)
          const start = now - Math.floor(rand() * 3 * BLOCK)
          const end = start + Math.floor(rand() * BLOCK)
          head.drop(handle, start, end)
          model = model.filter((p) => p.handle !== handle || p.ts < start || p.ts >= end)
        }
        assert.equal(head.minSeq(), expected(), `seed ${seed}, step ${step}`)
        // Each run being sealed holds one point per timestamp.
        const sealed = new Map<Taken, Set<number>>()
        for (const p of model) if (p.run !== undefined) sealed.set(p.run, (sealed.get(p.run) ?? new Set()).add(p.ts))
        let buffered = model.filter((p) => p.run === undefined).length
        for (const times of sealed.values()) buffered += times.size
        assert.equal(head.bufferedPoints, buffered, `seed ${seed}, step ${step}: buffered points`)
      }
    }
  })
})
