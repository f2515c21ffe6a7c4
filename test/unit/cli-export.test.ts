// v3 export writes its CSV in batches that respect the stream's backpressure, not a write per point.
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { test } from 'node:test'
import { exportCsv } from '../../src/cli/export.js'
import { parseSelector } from '../../src/cli/selector.js'
import type { SeriesSource } from '../../src/cli/series-source.js'
import type { SeriesPoints } from '../../src/model/types.js'

const T0 = Date.UTC(2026, 0, 1)
const N = 20_000

function source(): SeriesSource {
  const tags = [{ key: 'host', value: 'a' }]
  const points: SeriesPoints = {
    metric: 'cpu',
    tags,
    timestamps: Float64Array.from({ length: N }, (_, i) => T0 + i * 1000),
    values: Float64Array.from({ length: N }, (_, i) => i / 4),
  }
  return {
    listSeries: async () => [{ metric: 'cpu', tags }],
    read: async function* () {
      yield [points]
    },
    count: async () => [],
  }
}

/** A slow sink with a small buffer: write() soon answers false, and 'drain' comes later. */
function slowSink(): { sink: Writable; writes: number[]; text: () => string } {
  const chunks: string[] = []
  const writes: number[] = []
  const sink = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString())
      writes.push(chunk.length)
      setImmediate(done)
    },
  })
  return { sink, writes, text: () => chunks.join('') }
}

for (const wide of [false, true]) {
  test(`export ${wide ? 'wide' : 'long'}: about one write per 64 KiB, every point in order`, async () => {
    const { sink, writes, text } = slowSink()
    const result = await exportCsv(source(), [parseSelector('cpu')], sink, {
      startMs: T0,
      endMs: T0 + N * 1000,
      wide,
      rfc3339: false,
    })
    assert.equal(result.points, N)
    const lines = text().trimEnd().split('\n')
    assert.equal(lines.length, N + 1)
    assert.equal(
      lines[N],
      wide ? `${T0 + (N - 1) * 1000},a,${(N - 1) / 4}` : `cpu,${T0 + (N - 1) * 1000},${(N - 1) / 4},a`,
    )
    assert.ok(writes.length < 20, `${writes.length} writes for ${N} points`)
  })
}
