import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { ENCODING_BUFFER_V1 } from '../../src/codec/schema.js'
import {
  decodeBlockVersions,
  encodeBlockVersions,
  encodeVersionKey,
  versionBlockBound,
  versionKeyBlock,
} from '../../src/codec/version-codec.js'
import { sortDedupLastWins } from '../../src/engine/head.js'
import { decodeBufferRecord, encodeBufferRecord } from '../../src/engine/write-buffer.js'
import { ValidationError } from '../../src/model/errors.js'
import { HLC_LOGICAL_STEPS, HybridLogicalClock, isVersion, MAX_VERSION, versionMs } from '../../src/model/hlc.js'
import { validateWriteBatch } from '../../src/model/validate.js'

describe('hybrid logical clock', () => {
  test('versions strictly increase, also when the wall clock stands still or goes back', () => {
    let wall = 1_000_000
    const clock = new HybridLogicalClock(() => wall)
    const a = clock.now()
    const b = clock.now()
    wall -= 500
    const c = clock.now()
    assert.equal(a, 1_000_000 * HLC_LOGICAL_STEPS)
    assert.equal(b, a + 1)
    assert.equal(c, b + 1)
    wall += 10_000
    assert.equal(clock.now(), wall * HLC_LOGICAL_STEPS)
  })

  test('observe moves the clock past a peer version, within the drift bound', () => {
    const wall = 1_000_000
    const clock = new HybridLogicalClock(() => wall, 60_000)
    const remote = (wall + 5_000) * HLC_LOGICAL_STEPS + 7
    assert.equal(clock.observe(remote), true)
    assert.equal(clock.now(), remote + 1)
    assert.equal(clock.observe(5), true)
    assert.ok(clock.now() > remote)
    // Too far ahead, or not a version: ignored.
    assert.equal(clock.observe((wall + 120_000) * HLC_LOGICAL_STEPS), false)
    assert.equal(clock.observe(-1), false)
    assert.equal(clock.observe(1.5), false)
    assert.equal(clock.now(), remote + 3)
  })

  test('bounds: versions of today are exact doubles until the year 2248', () => {
    const now = new HybridLogicalClock().now()
    assert.ok(isVersion(now))
    assert.equal(versionMs(now), Math.floor(now / HLC_LOGICAL_STEPS))
    assert.ok(new Date(versionMs(MAX_VERSION)).getUTCFullYear() >= 2248)
    assert.equal(isVersion(MAX_VERSION + 1), false)
  })
})

describe('validation merges entries by version', () => {
  test('the highest version of a timestamp wins, request order breaks ties', () => {
    const batch = validateWriteBatch({
      series: [
        { metric: 'cpu', tags: [], timestamps: [1, 2, 3], values: [10, 20, 30], version: 5 },
        { metric: 'cpu', tags: [], timestamps: [1, 2], values: [11, 21], version: 4 },
        { metric: 'cpu', tags: [], timestamps: [2, 3], values: [22, 32], version: 5 },
      ],
    })
    const [s] = batch.series
    assert.deepEqual(Array.from(s!.timestamps), [1, 2, 3])
    assert.deepEqual(Array.from(s!.values), [10, 22, 32])
    assert.deepEqual(Array.from(s!.versions!), [5, 5, 5])
  })

  test('one entry carries one version for all its points; no version, no versions', () => {
    const one = validateWriteBatch({
      series: [{ metric: 'cpu', tags: [], timestamps: [2, 1], values: [2, 1], version: 9 }],
    })
    assert.equal(one.series[0]!.version, 9)
    assert.equal(one.series[0]!.versions, undefined)
    const none = validateWriteBatch({ series: [{ metric: 'cpu', tags: [], timestamps: [1], values: [1] }] })
    assert.equal(none.series[0]!.versions, undefined)
    assert.equal(none.series[0]!.version, undefined)
  })

  test('a version that is not a non-negative integer is refused', () => {
    assert.throws(
      () => validateWriteBatch({ series: [{ metric: 'cpu', tags: [], timestamps: [1], values: [1], version: -3 }] }),
      (err: unknown) => err instanceof ValidationError && err.violations[0]?.field === 'series[0].version',
    )
  })
})

describe('head and storage formats with versions', () => {
  test('sortDedupLastWins keeps the highest version, then the last', () => {
    const run = sortDedupLastWins([3, 1, 3, 3], [30, 10, 31, 32], [2, 1, 5, 5])
    assert.deepEqual(Array.from(run.ts), [1, 3])
    assert.deepEqual(Array.from(run.vals), [10, 32])
  })

  test('buffer records: V1 without versions, V2 round trip with them', () => {
    const id = Buffer.alloc(8, 1)
    const ts = Float64Array.of(1, 2)
    const vals = Float64Array.of(3, 4)
    const plain = encodeBufferRecord([{ id }], [{ timestamps: ts, values: vals }])
    assert.equal(plain[0], ENCODING_BUFFER_V1)
    assert.equal(decodeBufferRecord(plain, 0)[0]!.vers, undefined)
    const record = encodeBufferRecord(
      [{ id }, { id }, { id }],
      [
        { timestamps: ts, values: vals, versions: Float64Array.of(7, 7) },
        { timestamps: ts, values: vals, versions: Float64Array.of(7, 8) },
        { timestamps: ts, values: vals },
      ],
    )
    const back = decodeBufferRecord(record, 0)
    assert.deepEqual(Array.from(back[0]!.vers!), [7, 7])
    assert.deepEqual(Array.from(back[1]!.vers!), [7, 8])
    assert.equal(back[2]!.vers, undefined)
    assert.deepEqual(Array.from(back[2]!.vals), [3, 4])
  })

  test('buffer records: one version for all points is the same record as that version per point', () => {
    const id = Buffer.alloc(8, 2)
    const ts = Float64Array.of(1, 2, 3)
    const vals = Float64Array.of(3, 4, 5)
    const one = encodeBufferRecord([{ id }], [{ timestamps: ts, values: vals, version: 9 }])
    const each = encodeBufferRecord([{ id }], [{ timestamps: ts, values: vals, versions: Float64Array.of(9, 9, 9) }])
    assert.deepEqual(one, each)
    assert.deepEqual(Array.from(decodeBufferRecord(one, 0)[0]!.vers!), [9, 9, 9])
  })

  test('versions values: runs of equal versions round trip, version 0 left out', () => {
    const start = 30_000 * 1000
    const ts = [start, start + 5, start + 10, start + 29_999]
    const value = encodeBlockVersions(start, ts, [9, 9, 0, 12])!
    assert.equal(value.length, 1 + 1 + (8 + 1 + 2) + (8 + 1 + 3))
    const back = decodeBlockVersions(value, start)
    assert.deepEqual(Array.from(back.ts), [start, start + 5, start + 29_999])
    assert.deepEqual(Array.from(back.vers), [9, 9, 12])
    assert.equal(encodeBlockVersions(start, ts, [0, 0, 0, 0]), undefined)
  })

  test('versions keys sort by block first, and a block bound ends the range of the blocks before it', () => {
    const a = encodeVersionKey(-5, Buffer.alloc(8, 0xff))
    const b = encodeVersionKey(7, Buffer.alloc(8, 0))
    assert.ok(Buffer.compare(a, b) < 0)
    assert.ok(Buffer.compare(a, versionBlockBound(7)) < 0 && Buffer.compare(versionBlockBound(7), b) < 0)
    assert.equal(versionKeyBlock(b), 7)
  })
})
