// A cluster in the middle of a join (in-memory transport, real engines): a write of a moving range
// is on its new owner once answered; reads still count each point once; DeleteSeries and repair
// wait for the change to end.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout } from 'node:timers/promises'
import { AntiEntropy } from '../../src/cluster/anti-entropy.js'
import {
  ClusterEngine,
  type ClusterView,
  type MemberInfo,
  type RingSnapshot,
} from '../../src/cluster/cluster-engine.js'
import { MemoryNetwork, type MemoryPeerTransport } from '../../src/cluster/memory-transport.js'
import { peerService } from '../../src/cluster/peer-service.js'
import { Ring, seriesToken } from '../../src/cluster/ring.js'
import { SeriesTokens } from '../../src/cluster/shard-filter.js'
import { chooseTokens, evenTokens } from '../../src/cluster/tokens.js'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { silentLogger } from '../../src/engine/config.js'
import { UnavailableError } from '../../src/model/errors.js'
import { DEFAULT_WRITE_LIMITS } from '../../src/model/limits.js'
import { canonicalSeriesKey } from '../../src/model/series-key.js'
import type { SeriesWrite } from '../../src/model/types.js'

const T0 = Date.UTC(2026, 0, 1)
const SERIES = 60

interface TestNode {
  readonly id: string
  readonly engine: BasicEngine
  readonly cluster: ClusterEngine
  readonly repair: AntiEntropy
  readonly transport: MemoryPeerTransport
}

function series(i: number): SeriesWrite {
  return { metric: 'm', tags: [{ key: 's', value: `s${i}` }], timestamps: [T0, T0 + 1000], values: [i, i + 1] }
}

describe('a cluster while a node joins', () => {
  let dir: string
  const nodes: TestNode[] = []
  const node = (id: string): TestNode => nodes.find((n) => n.id === id)!
  const active: MemberInfo[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'v3-cluster-moving-'))
    const net = new MemoryNetwork()
    for (const id of ['a', 'b', 'c']) {
      const tokens = active.length === 0 ? evenTokens(id, 16) : chooseTokens(active, id, 16)
      active.push({ id, grpcAddress: `${id}:1`, peerAddress: `memory:${id}`, tokens, state: 'active' })
    }
    const joining: MemberInfo = {
      id: 'd',
      grpcAddress: 'd:1',
      peerAddress: 'memory:d',
      tokens: chooseTokens(active, 'd', 16),
      state: 'joining',
    }
    const ring: RingSnapshot = { version: 2, replicationFactor: 2, members: [...active, joining] }
    const view: ClusterView = {
      ring: () => ring,
      healthyIds: () => new Set(['a', 'b', 'c', 'd']),
      leaderId: () => 'a',
      move: () => undefined,
      consul: () => ({ reachable: true, outages: 0 }),
    }
    for (const id of ['a', 'b', 'c', 'd']) {
      const engine = new BasicEngine({ dataDir: join(dir, id), sync: 'off', resultCachePoints: 0 })
      await engine.open()
      const transport = net.transport(id, { address: `memory:${id}` })
      const tokens = new SeriesTokens()
      const cluster = new ClusterEngine(
        engine,
        {
          limits: DEFAULT_WRITE_LIMITS,
          peerTimeoutMs: 5_000,
          maxPointsPerQuery: 1_000_000,
          writeConsistency: 'quorum',
          readTimeoutMs: 2_000,
        },
        silentLogger,
        tokens,
      )
      const repair = new AntiEntropy(
        engine,
        { selfId: id, transport, view },
        tokens,
        { intervalMs: 3_600_000, peerTimeoutMs: 5_000, limits: DEFAULT_WRITE_LIMITS },
        silentLogger,
      )
      const serve = peerService(engine, tokens, (body, ctx) => repair.runForPeer(body, ctx))
      // The joining node answers slowly, so a write answered without waiting for it would show.
      await transport.listen(id === 'd' ? async (...call) => setTimeout(200).then(() => serve(...call)) : serve)
      cluster.attach({ selfId: id, transport, view, repair })
      nodes.push({ id, engine, cluster, repair, transport })
    }
  })

  after(async () => {
    for (const n of nodes) {
      await n.repair.close()
      await n.transport.close()
      await n.engine.close()
    }
    await rm(dir, { recursive: true, force: true })
  })

  it('answers a write once the joining node holds its moving series too', async () => {
    await node('a').cluster.write({ series: Array.from({ length: SERIES }, (_, i) => series(i)) })
    const withD = new Ring(
      [...active.map((m) => ({ id: m.id, tokens: m.tokens })), { id: 'd', tokens: chooseTokens(active, 'd', 16) }],
      2,
    )
    const expected = Array.from({ length: SERIES }, (_, i) => i).filter((i) =>
      withD.owners(seriesToken(canonicalSeriesKey('m', [{ key: 's', value: `s${i}` }])), 2).includes('d'),
    )
    assert.ok(expected.length > 0, 'some series move to d')
    const held = (await node('d').engine.listSeries({ metric: 'm', matchers: [] })).map((s) =>
      Number(s.tags[0]!.value.slice(1)),
    )
    assert.deepEqual(
      held.sort((x, y) => x - y),
      expected,
      'd holds exactly its moving series, at once',
    )
  })

  it('reads from the serving owners only, counting each point once', async () => {
    const [count] = await node('b').cluster.query({
      selector: { metric: 'm', matchers: [] },
      startMs: T0,
      endMs: T0 + 2000,
      aggregation: { func: 'count', stepMs: 0, groupBy: [], mergeSeries: true },
    })
    assert.equal(count?.values[0], SERIES * 2)
  })

  it('refuses DeleteSeries and repair until the change is over', async () => {
    await assert.rejects(node('c').cluster.deleteSeries({ selector: { metric: 'm', matchers: [] } }), UnavailableError)
    await assert.rejects(node('c').repair.repairCluster(), UnavailableError)
    assert.equal((await node('a').cluster.listSeries({ metric: 'm', matchers: [] })).length, SERIES, 'nothing deleted')
  })
})
