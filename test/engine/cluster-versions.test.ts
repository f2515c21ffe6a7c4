import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { PeerKind } from '../../gen/v3storage/internal/v1/peer.js'
import { pickWinner } from '../../src/cluster/conflict.js'
import { encodePeerWrite } from '../../src/cluster/peer-codec.js'
import type { SeriesWrite } from '../../src/model/types.js'
import {
  activeMembers,
  type MemoryCluster,
  type MemoryClusterNode,
  startMemoryCluster,
} from '../fixtures/memory-cluster.js'

// Recent: write versions are kept for blocks newer than the version window only.
const T0 = Math.floor(Date.now() / 3_600_000) * 3_600_000
const IDS = ['a', 'b', 'c'] as const
const V1 = (T0 + 1_000) * 1024
const V2 = (T0 + 2_000) * 1024

function entry(series: string, ts: number, value: number, version?: number): SeriesWrite & { version?: number } {
  return {
    metric: 'v',
    tags: [{ key: 's', value: series }],
    timestamps: [ts],
    values: [value],
    ...(version === undefined ? {} : { version }),
  }
}

const selector = { metric: 'v', matchers: [{ key: 's', value: 'x', op: 'eq' as const }] }
const range = { selector, startMs: T0 - 3_600_000, endMs: T0 + 3_600_000 }

describe('write versions across replicas', () => {
  let dir: string
  let cluster: MemoryCluster
  const node = (id: string): MemoryClusterNode => cluster.node(id)

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'v3-cluster-versions-'))
    cluster = await startMemoryCluster({
      dir,
      members: activeMembers(IDS),
      replicationFactor: 3,
      writeConsistency: 'all',
      engine: { resultCachePoints: 0 },
    })
  })

  after(async () => {
    await cluster?.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('picks the highest version, then the larger bit pattern', () => {
    assert.equal(
      pickWinner([
        { value: 1, version: 5 },
        { value: 2, version: 3 },
      ]).value,
      1,
    )
    assert.equal(
      pickWinner([
        { value: 1, version: 3 },
        { value: 2, version: 3 },
      ]).value,
      2,
    )
    assert.equal(
      pickWinner([
        { value: 2, version: 0 },
        { value: 1, version: 0 },
      ]).value,
      2,
    )
  })

  it('the coordinator gives every owner the same version, newer for each write, and peers observe it', async () => {
    await node('a').cluster.write({ series: [entry('w', T0, 1)] })
    const first = await Promise.all(
      cluster.nodes.map((n) => n.engine.versionsOf(entry('w', T0, 0), Float64Array.of(T0))),
    )
    const v = first[0]![0]!
    assert.ok(v > 0)
    for (const f of first) assert.equal(f[0], v)
    // b has seen a's version: the next write b coordinates gets a larger one.
    await node('b').cluster.write({ series: [entry('w', T0, 2)] })
    const second = await node('c').engine.versionsOf(entry('w', T0, 0), Float64Array.of(T0))
    assert.ok(second[0]! > v)
    assert.ok(node('c').clock.now() > second[0]!)
    const [s] = await node('c').cluster.query(
      { ...range, selector: { ...selector, matchers: [] } },
      {
        consistency: 'all',
      },
    )
    assert.deepEqual(Array.from(s!.values), [2])
  })

  it('QUORUM and ALL reads and their aggregates return the newer write, whichever replica is asked first', async () => {
    // The newer write reached b and c (a QUORUM), the older one only a, the replica a read asks
    // first, whose value the first-asked rule would have returned. The older value is the larger,
    // so the fallback rule for equal versions (the larger bit pattern) would return it too.
    await node('a').engine.write({ series: [entry('x', T0, 9, V1)] })
    await node('c').engine.write({ series: [entry('x', T0, 2, V2)] })
    await node('b').engine.write({ series: [entry('x', T0, 2, V2)] })
    await node('b').engine.compact()
    for (const consistency of ['quorum', 'all'] as const) {
      const [raw] = await node('a').cluster.query(range, { consistency })
      assert.deepEqual(Array.from(raw!.values), [2], consistency)
      const [sum] = await node('a').cluster.query(
        { ...range, aggregation: { func: 'sum', stepMs: 0, groupBy: [], mergeSeries: false } },
        { consistency },
      )
      assert.deepEqual(Array.from(sum!.values), [2], `${consistency} sum`)
      const [latest] = await node('a').cluster.latest(selector, { consistency })
      assert.deepEqual(Array.from(latest!.values), [2], `${consistency} latest`)
    }
  })

  it('a repair pass converges every replica to the newer write and moves its version', async () => {
    await node('a').cluster.repair()
    for (const n of cluster.nodes) {
      const [s] = await n.engine.query(range)
      assert.deepEqual(Array.from(s!.values), [2], n.id)
      assert.deepEqual(Array.from(await n.engine.versionsOf(entry('x', T0, 0), Float64Array.of(T0))), [V2], n.id)
    }
  })

  it('hints replayed after a newer direct write do not overwrite it, also as one concatenated write', async () => {
    const c = node('c')
    const send = (body: Uint8Array) =>
      node('a').transport.request(
        { id: 'c', address: 'memory:c' },
        { kind: PeerKind.PEER_KIND_WRITE, body, ringVersion: 1, timeoutMs: 5_000 },
      )
    // The newer write reached c directly (and is sealed); the older one arrives later as a hint.
    await send(
      encodePeerWrite([{ ...entry('h', T0, 2, V2), timestamps: Float64Array.of(T0), values: Float64Array.of(2) }]),
    )
    await c.engine.compact()
    await send(
      encodePeerWrite([{ ...entry('h', T0, 1, V1), timestamps: Float64Array.of(T0), values: Float64Array.of(1) }]),
    )
    const read = async (series: string) => {
      const [s] = await c.engine.query({
        ...range,
        selector: { metric: 'v', matchers: [{ key: 's', value: series, op: 'eq' }] },
      })
      return Array.from(s!.values)
    }
    assert.deepEqual(await read('h'), [2])
    await c.engine.compact()
    assert.deepEqual(await read('h'), [2])
    // Several hints concatenated into one write: each entry keeps its own version.
    const newer = encodePeerWrite([
      { ...entry('k', T0, 2, V2), timestamps: Float64Array.of(T0), values: Float64Array.of(2) },
    ])
    const older = encodePeerWrite([
      { ...entry('k', T0, 1, V1), timestamps: Float64Array.of(T0), values: Float64Array.of(1) },
    ])
    await send(Buffer.concat([newer, older]))
    assert.deepEqual(await read('k'), [2])
    await c.engine.compact()
    assert.deepEqual(await read('k'), [2])
  })
})
