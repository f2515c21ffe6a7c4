// A cluster in the middle of a join (in-memory transport, real engines): a write of a moving range
// is on its new owner once answered; reads still count each point once; DeleteSeries and repair
// wait for the change to end.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout } from 'node:timers/promises'
import { PeerKind } from '../../gen/v3storage/internal/v1/peer.js'
import type { MemberInfo, RingSnapshot } from '../../src/cluster/cluster-engine.js'
import { Ring } from '../../src/cluster/ring.js'
import { chooseTokens, evenTokens } from '../../src/cluster/tokens.js'
import { UnavailableError } from '../../src/model/errors.js'
import { canonicalSeriesKey, seriesToken } from '../../src/model/series-key.js'
import type { SeriesWrite } from '../../src/model/types.js'
import {
  activeMembers,
  type MemoryCluster,
  type MemoryClusterNode,
  startMemoryCluster,
} from '../fixtures/memory-cluster.js'

const T0 = Date.UTC(2026, 0, 1)
const SERIES = 60

function series(i: number): SeriesWrite {
  return { metric: 'm', tags: [{ key: 's', value: `s${i}` }], timestamps: [T0, T0 + 1000], values: [i, i + 1] }
}

describe('a cluster while a node joins', () => {
  let dir: string
  let cluster: MemoryCluster
  const node = (id: string): MemoryClusterNode => cluster.node(id)
  const active: MemberInfo[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'v3-cluster-moving-'))
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
    cluster = await startMemoryCluster({
      dir,
      members: [...active, joining],
      ringVersion: 2,
      replicationFactor: 2,
      leaderId: 'a',
      writeConsistency: 'quorum',
      engine: { resultCachePoints: 0 },
      // The joining node answers slowly, so a write answered without waiting for it would show.
      serve: (id, serve) => (id === 'd' ? async (...call) => setTimeout(200).then(() => serve(...call)) : serve),
    })
  })

  after(async () => {
    await cluster?.close()
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

describe('a DeleteSeries under way when a membership change begins', () => {
  it('holds the change back at its first step (settledAt) until it is done', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-cluster-moving-'))
    const members = activeMembers(['a', 'b', 'c'])
    let ring: RingSnapshot = { version: 1, replicationFactor: 2, members }
    let entered = false
    let open: () => void = () => {}
    const gate = new Promise<void>((resolve) => {
      open = resolve
    })
    const cluster = await startMemoryCluster({
      dir,
      members,
      replicationFactor: 2,
      writeConsistency: 'quorum',
      ring: () => ring,
      // b holds its part of the delete until the test lets it go.
      serve: (id, serve) =>
        id === 'b'
          ? async (from, kind, body, meta) => {
              if (kind === PeerKind.PEER_KIND_DELETE_SERIES) {
                entered = true
                await gate
              }
              return serve(from, kind, body, meta)
            }
          : serve,
    })
    try {
      const a = cluster.node('a').cluster
      await a.write({ series: Array.from({ length: 10 }, (_, i) => series(i)) })
      const deleting = a.deleteSeries({ selector: { metric: 'm', matchers: [] } })
      for (let i = 0; i < 500 && !entered; i++) await setTimeout(10)
      assert.ok(entered, 'the delete reached b')
      // The leader moves the cluster to a new ring; its first step waits until a settles on it.
      ring = { ...ring, version: 2 }
      let settled = false
      const settling = a.settledAt(2, new AbortController().signal).then(() => {
        settled = true
      })
      await setTimeout(100)
      assert.equal(settled, false, 'a settles on the new ring only once the delete is done')
      open()
      assert.equal((await deleting).seriesMatched, 10)
      await settling
      assert.deepEqual(await a.listSeries({ metric: 'm', matchers: [] }), [])
    } finally {
      open()
      await cluster.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
