// A read that matches more series than a function call can take as arguments (about 125,000 on
// Node 20's default stack), through a cluster node that merges the answers of three owners.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { SeriesWrite } from '../../src/model/types.js'
import { activeMembers, type MemoryCluster, startMemoryCluster } from '../fixtures/memory-cluster.js'

const T0 = Math.floor(Date.now() / 3_600_000) * 3_600_000
const SERIES = 140_000
const PER_WRITE = 10_000

describe('a cluster read of 140,000 series', () => {
  let dir: string
  let cluster: MemoryCluster

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'v3-cluster-wide-'))
    cluster = await startMemoryCluster({
      dir,
      members: activeMembers(['a', 'b', 'c']),
      replicationFactor: 1,
      writeConsistency: 'one',
      engine: { resultCachePoints: 0 },
      // One thread serves all three nodes here, so an owner's part takes longer than on its own.
      readTimeoutMs: 120_000,
      peerTimeoutMs: 120_000,
    })
    const entry = cluster.node('a').cluster
    for (let from = 0; from < SERIES; from += PER_WRITE) {
      const series: SeriesWrite[] = []
      for (let i = from; i < from + PER_WRITE; i++) {
        series.push({ metric: 'wide', tags: [{ key: 'i', value: String(i) }], timestamps: [T0], values: [i] })
      }
      await entry.write({ series })
    }
  })

  after(async () => {
    await cluster?.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('answers a query and a series listing with every series', async () => {
    const entry = cluster.node('a').cluster
    const got = await entry.query({ selector: { metric: 'wide', matchers: [] }, startMs: T0, endMs: T0 + 1 })
    assert.equal(got.length, SERIES)
    let sum = 0
    for (const s of got) sum += s.values[0] ?? Number.NaN
    assert.equal(sum, (SERIES * (SERIES - 1)) / 2)
    const listed = await entry.listSeries({ metric: 'wide', matchers: [] })
    assert.equal(listed.length, SERIES)
  })
})
