import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { PeerKind } from '../../gen/v3storage/internal/v1/peer.js'
import { ClusterEngine, type MemberInfo, type RingSnapshot } from '../../src/cluster/cluster-engine.js'
import { HintStore } from '../../src/cluster/hint-store.js'
import { HintedHandoff } from '../../src/cluster/hinted-handoff.js'
import { MemoryNetwork } from '../../src/cluster/memory-transport.js'
import { encodePeerWrite } from '../../src/cluster/peer-codec.js'
import { peerService } from '../../src/cluster/peer-service.js'
import { SeriesTokens } from '../../src/cluster/shard-filter.js'
import { evenTokens } from '../../src/cluster/tokens.js'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { silentLogger } from '../../src/engine/config.js'
import { DeadlineError, LimitError, UnavailableError, ValidationError } from '../../src/model/errors.js'
import { DEFAULT_WRITE_LIMITS } from '../../src/model/limits.js'
import { waitFor } from '../fixtures/wait.js'

const T0 = Date.UTC(2026, 0, 1)

/** One point of series `s` at T0 with value `v`, as a write batch. */
function point(v: number) {
  return { series: [{ metric: 'm', tags: [{ key: 's', value: 'x' }], timestamps: [T0], values: [v] }] }
}

/** Node a's cluster engine over `local`, in a ring of a and c (R = 2), with c's part going over `a`. */
function engineOfA(
  local: BasicEngine,
  a: ReturnType<MemoryNetwork['transport']>,
  handoff: HintedHandoff,
  cAddress: string,
  healthy: () => ReadonlySet<string>,
): ClusterEngine {
  const members: MemberInfo[] = [
    { id: 'a', grpcAddress: 'a:1', peerAddress: 'a', tokens: evenTokens('a', 8), state: 'active' },
    { id: 'c', grpcAddress: 'c:1', peerAddress: cAddress, tokens: evenTokens('c', 8), state: 'active' },
  ]
  const ring: RingSnapshot = { version: 1, replicationFactor: 2, members }
  const options = {
    limits: DEFAULT_WRITE_LIMITS,
    peerTimeoutMs: 2_000,
    maxPointsPerQuery: 1_000_000,
    writeConsistency: 'one' as const,
    readTimeoutMs: 500,
  }
  const engine = new ClusterEngine(local, options, silentLogger, new SeriesTokens())
  engine.attach({
    selfId: 'a',
    transport: a,
    handoff,
    view: {
      ring: () => ring,
      healthyIds: healthy,
      leaderId: () => undefined,
      move: () => undefined,
      consul: () => ({ reachable: true, outages: 0 }),
    },
  })
  return engine
}

/** A hinted handoff that keeps hints and delivers none (no owner has an endpoint). */
function undeliveredHandoff(store: HintStore, a: ReturnType<MemoryNetwork['transport']>): HintedHandoff {
  return new HintedHandoff(
    store,
    a,
    { endpoint: () => undefined, healthy: () => true, ringVersion: () => 1 },
    { timeoutMs: 2_000, limits: DEFAULT_WRITE_LIMITS },
    silentLogger,
  )
}

describe('writes to an owner with hints waiting', () => {
  it('go to it at once, and its hints replayed later do not overwrite the newer value', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-handoff-'))
    const net = new MemoryNetwork()
    const local = new BasicEngine({ dataDir: join(dir, 'a'), sync: 'off' })
    await local.open()
    let owner = new BasicEngine({ dataDir: join(dir, 'c'), sync: 'off' })
    await owner.open()
    const store = await HintStore.open({ dir: join(dir, 'hints'), maxBytes: 1 << 20, maxAgeMs: 3_600_000 })
    let serve = peerService(owner)
    let requests = 0
    const c = net.transport('c')
    const cAddress = await c.listen((from, kind, body, meta) => {
      if (kind === PeerKind.PEER_KIND_WRITE) requests++
      return serve(from, kind, body, meta)
    })
    const a = net.transport('a')
    let healthy = new Set(['a'])
    const handoff = new HintedHandoff(
      store,
      a,
      {
        endpoint: (id) => (id === 'c' ? { id, address: cAddress } : undefined),
        healthy: (id) => healthy.has(id),
        ringVersion: () => 1,
      },
      { timeoutMs: 2_000, limits: DEFAULT_WRITE_LIMITS },
      silentLogger,
    )
    const engine = engineOfA(local, a, handoff, cAddress, () => healthy)
    const valuesAtC = async (): Promise<number[]> => {
      const [series] = await owner.query({ selector: { metric: 'm', matchers: [] }, startMs: T0, endMs: T0 + 1 })
      return series === undefined ? [] : [...series.values]
    }
    try {
      // c is down: the first write waits for it as a hint.
      await engine.write(point(1))
      assert.equal(store.backlog('c'), 1)
      // c is back, its hint not delivered yet: the newer write goes to c at once.
      healthy = new Set(['a', 'c'])
      await engine.write(point(2))
      await waitFor('c to receive the second write', async () => (await valuesAtC())[0] === 2, 10_000)
      assert.equal(requests, 1)
      assert.equal(store.backlog('c'), 1)
      // A delete now would be undone by the hint: it is refused, naming who keeps hints for whom.
      const all = { selector: { metric: 'm', matchers: [] } }
      await assert.rejects(engine.deleteSeries(all), (err: Error) => {
        assert.ok(err instanceof UnavailableError)
        assert.match(err.message, /hints wait to be delivered \(a keeps 1 for c\)/)
        return true
      })
      assert.deepEqual(await valuesAtC(), [2], 'the refused delete removed nothing')
      // The hint, older, reaches c afterwards and loses to the newer value there.
      handoff.start()
      await waitFor('the hint to reach c', () => store.backlog('c') === 0, 10_000)
      assert.equal(requests, 2)
      assert.deepEqual(await valuesAtC(), [2])
      // And after c seals and restarts, still.
      await owner.close()
      owner = new BasicEngine({ dataDir: join(dir, 'c'), sync: 'off' })
      await owner.open()
      serve = peerService(owner)
      assert.deepEqual(await valuesAtC(), [2])
      // With no hint waiting, the delete goes ahead on both owners.
      assert.equal((await engine.deleteSeries(all)).seriesMatched, 1)
      assert.deepEqual(await valuesAtC(), [])
      assert.deepEqual(await local.query({ selector: { metric: 'm', matchers: [] }, startMs: T0, endMs: T0 + 1 }), [])
    } finally {
      await handoff.close()
      await a.close()
      await c.close()
      await owner.close()
      await local.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('kept for a node that is no longer a member do not hold a delete back', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-handoff-'))
    const net = new MemoryNetwork()
    const local = new BasicEngine({ dataDir: join(dir, 'a'), sync: 'off' })
    await local.open()
    const owner = new BasicEngine({ dataDir: join(dir, 'c'), sync: 'off' })
    await owner.open()
    const store = await HintStore.open({ dir: join(dir, 'hints'), maxBytes: 1 << 20, maxAgeMs: 3_600_000 })
    const c = net.transport('c')
    const cAddress = await c.listen(peerService(owner))
    const a = net.transport('a')
    const handoff = undeliveredHandoff(store, a)
    const engine = engineOfA(local, a, handoff, cAddress, () => new Set(['a', 'c']))
    try {
      await engine.write(point(1))
      // A hint for c, a member, holds the delete back; one for a node that left the ring does not.
      const hint = encodePeerWrite([
        { metric: 'm', tags: [{ key: 's', value: 'x' }], timestamps: Float64Array.of(T0), values: Float64Array.of(2) },
      ])
      assert.ok(await store.append('c', hint))
      const all = { selector: { metric: 'm', matchers: [] } }
      await assert.rejects(engine.deleteSeries(all), /a keeps 1 for c/)
      await store.ack('c', Number.MAX_SAFE_INTEGER)
      assert.ok(await store.append('gone', hint))
      assert.equal((await engine.deleteSeries(all)).seriesMatched, 1)
    } finally {
      await handoff.close()
      await a.close()
      await c.close()
      await owner.close()
      await local.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('kept for a node the ring no longer lists are deleted, not delivered; those of a member wait', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-handoff-'))
    const net = new MemoryNetwork()
    const store = await HintStore.open({ dir: join(dir, 'hints'), maxBytes: 1 << 20, maxAgeMs: 3_600_000 })
    const a = net.transport('a')
    let looked = 0
    let ringVersion = 0
    const handoff = new HintedHandoff(
      store,
      a,
      {
        // The ring no longer lists 'left'.
        endpoint: (id) => (id === 'left' ? undefined : { id, address: `memory:${id}` }),
        healthy: () => {
          looked++
          return false
        },
        ringVersion: () => ringVersion,
      },
      { timeoutMs: 2_000, limits: DEFAULT_WRITE_LIMITS },
      silentLogger,
    )
    try {
      const hint = encodePeerWrite([
        { metric: 'm', tags: [{ key: 's', value: 'x' }], timestamps: Float64Array.of(T0), values: Float64Array.of(2) },
      ])
      for (let i = 0; i < 3; i++) assert.ok(await store.append('left', hint))
      assert.ok(await store.append('c', hint))
      handoff.start()
      // No ring known yet (a node starting): nothing is forgotten, whatever the endpoints say.
      await waitFor('two looks at the owners', () => looked >= 4, 10_000)
      assert.equal(store.backlog('left'), 3)
      ringVersion = 1
      await waitFor('the hints of the node that left to go', () => store.backlog('left') === 0, 10_000)
      assert.equal(store.backlog('c'), 1, "a member's hints wait for it")
      assert.ok(looked > 0, "the member's health was looked at")
      const left = handoff.figures().find((h) => h.peer === 'left')
      assert.deepEqual([left?.backlog, left?.dropped, left?.needsRepair], [0, 0, false])
    } finally {
      await handoff.close()
      await a.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('keep the part of an owner that fails it for any reason but a refusal of the data as a hint', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-handoff-'))
    const net = new MemoryNetwork()
    const local = new BasicEngine({ dataDir: join(dir, 'a'), sync: 'off' })
    await local.open()
    const store = await HintStore.open({ dir: join(dir, 'hints'), maxBytes: 1 << 20, maxAgeMs: 3_600_000 })
    // c is healthy but fails each write with the next of these; its hints are not delivered here.
    const failures: Error[] = []
    const c = net.transport('c')
    const cAddress = await c.listen(async () => {
      throw failures.shift() ?? new Error('no failure queued')
    })
    const a = net.transport('a')
    const handoff = undeliveredHandoff(store, a)
    const engine = engineOfA(local, a, handoff, cAddress, () => new Set(['a', 'c']))
    try {
      const cases: readonly [Error, number][] = [
        // The peer's own deadline (its queue, or --peer-timeout) passed before it wrote.
        [new DeadlineError('the deadline passed before the request started'), 1],
        [new LimitError('max_waiting_per_peer', 1024, 'too many requests wait'), 1],
        [new Error('a disk error'), 1],
        // A refusal of the data would be refused again on delivery: no hint.
        [ValidationError.field('series[0].metric', 'is refused'), 0],
      ]
      for (const [failure, hinted] of cases) {
        const before = store.backlog('c')
        failures.push(failure)
        // At ONE, a's own part acknowledges the write; c's part fails in the background.
        await engine.write(point(before + 1))
        await waitFor(`c's part settled after ${failure.name}`, () => failures.length === 0, 10_000)
        await waitFor(`the hint after ${failure.name}`, () => store.backlog('c') === before + hinted, 10_000)
        assert.equal(store.backlog('c'), before + hinted, failure.message)
      }
      // At ALL, c's failure fails the write: UNAVAILABLE naming c, and the part waits as a hint.
      failures.push(new DeadlineError('the deadline passed before the request started'))
      await assert.rejects(engine.write(point(9), { consistency: 'all' }), (err: Error) => {
        assert.ok(err instanceof UnavailableError, `${err.name}: ${err.message}`)
        assert.match(err.message, /c \(node c did not take its part \(.*deadline passed.*\); it waits as a hint\)/)
        return true
      })
      assert.equal(store.backlog('c'), 4)
    } finally {
      await handoff.close()
      await a.close()
      await c.close()
      await local.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('reach the owner as few writes of many hints each, and the last value of a timestamp wins', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-handoff-'))
    const net = new MemoryNetwork()
    const owner = new BasicEngine({ dataDir: join(dir, 'c'), sync: 'off' })
    await owner.open()
    const store = await HintStore.open({ dir: join(dir, 'hints'), maxBytes: 64 << 20, maxAgeMs: 3_600_000 })
    const serve = peerService(owner)
    let requests = 0
    const c = net.transport('c')
    const cAddress = await c.listen((from, kind, body, meta) => {
      requests++
      return serve(from, kind, body, meta)
    })
    const a = net.transport('a')
    // Small limits, so that the hints need several writes: 50 series entries per write at most.
    const limits = { ...DEFAULT_WRITE_LIMITS, maxSeriesPerRequest: 50 }
    const handoff = new HintedHandoff(
      store,
      a,
      {
        endpoint: (id) => (id === 'c' ? { id, address: cAddress } : undefined),
        healthy: () => true,
        ringVersion: () => 1,
      },
      { timeoutMs: 5_000, limits },
      silentLogger,
    )
    try {
      // 400 hints, each one entry of series s=0..9; hint i writes T0 + (i % 20) seconds with value
      // i, so every timestamp is written 20 times and the last of them (the largest i) must win.
      const hints = 400
      for (let i = 0; i < hints; i++) {
        const series = [
          {
            metric: 'h',
            tags: [{ key: 's', value: String(i % 10) }],
            timestamps: Float64Array.of(T0 + (i % 20) * 1_000),
            values: Float64Array.of(i),
          },
        ]
        assert.ok(await store.append('c', encodePeerWrite(series)))
      }
      handoff.start()
      await waitFor('the hints to reach c', () => store.backlog('c') === 0, 20_000)
      assert.ok(requests >= hints / 50, `${requests} writes kept the limit of 50 entries each`)
      assert.ok(requests < hints / 10, `${hints} hints went as ${requests} writes`)
      const stored = await owner.query({ selector: { metric: 'h', matchers: [] }, startMs: T0, endMs: T0 + 60_000 })
      assert.equal(stored.length, 10)
      for (const s of stored) {
        const k = Number(s.tags[0]!.value)
        // Series k gets hints i = k, k + 10, ...: timestamps (i % 20) alternate between k and k + 10.
        const expected = new Map<number, number>()
        for (let i = k; i < hints; i += 10) expected.set(T0 + (i % 20) * 1_000, i)
        assert.deepEqual(
          [...s.timestamps].map((t, j) => [t, s.values[j]]),
          [...expected].sort(([x], [y]) => x - y),
        )
      }
    } finally {
      await handoff.close()
      await a.close()
      await c.close()
      await owner.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
