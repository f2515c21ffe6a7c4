import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { PeerKind } from '../../gen/v3storage/internal/v1/peer.js'
import { AntiEntropy } from '../../src/cluster/anti-entropy.js'
import type { ClusterView, MemberInfo, RingSnapshot } from '../../src/cluster/cluster-engine.js'
import { resolveConflict } from '../../src/cluster/conflict.js'
import { HintStore } from '../../src/cluster/hint-store.js'
import { HintedHandoff } from '../../src/cluster/hinted-handoff.js'
import { MemoryNetwork } from '../../src/cluster/memory-transport.js'
import { peerService } from '../../src/cluster/peer-service.js'
import { evenTokens } from '../../src/cluster/tokens.js'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { silentLogger } from '../../src/engine/config.js'
import type { SeriesFilter } from '../../src/engine/shard.js'
import { DEFAULT_WRITE_LIMITS } from '../../src/model/limits.js'
import type { SeriesPoints } from '../../src/model/types.js'

const H0 = Date.UTC(2025, 5, 1)
const HOUR = 3_600_000
const IDS = ['a', 'b', 'c'] as const
const everything: SeriesFilter = { key: 'all', accepts: () => true }

interface TestNode {
  readonly id: string
  readonly engine: BasicEngine
  readonly repair: AntiEntropy
  /** Requests this node served, by kind. */
  readonly served: Map<PeerKind, number>
}

/** Each series' points as "metric{tags} t=v" lines, sorted: what two copies must agree on. */
async function contents(engine: BasicEngine): Promise<string[]> {
  const series: SeriesPoints[] = await engine.readShard(everything, 0, H0 + 100 * HOUR)
  const lines: string[] = []
  for (const s of series) {
    const name = `${s.metric}{${s.tags.map((t) => `${t.key}=${t.value}`).join(',')}}`
    s.timestamps.forEach((t, i) => {
      lines.push(`${name} ${t}=${s.values[i]}`)
    })
  }
  return lines.sort()
}

function batch(series: string, ts: number[], vals: number[]) {
  return { series: [{ metric: 'r', tags: [{ key: 's', value: series }], timestamps: ts, values: vals }] }
}

describe('anti-entropy repair over three replicas', () => {
  let dir: string
  const nodes: TestNode[] = []
  const closers: (() => Promise<void>)[] = []
  let store: HintStore
  let clock = H0
  let healthy: ReadonlySet<string> = new Set(IDS)

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'v3-repair-'))
    const net = new MemoryNetwork()
    const members: MemberInfo[] = IDS.map((id) => ({
      id,
      grpcAddress: `${id}:1`,
      peerAddress: `memory:${id}`,
      tokens: evenTokens(id, 8),
      state: 'active',
    }))
    const ring: RingSnapshot = { version: 1, replicationFactor: 3, members }
    const view: ClusterView = {
      ring: () => ring,
      healthyIds: () => healthy,
      leaderId: () => undefined,
      move: () => undefined,
      consul: () => ({ reachable: true, outages: 0 }),
    }
    // Node a keeps hints: its store's clock is the test's, so a hint can expire on demand.
    store = await HintStore.open({ dir: join(dir, 'hints'), maxBytes: 1 << 20, maxAgeMs: 1_000, now: () => clock })
    for (const id of IDS) {
      const engine = new BasicEngine({ dataDir: join(dir, id), sync: 'off' })
      await engine.open()
      const transport = net.transport(id)
      const handoff =
        id === 'a'
          ? new HintedHandoff(
              store,
              transport,
              { endpoint: () => undefined, healthy: () => false, ringVersion: () => 1 },
              { timeoutMs: 1_000, limits: DEFAULT_WRITE_LIMITS },
              silentLogger,
            )
          : undefined
      const repair = new AntiEntropy(
        engine,
        { selfId: id, transport, view, handoff },
        { intervalMs: 3_600_000, peerTimeoutMs: 5_000, limits: DEFAULT_WRITE_LIMITS },
        silentLogger,
      )
      const serve = peerService(engine, (body, ctx) => repair.runForPeer(body, ctx))
      const served = new Map<PeerKind, number>()
      await transport.listen((from, kind, body, meta) => {
        served.set(kind, (served.get(kind) ?? 0) + 1)
        return serve(from, kind, body, meta)
      })
      nodes.push({ id, engine, repair, served })
      closers.push(async () => {
        await repair.close()
        await handoff?.close()
        await transport.close()
        await engine.close()
      })
    }
  })

  after(async () => {
    for (const close of closers) await close()
    await rm(dir, { recursive: true, force: true })
  })

  const node = (id: string): TestNode => nodes.find((n) => n.id === id)!

  it('resolves a conflict to the value with the larger bit pattern, whatever the order', () => {
    assert.equal(resolveConflict(1, 2), 2)
    assert.equal(resolveConflict(2, 1), 2)
    // -1 has the sign bit set: its pattern is larger than any positive value's.
    assert.equal(resolveConflict(5, -1), -1)
    assert.equal(resolveConflict(-1, 5), -1)
  })

  it('brings diverged replicas in line, streaming only the blocks that differ, and a second run moves nothing', async () => {
    // Every node holds series 0..19 over three hours; then each diverges in its own way.
    const ts = [0, 1, 2].flatMap((h) => [H0 + h * HOUR, H0 + h * HOUR + 60_000])
    for (const n of nodes) {
      for (let s = 0; s < 20; s++) {
        await n.engine.write(
          batch(
            String(s),
            ts,
            ts.map((t) => t / 1e9 + s),
          ),
        )
      }
    }
    // a alone has a new series; b alone has an extra point of series 3; c has another value at a
    // timestamp of series 5 (larger than the others', so it wins everywhere).
    await node('a').engine.write(batch('new', [H0 + 30_000], [7]))
    await node('b').engine.write(batch('3', [H0 + HOUR + 5_000], [42]))
    await node('c').engine.write(batch('5', [H0 + 2 * HOUR], [1e6]))
    const report = await node('a').repair.repairCluster()
    assert.deepEqual(report.downNodes, [])
    assert.deepEqual(
      report.nodes.map((n) => n.node),
      ['a', 'b', 'c'],
    )
    const total = (pick: (n: (typeof report.nodes)[number]) => number) =>
      report.nodes.reduce((sum, n) => sum + pick(n), 0)
    // Three blocks differ, one per divergence; each is repaired by the first owner of its range.
    assert.equal(
      total((n) => n.rangesRepaired),
      3,
    )
    assert.ok(total((n) => n.rangesCompared) >= 24, 'every range was compared')
    // new: 2 copies to write; b's extra point: 2; c's value: 2. Sent counts each point once per target.
    assert.equal(
      total((n) => n.pointsSent + n.pointsReceived),
      6,
    )
    const expected = await contents(node('a').engine)
    assert.ok(expected.includes(`r{s=new} ${H0 + 30_000}=7`))
    assert.ok(expected.includes(`r{s=3} ${H0 + HOUR + 5_000}=42`))
    assert.ok(expected.includes(`r{s=5} ${H0 + 2 * HOUR}=1000000`))
    assert.deepEqual(await contents(node('b').engine), expected)
    assert.deepEqual(await contents(node('c').engine), expected)
    // Reads went only to blocks that differ: three blocks, each read from at most its three owners.
    const reads = nodes.reduce((sum, n) => sum + (n.served.get(PeerKind.PEER_KIND_REPAIR_READ) ?? 0), 0)
    assert.ok(reads <= 6, `${reads} block reads`)

    const again = await node('b').repair.repairCluster()
    assert.equal(
      again.nodes.reduce((sum, n) => sum + n.rangesRepaired + n.pointsSent + n.pointsReceived, 0),
      0,
    )
    const figures = node('a').repair.figures()
    assert.equal(figures.passes, 2)
    assert.equal(figures.failedPasses, 0)
  })

  it('covers the ranges of an owner whose hints were dropped, and clears its mark once done', async () => {
    assert.ok(await store.append('c', new Uint8Array([1])))
    clock += 10_000
    await store.dropExpired()
    assert.equal(store.stats().find((s) => s.target === 'c')?.needsRepair, true)
    // c misses a point that a and b hold; a is not the first owner of every range, yet its pass
    // covers all of c's ranges and clears the mark.
    for (const id of ['a', 'b']) await node(id).engine.write(batch('late', [H0 + 90_000], [3]))
    const report = await node('a').repair.pass(Date.now(), undefined)
    assert.ok(report.rangesCompared >= 24, `${report.rangesCompared} ranges: all of c's`)
    assert.equal(report.pointsSent, 1)
    assert.equal(store.stats().find((s) => s.target === 'c')?.needsRepair, false)
    assert.deepEqual(await contents(node('c').engine), await contents(node('a').engine))
  })

  it('leaves a member that is down out of the repair and names it', async () => {
    healthy = new Set(['a', 'b'])
    try {
      await node('a').engine.write(batch('while-c-down', [H0 + 120_000], [9]))
      const report = await node('b').repair.repairCluster()
      assert.deepEqual(report.downNodes, ['c'])
      assert.deepEqual(
        report.nodes.map((n) => n.node),
        ['a', 'b'],
      )
      // a and b compared the ranges they own with each other; c got nothing.
      assert.equal(
        report.nodes.reduce((sum, n) => sum + n.pointsSent + n.pointsReceived, 0),
        1,
      )
      assert.ok(!(await contents(node('c').engine)).some((line) => line.includes('while-c-down')))
    } finally {
      healthy = new Set(IDS)
    }
  })
})
