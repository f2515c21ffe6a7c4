// Membership changes with real node processes: a node joins and another is decommissioned while
// writers write at QUORUM and readers query; the leader is killed and replaced, and a ring change
// written under its old term is fenced; a dead node is removed after --dead-node-timeout, unless
// most of the cluster looks down (the partition guard).
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { NodeInfo, QueryInput, SeriesInput } from '../../src/client/index.js'
import { canonicalSeriesKey, sortTags } from '../../src/model/series-key.js'
import type { SeriesPoints } from '../../src/model/types.js'
import { freePort } from '../fixtures/net.js'
import { assertSameSeries } from '../fixtures/series-assert.js'
import { runV3 } from './cli-run.js'
import {
  type ConsulProcess,
  clusterNodeArgs,
  type NodeSpec,
  startConsul,
  startFreshNode,
  startNode,
  waitFor,
  waitForMembers,
  waitForSettled,
} from './cluster-kit.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2026, 0, 1)
const MINUTE = 60_000

/** 60 series, a point every 10 s for 20 minutes: the data that moves. */
function preload(): SeriesInput[] {
  const out: SeriesInput[] = []
  for (let h = 0; h < 30; h++) {
    for (const metric of ['cpu', 'mem']) {
      const timestamps: number[] = []
      const values: number[] = []
      for (let t = 0; t < 20 * MINUTE; t += 10_000) {
        timestamps.push(T0 + t)
        values.push((h * 13 + t / 10_000) % 89)
      }
      out.push({ metric, tags: { host: `h${String(h).padStart(2, '0')}`, zone: `z${h % 3}` }, timestamps, values })
    }
  }
  return out
}

/** Queries over the preloaded data: their answers must not change while ranges move. */
const QUERIES: readonly QueryInput[] = [
  { selector: { metric: 'cpu' }, startMs: T0, endMs: T0 + 20 * MINUTE },
  {
    selector: { metric: 'mem', matchers: [{ key: 'zone', value: 'z1', op: 'eq' }] },
    startMs: T0,
    endMs: T0 + 20 * MINUTE,
  },
  { selector: { metric: 'cpu' }, startMs: T0, endMs: T0 + 20 * MINUTE, aggregation: { func: 'sum', stepMs: 60_000 } },
  {
    selector: { metric: 'mem' },
    startMs: T0,
    endMs: T0 + 20 * MINUTE,
    aggregation: { func: 'count', stepMs: 300_000, groupBy: ['zone'] },
  },
]

function assertSame(actual: readonly SeriesPoints[], expected: readonly SeriesPoints[], context: string): void {
  assert.ok(expected.length > 0, `${context}: the reference answers with no series`)
  assertSameSeries(actual, expected, context)
}

/**
 * Writers that keep writing new points (after the preloaded ones) at QUORUM through every node in
 * turn, each batch also to the single node once the cluster acknowledged it; and readers that keep
 * asking the preloaded queries through every node and compare with the answers before the change.
 */
class Load {
  private stopped = false
  private readonly loops: Promise<void>[] = []
  writes = 0
  queries = 0
  readonly failures: string[] = []

  constructor(
    private readonly nodes: () => readonly ServerProcess[],
    private readonly single: ServerProcess,
    private readonly expected: ReadonlyMap<string, SeriesPoints[]>,
  ) {}

  start(): void {
    this.loops.push(this.write(0), this.write(1), this.read())
  }

  async stop(): Promise<void> {
    this.stopped = true
    await Promise.all(this.loops)
  }

  private pick(i: number): ServerProcess {
    const nodes = this.nodes()
    return nodes[i % nodes.length]!
  }

  private async write(writer: number): Promise<void> {
    for (let i = 0; !this.stopped; i++) {
      const ts = T0 + 30 * MINUTE + (i * 2 + writer) * 1000
      const batch: SeriesInput[] = Array.from({ length: 10 }, (_, k) => ({
        metric: 'load',
        tags: { writer: String(writer), k: String(k) },
        timestamps: [ts],
        values: [i + k],
      }))
      try {
        await this.pick(i + writer).client.write(batch, { consistency: 'quorum' })
        await this.single.client.write(batch)
        this.writes++
      } catch (err) {
        this.failures.push(`write ${writer}/${i}: ${String(err)}`)
      }
    }
  }

  private async read(): Promise<void> {
    for (let i = 0; !this.stopped; i++) {
      const query = QUERIES[i % QUERIES.length]!
      try {
        const answer = await this.pick(i).client.query(query)
        assertSameSeries(
          answer,
          this.expected.get(JSON.stringify(query))!,
          `during the change: ${JSON.stringify(query)}`,
        )
        this.queries++
      } catch (err) {
        this.failures.push(`query ${i}: ${String(err)}`)
      }
    }
  }
}

/** Which node should hold each series, by Locate, against what each node's statistics count. */
async function assertPlacement(nodes: readonly ServerProcess[], single: ServerProcess, rf: number): Promise<void> {
  const via = nodes[0]!
  const want = new Map<string, number>()
  for (const metric of ['cpu', 'mem', 'load', 'hinted']) {
    for (const s of await single.client.listSeries({ metric })) {
      const owners = await via.client.locate(s.metric, s.tags)
      assert.equal(owners.length, rf, `owners of ${canonicalSeriesKey(s.metric, sortTags(s.tags))}`)
      for (const o of owners) want.set(o.id, (want.get(o.id) ?? 0) + 1)
    }
  }
  const stats = await via.client.stats()
  const held = new Map(stats.nodes.map((n) => [n.id, n.stats.series]))
  assert.deepEqual([...held].sort(), [...want].sort(), 'each node holds exactly the series the ring gives it')
}

async function answersOf(node: ServerProcess): Promise<Map<string, SeriesPoints[]>> {
  const out = new Map<string, SeriesPoints[]>()
  for (const q of QUERIES) out.set(JSON.stringify(q), await node.client.query(q))
  return out
}

async function assertAnswersLikeSingle(nodes: readonly ServerProcess[], single: ServerProcess): Promise<void> {
  const queries: QueryInput[] = [
    ...QUERIES,
    { selector: { metric: 'load' }, startMs: T0, endMs: T0 + 24 * 60 * MINUTE },
    {
      selector: { metric: 'load' },
      startMs: T0,
      endMs: T0 + 24 * 60 * MINUTE,
      aggregation: { func: 'sum', stepMs: 0, mergeSeries: true },
    },
  ]
  for (const [i, node] of nodes.entries()) {
    for (const q of queries)
      assertSame(await node.client.query(q), await single.client.query(q), `node ${i} ${JSON.stringify(q)}`)
    for (const metric of ['cpu', 'load']) {
      assertSame(await node.client.latest({ metric }), await single.client.latest({ metric }), `latest ${metric}`)
    }
  }
}

function shares(members: readonly NodeInfo[]): string {
  return members.map((m) => `${m.id} ${(m.ringShare * 100).toFixed(1)}%`).join(', ')
}

describe('nodes join and leave under load (3 nodes, R = 2)', { timeout: 300_000 }, () => {
  let consul: ConsulProcess
  let single: ServerProcess
  const nodes = new Map<string, ServerProcess>()
  const dirs: string[] = []
  const name = `v3-move-${process.pid}`
  const extra = ['--replication-factor', '2', '--vnodes', '32']

  const up = () => [...nodes.values()]
  const retired: ServerProcess[] = []

  before(async () => {
    consul = await startConsul()
    single = await startServerProcess()
    for (const id of ['n1', 'n2', 'n3']) {
      const { node } = await startFreshNode(consul, id, name, extra)
      nodes.set(id, node)
      dirs.push(node.dataDir)
    }
    await waitForMembers(up(), ['n1', 'n2', 'n3'])
    const data = preload()
    for (let i = 0; i < data.length; i += 10) {
      await nodes.get('n1')!.client.write(data.slice(i, i + 10))
      await single.client.write(data.slice(i, i + 10))
    }
  })

  after(async () => {
    for (const node of [...nodes.values(), ...retired]) await node.kill()
    await single?.kill()
    await consul?.stop()
    for (const dir of [...dirs, single?.dataDir]) if (dir !== undefined) await removeDataDir(dir)
  })

  it('a fourth node joins while writes and queries go on: even ownership, its data moved, nothing lost', async () => {
    const expected = await answersOf(nodes.get('n1')!)
    const load = new Load(up, single, expected)
    load.start()
    let sawJoining = false
    let sawProgress = false
    try {
      const { node } = await startFreshNode(consul, 'n4', name, extra)
      nodes.set('n4', node)
      dirs.push(node.dataDir)
      await waitFor(
        'n4 active',
        async () => {
          const members = await nodes.get('n1')!.client.listNodes()
          const n4 = members.find((m) => m.id === 'n4')
          if (n4?.lifecycle === 'joining') sawJoining = true
          if (n4?.move !== undefined && n4.move.rangesTotal > 0) sawProgress = true
          return members.length === 4 && members.every((m) => m.lifecycle === 'active' && m.move === undefined)
            ? members
            : undefined
        },
        120_000,
      )
      // The load keeps going a moment on the new ring.
      const writes = load.writes
      await waitFor('writes on the new ring', async () => (load.writes > writes + 20 ? true : undefined))
    } finally {
      await load.stop()
    }
    assert.deepEqual(load.failures, [], 'no write or query failed during the move')
    assert.ok(load.writes > 0 && load.queries > 0, `${load.writes} writes, ${load.queries} queries ran`)
    assert.ok(sawJoining, 'ListNodes showed n4 joining')
    assert.ok(sawProgress, 'ListNodes showed the move progress')
    const members = await waitForMembers(up(), ['n1', 'n2', 'n3', 'n4'])
    await waitForSettled(up())
    for (const m of members) assert.ok(Math.abs(m.ringShare - 0.25) < 0.04, `even shares: ${shares(members)}`)
    await assertPlacement(up(), single, 2)
    await assertAnswersLikeSingle(up(), single)
    const status = await runV3(['cluster', 'status', '--server', nodes.get('n2')!.address])
    assert.equal(status.code, 0, status.stderr)
    assert.match(status.stdout, /^n4\s.*\sactive\s+2\d\.\d%/m)
    const metrics = await (await fetch(nodes.get('n1')!.metricsUrl!)).text()
    assert.match(metrics, /^v3_cluster_moving_members 0$/m)
  })

  it('a node is decommissioned while writes and queries go on: it leaves, its ranges move, nothing lost', async () => {
    const expected = await answersOf(nodes.get('n1')!)
    const leaving = nodes.get('n2')!
    nodes.delete('n2')
    // Stopped by after() should the test fail before it stops the node itself.
    retired.push(leaving)
    const load = new Load(up, single, expected)
    load.start()
    let sawLeaving = false
    const watcher = (async () => {
      for (;;) {
        const members = await nodes.get('n1')!.client.listNodes()
        if (members.some((m) => m.id === 'n2' && m.lifecycle === 'leaving')) sawLeaving = true
        if (!members.some((m) => m.id === 'n2')) return
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    })()
    try {
      const result = await runV3(['cluster', 'decommission', 'n2', '--server', nodes.get('n3')!.address])
      assert.equal(result.code, 0, result.stderr)
      assert.match(result.stdout, /^n2 left the ring \(ring version \d+, [\d.]+s\); it may be stopped$/m)
      await watcher
      const writes = load.writes
      await waitFor('writes on the new ring', async () => (load.writes > writes + 20 ? true : undefined))
    } finally {
      await load.stop()
    }
    assert.deepEqual(load.failures, [], 'no write or query failed during the move')
    assert.ok(sawLeaving, 'ListNodes showed n2 leaving')
    await leaving.stop()
    const members = await waitForMembers(up(), ['n1', 'n3', 'n4'])
    await waitForSettled(up())
    for (const m of members) assert.ok(Math.abs(m.ringShare - 1 / 3) < 0.05, `even shares: ${shares(members)}`)
    await assertPlacement(up(), single, 2)
    await assertAnswersLikeSingle(up(), single)
  })

  it('refuses to decommission a node that is not a member, naming node_id', async () => {
    const result = await runV3(['cluster', 'decommission', 'nope', '--server', nodes.get('n1')!.address])
    assert.notEqual(result.code, 0)
    assert.match(result.stderr, /node_id/)
    assert.match(result.stderr, /not a member/)
  })
})

describe('the leader', { timeout: 240_000 }, () => {
  let consul: ConsulProcess
  const nodes = new Map<string, ServerProcess>()
  const dirs: string[] = []
  const name = `v3-leader-${process.pid}`
  // Consul refuses session TTLs below 10 s; the emulator takes shorter ones, so the test runs faster.
  const real = process.env.CONSUL_HTTP_ADDR !== undefined && process.env.CONSUL_HTTP_ADDR !== ''
  const ttlMs = real ? 10_000 : 3000
  const lockDelayMs = real ? 5000 : 1000
  const extra = [
    '--replication-factor',
    '1',
    '--vnodes',
    '16',
    '--leader-ttl',
    `${ttlMs}ms`,
    '--leader-lock-delay',
    `${lockDelayMs}ms`,
  ]

  const specs = new Map<string, NodeSpec>()

  before(async () => {
    consul = await startConsul()
    for (const id of ['n1', 'n2', 'n3']) {
      const { spec, node } = await startFreshNode(consul, id, name, extra)
      nodes.set(id, node)
      specs.set(id, spec)
      dirs.push(node.dataDir)
    }
    await waitForMembers([...nodes.values()], ['n1', 'n2', 'n3'])
  })

  after(async () => {
    for (const node of nodes.values()) await node.kill()
    await consul?.stop()
    for (const dir of dirs) await removeDataDir(dir)
  })

  it('is replaced within TTL + lock-delay after kill -9, and a ring change under its old term is fenced', async (t) => {
    const members = await nodes.get('n1')!.client.listNodes()
    const leaders = members.filter((m) => m.leader)
    assert.equal(leaders.length, 1, 'exactly one leader')
    const old = leaders[0]!.id
    const metricsOf = async (node: ServerProcess) => (await fetch(node.metricsUrl!)).text()
    const oldTerm = Number(/^v3_cluster_leader_term (\d+)$/m.exec(await metricsOf(nodes.get(old)!))?.[1])
    assert.ok(oldTerm > 0, 'the leader has a term')
    const survivors = [...nodes].filter(([id]) => id !== old).map(([, n]) => n)
    const killedAt = Date.now()
    await nodes.get(old)!.kill()
    nodes.delete(old)
    const next = await waitFor(
      'a new leader',
      async () => {
        const listed = await survivors[0]!.client.listNodes()
        return listed.find((m) => m.leader && m.id !== old)
      },
      60_000,
    )
    const elapsed = Date.now() - killedAt
    t.diagnostic(`a new leader ${elapsed} ms after kill -9 (TTL ${ttlMs} ms, lock-delay ${lockDelayMs} ms)`)
    // The emulator expires a session exactly at its TTL; allow for the watch and the election.
    assert.ok(elapsed <= ttlMs + lockDelayMs + 2000, `a new leader after ${elapsed} ms`)
    const newTerm = Number(
      /^v3_cluster_leader_term (\d+)$/m.exec(await metricsOf(survivors.find((n) => n.address === next.address)!))?.[1],
    )
    assert.ok(newTerm > oldTerm, `term ${newTerm} follows ${oldTerm}`)

    // The new leader writes the ring under its term; then a write as the old leader would make it.
    const before = await waitFor('the ring under the new term', async () => {
      const [entry] = (await (await fetch(`${consul.url}/v1/kv/${name}/ring-version`)).json()) as { Value: string }[]
      const parsed = JSON.parse(Buffer.from(entry!.Value, 'base64').toString()) as { version: number; term: number }
      return parsed.term === newTerm ? parsed : undefined
    })
    const stale = JSON.stringify({ version: before.version + 1, term: oldTerm })
    const put = await fetch(`${consul.url}/v1/kv/${name}/ring-version`, { method: 'PUT', body: stale })
    assert.equal(await put.text(), 'true')
    for (const node of survivors) {
      await waitFor('the stale change fenced', async () =>
        /^v3_cluster_ring_changes_fenced 1$/m.test(await metricsOf(node)) ? true : undefined,
      )
      const metrics = await metricsOf(node)
      assert.match(metrics, new RegExp(`^v3_cluster_ring_version ${before.version}$`, 'm'), 'the ring stays')
    }
  })

  it('hands the leadership on once it is decommissioned, while it still runs', async () => {
    const [first] = nodes.values()
    const leaderId = (await first!.client.listNodes()).find((m) => m.leader)?.id
    assert.ok(leaderId !== undefined && nodes.has(leaderId), `a running leader: ${leaderId}`)
    const old = nodes.get(leaderId)!
    // The node killed above is still a member, down: it would take over some of the leader's
    // ranges, so the decommission is refused, naming it, and nothing changes.
    const [killed] = [...specs.keys()].filter((id) => !nodes.has(id))
    await waitFor('the killed node seen down', async () =>
      (await old.client.listNodes()).some((m) => m.id === killed && m.state !== 'healthy') ? true : undefined,
    )
    const refused = await runV3(['cluster', 'decommission', leaderId, '--server', old.address])
    assert.notEqual(refused.code, 0, refused.stdout)
    assert.match(refused.stderr, new RegExp(`UNAVAILABLE.*cannot decommission ${leaderId} now: ${killed} is down`))
    const members = await old.client.listNodes()
    assert.deepEqual(
      members.map((m) => `${m.id} ${m.lifecycle}`).sort(),
      [...specs.keys()].map((id) => `${id} active`).sort(),
    )
    // Back on its folder, the killed node is healthy again, and the decommission goes ahead.
    const spec = specs.get(killed!)!
    nodes.set(
      killed!,
      await startNode(consul, { ...spec, dataDir: dirs[[...specs.keys()].indexOf(killed!)]! }, name, extra),
    )
    await waitForMembers([...nodes.values()], [...specs.keys()])
    const other = [...nodes].find(([id]) => id !== leaderId)!
    const result = await runV3(['cluster', 'decommission', leaderId, '--server', old.address])
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, new RegExp(`^${leaderId} left the ring`, 'm'))
    // The old leader still runs; the other node takes the lock without waiting out a TTL.
    const next = await waitFor('the other node leading', async () => {
      const listed = await other[1].client.listNodes()
      return listed.find((m) => m.leader)
    })
    assert.notEqual(next.id, leaderId)
    assert.ok(old.child.exitCode === null && old.child.signalCode === null, 'the decommissioned node still runs')
    await waitFor('the old leader to see it', async () =>
      /^v3_cluster_leader 0$/m.test(await (await fetch(old.metricsUrl!)).text()) ? true : undefined,
    )

    // Stopped, it is out of date: started again on its folder, it is refused rather than rejoin.
    await old.stop()
    nodes.delete(leaderId)
    await waitFor('the request cleared', async () =>
      (await fetch(`${consul.url}/v1/kv/${name}/decommission/${leaderId}`)).status === 404 ? true : undefined,
    )
    const leaderSpec = specs.get(leaderId)!
    const again = await runV3([
      'serve',
      ...clusterNodeArgs(consul, leaderSpec, name, extra),
      '--http-listen',
      'off',
      '--data',
      old.dataDir,
    ])
    assert.equal(again.code, 2, again.stderr)
    assert.match(again.stderr, new RegExp(`^v3: node ${leaderId} is no longer a member of the ring`, 'm'))
    assert.match(again.stderr, /Start it on a new data folder/)
    // On a new folder it joins again, as a new member.
    const fresh = await startNode(consul, { ...leaderSpec, dataDir: undefined }, name, extra)
    nodes.set(leaderId, fresh)
    dirs.push(fresh.dataDir)
    await waitForMembers([...nodes.values()], [...nodes.keys()])
  })
})

describe('a member down past --dead-node-timeout', { timeout: 240_000 }, () => {
  let consul: ConsulProcess
  let single: ServerProcess
  const nodes = new Map<string, ServerProcess>()
  const dirs: string[] = []
  const name = `v3-dead-${process.pid}`
  // Longer than the spread between two nodes' checks failing after they die together: each check
  // expires a TTL (10 s) after its last renewal, and renewals come every 3.3 s.
  const extra = ['--replication-factor', '2', '--vnodes', '16', '--dead-node-timeout', '6s']

  before(async () => {
    consul = await startConsul()
    single = await startServerProcess()
    for (const id of ['n1', 'n2', 'n3', 'n4']) {
      const { node } = await startFreshNode(consul, id, name, extra)
      nodes.set(id, node)
      dirs.push(node.dataDir)
    }
    await waitForMembers([...nodes.values()], ['n1', 'n2', 'n3', 'n4'])
    const data = preload()
    for (let i = 0; i < data.length; i += 10) {
      await nodes.get('n1')!.client.write(data.slice(i, i + 10))
      await single.client.write(data.slice(i, i + 10))
    }
  })

  after(async () => {
    for (const node of nodes.values()) await node.kill()
    await single?.kill()
    await consul?.stop()
    for (const dir of [...dirs, single?.dataDir]) if (dir !== undefined) await removeDataDir(dir)
  })

  it('is removed by the leader and its ranges re-replicated from the survivors', async () => {
    const members = await nodes.get('n1')!.client.listNodes()
    const victim = members.find((m) => !m.leader)!.id
    await nodes.get(victim)!.kill()
    nodes.delete(victim)
    const rest = [...nodes.keys()]
    // Writes while it is down leave hints for it on the survivors, which go once it is removed.
    const hinted: SeriesInput[] = Array.from({ length: 30 }, (_, s) => ({
      metric: 'hinted',
      tags: { s: String(s) },
      timestamps: Array.from({ length: 10 }, (_, i) => T0 + i * MINUTE),
      values: Array.from({ length: 10 }, (_, i) => s + i),
    }))
    await nodes.get(rest[0]!)!.client.write(hinted, { consistency: 'one' })
    await single.client.write(hinted)
    await waitForMembers([...nodes.values()], rest)
    await waitForSettled([...nodes.values()])
    const hintFigure = (metrics: string, name: string): number =>
      Number(new RegExp(`^${name}\\{peer="${victim}"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? 0)
    let queued = 0
    for (const node of nodes.values()) {
      await waitFor(`no hints for ${victim} left on ${node.address}`, async () =>
        hintFigure(await (await fetch(node.metricsUrl!)).text(), 'v3_hints_backlog') === 0 ? true : undefined,
      )
      queued += hintFigure(await (await fetch(node.metricsUrl!)).text(), 'v3_hints_queued')
    }
    assert.ok(queued > 0, `hints were kept for ${victim} while it was down`)
    await assertPlacement([...nodes.values()], single, 2)
    for (const node of nodes.values()) {
      for (const q of QUERIES) assertSame(await node.client.query(q), await single.client.query(q), JSON.stringify(q))
    }
  })

  it('is not removed while most of the cluster looks down (partition guard)', async () => {
    // Two of the three left die; the survivor cannot tell a partition from deaths and removes none.
    await waitForSettled([...nodes.values()])
    const members = await nodes.get([...nodes.keys()][0]!)!.client.listNodes()
    const keep = members.find((m) => m.leader)!.id
    const doomed = [...nodes.keys()].filter((id) => id !== keep)
    await Promise.all(doomed.map((id) => nodes.get(id)!.kill()))
    for (const id of doomed) nodes.delete(id)
    const survivor = nodes.get(keep)!
    try {
      await waitFor('the partition guard', async () => (/partition guard/.test(survivor.stderr()) ? true : undefined))
    } catch (err) {
      throw new Error(`${(err as Error).message}\nthe survivor's log:\n${survivor.stderr().slice(-4000)}`)
    }
    const listed = await survivor.client.listNodes()
    assert.equal(listed.length, 3, 'no member removed')
    assert.equal(listed.filter((m) => m.state === 'healthy').length, 1)
  })
})

describe('a member that dies in the middle of a change, with --dead-node-timeout', { timeout: 180_000 }, () => {
  it('is removed as dead and the change goes on without it, instead of waiting for it for ever', async () => {
    const consul = await startConsul()
    const name = `v3-midchange-${process.pid}`
    const extra = ['--replication-factor', '2', '--vnodes', '16', '--dead-node-timeout', '6s']
    const single = await startServerProcess()
    const nodes = new Map<string, ServerProcess>()
    try {
      for (const id of ['n1', 'n2', 'n3', 'n4']) nodes.set(id, (await startFreshNode(consul, id, name, extra)).node)
      await waitForMembers([...nodes.values()], ['n1', 'n2', 'n3', 'n4'])
      const data = preload()
      for (let i = 0; i < data.length; i += 10) {
        await nodes.get('n1')!.client.write(data.slice(i, i + 10), { consistency: 'all' })
        await single.client.write(data.slice(i, i + 10))
      }
      const members = await nodes.get('n1')!.client.listNodes()
      const [leaving, victim] = members.filter((m) => !m.leader).map((m) => m.id) as [string, string]
      const via = members.find((m) => m.leader)!.id
      // The victim stops answering just before the decommission: its Consul check still passes for
      // up to 10 s, so the request is taken, and the change needs the victim (it takes over some of
      // the leaving node's ranges). It never comes back.
      nodes.get(victim)!.child.kill('SIGSTOP')
      const r = await runV3([
        'cluster',
        'decommission',
        leaving,
        '--server',
        nodes.get(via)!.address,
        '--timeout',
        '120s',
      ])
      assert.equal(r.code, 0, r.stdout + r.stderr)
      assert.match(r.stdout, new RegExp(`^${leaving} left the ring`, 'm'))
      for (const id of [leaving, victim]) {
        await nodes.get(id)!.kill()
        await removeDataDir(nodes.get(id)!.dataDir)
        nodes.delete(id)
      }
      const rest = [...nodes.values()]
      await waitForMembers(rest, [...nodes.keys()])
      await waitForSettled(rest)
      for (const node of rest) {
        for (const q of QUERIES) assertSame(await node.client.query(q), await single.client.query(q), JSON.stringify(q))
      }
    } finally {
      for (const node of nodes.values()) await node.kill()
      await single.kill()
      await consul.stop()
      for (const dir of [...[...nodes.values()].map((n) => n.dataDir), single.dataDir]) await removeDataDir(dir)
    }
  })
})

/**
 * Runs `body` against the two nodes of a new cluster (on a Consul of its own) once both are
 * members, then kills them, stops Consul and removes their folders, whatever happened.
 */
async function withTwoNodes(
  name: string,
  extra: readonly string[],
  body: (n1: ServerProcess, n2: ServerProcess) => Promise<void>,
): Promise<void> {
  const consul = await startConsul()
  const started: ServerProcess[] = []
  try {
    for (const id of ['n1', 'n2']) started.push((await startFreshNode(consul, id, name, extra)).node)
    const [n1, n2] = started as [ServerProcess, ServerProcess]
    await waitForMembers([n1, n2], ['n1', 'n2'])
    await body(n1, n2)
  } finally {
    // SIGKILL ends a process held with SIGSTOP too.
    for (const node of started) await node.kill()
    await consul.stop()
    for (const node of started) await removeDataDir(node.dataDir)
  }
}

describe('decommissioning a down node that holds the only copy of its ranges (R = 1)', { timeout: 120_000 }, () => {
  it('is refused with UNAVAILABLE, and the node stays a member with its data', async () => {
    await withTwoNodes(`v3-orphan-${process.pid}`, ['--replication-factor', '1', '--vnodes', '16'], async (n1, n2) => {
      await n2.stop()
      await waitFor('n1 to see n2 down', async () =>
        (await n1.client.listNodes()).some((m) => m.id === 'n2' && m.state !== 'healthy') ? true : undefined,
      )
      const result = await runV3(['cluster', 'decommission', 'n2', '--server', n1.address])
      assert.notEqual(result.code, 0, result.stdout)
      assert.match(result.stderr, /UNAVAILABLE/)
      assert.match(result.stderr, /cannot decommission n2: it is down, and \d+ of its ranges have no other copy/)
      assert.ok(
        (await n1.client.listNodes()).some((m) => m.id === 'n2'),
        'n2 is still a member',
      )
    })
  })
})

describe('a node that holds the only copy of moving ranges goes down during the change (R = 1)', {
  timeout: 180_000,
}, () => {
  it('the change waits for it instead of starting its ranges empty, and completes once it is back', async () => {
    await withTwoNodes(`v3-holder-${process.pid}`, ['--replication-factor', '1', '--vnodes', '16'], async (n1, n2) => {
      const data = preload()
      for (let i = 0; i < data.length; i += 10) await n1.client.write(data.slice(i, i + 10))
      // n2 stops answering just before the decommission, while its Consul check still passes: the
      // request is accepted, and the leader (n1) finds n2 down while it carries the change out, with
      // n2's ranges on no other node.
      n2.child.kill('SIGSTOP')
      const leaving = runV3(['cluster', 'decommission', 'n2', '--server', n1.address])
      await waitFor(
        'the leader to wait for n2',
        async () =>
          /waiting for n2: \d+ moving ranges have their only copies there/.test(n1.stderr()) ? true : undefined,
        90_000,
      )
      n2.child.kill('SIGCONT')
      const result = await leaving
      assert.equal(result.code, 0, result.stderr)
      assert.match(result.stdout, /^n2 left the ring/m)
      // Every point is on n1 now, n2's included.
      for (const s of data) {
        const matchers = Object.entries(s.tags ?? {}).map(([key, value]) => ({ key, value, op: 'eq' as const }))
        const [got] = await n1.client.query({
          selector: { metric: s.metric, matchers },
          startMs: T0,
          endMs: T0 + 20 * MINUTE,
        })
        assert.equal(got?.timestamps.length, s.timestamps.length, `${s.metric} ${JSON.stringify(s.tags)}`)
      }
    })
  })
})

describe('two decommissions at once that would leave no member', { timeout: 120_000 }, () => {
  it('carries one out and refuses the other with INVALID_ARGUMENT naming node_id', async () => {
    await withTwoNodes(`v3-lasttwo-${process.pid}`, ['--replication-factor', '2', '--vnodes', '16'], async (n1, n2) => {
      const results = await Promise.all(
        [
          ['n1', n2],
          ['n2', n1],
        ].map(([id, via]) =>
          runV3([
            'cluster',
            'decommission',
            id as string,
            '--server',
            (via as ServerProcess).address,
            '--timeout',
            '60s',
          ]),
        ),
      )
      const done = results.filter((r) => r.code === 0)
      const refused = results.filter((r) => r.code !== 0)
      assert.equal(done.length, 1, results.map((r) => r.stdout + r.stderr).join('\n'))
      assert.match(done[0]!.stdout, /^n\d left the ring/m)
      assert.equal(refused.length, 1)
      assert.match(refused[0]!.stderr, /INVALID_ARGUMENT/)
      assert.match(refused[0]!.stderr, /node_id/)
      assert.match(refused[0]!.stderr, /last member/)
    })
  })
})

describe('Consul restarted without its data, or unreachable', { timeout: 300_000 }, () => {
  // The tests restart the Consul emulator empty; a test does not restart a real agent.
  const real = process.env.CONSUL_HTTP_ADDR !== undefined && process.env.CONSUL_HTTP_ADDR !== ''
  const name = `v3-reset-${process.pid}`
  const extra = [
    '--replication-factor',
    '2',
    '--vnodes',
    '16',
    '--leader-ttl',
    '3000ms',
    '--leader-lock-delay',
    '1000ms',
  ]
  const started = new Map<string, { spec: NodeSpec; node: ServerProcess }>()
  const node = (id: string): ServerProcess => started.get(id)!.node
  const nodes = (): ServerProcess[] => [...started.values()].map((s) => s.node)
  let port = 0
  let consul: ConsulProcess | undefined
  let expected: Map<string, SeriesPoints[]> | undefined

  const ringVersion = async (): Promise<{ version: number; term: number } | undefined> => {
    const res = await fetch(`${consul!.url}/v1/kv/${name}/ring-version`)
    if (res.status !== 200) return undefined
    const [entry] = (await res.json()) as { Value: string }[]
    return JSON.parse(Buffer.from(entry!.Value, 'base64').toString()) as { version: number; term: number }
  }
  /** The members Consul lists, by id, with their tokens and states. */
  const nodeKeys = async (): Promise<Map<string, { tokens: number[]; state: string }>> => {
    const res = await fetch(`${consul!.url}/v1/kv/${name}/nodes/?recurse`)
    const out = new Map<string, { tokens: number[]; state: string }>()
    if (res.status !== 200) return out
    for (const entry of (await res.json()) as { Key: string; Value: string }[]) {
      const record = JSON.parse(Buffer.from(entry.Value, 'base64').toString()) as { tokens: number[]; state: string }
      out.set(entry.Key.slice(entry.Key.lastIndexOf('/') + 1), { tokens: record.tokens, state: record.state })
    }
    return out
  }
  /** The term of the leader holding the lock, while one does: the key's LockIndex. */
  const leaderTerm = async (): Promise<number | undefined> => {
    const res = await fetch(`${consul!.url}/v1/kv/${name}/leader`)
    if (res.status !== 200) return undefined
    const [entry] = (await res.json()) as { LockIndex: number; Session?: string }[]
    return entry?.Session ? entry.LockIndex : undefined
  }
  /**
   * Waits until a leader holds the lock and has written the ring under its term (each term begins
   * so), its version above `above`, and the node's folder keeps that ring: an outage then leaves
   * the ring as it is.
   */
  const keptRingCurrent = (n: ServerProcess, above = 0): Promise<{ version: number; term: number }> =>
    waitFor(`a ring above version ${above} in Consul, under the leader's term, kept in ${n.dataDir}`, async () => {
      const inConsul = await ringVersion()
      const term = await leaderTerm()
      const kept = JSON.parse(await readFile(join(n.dataDir, 'cluster-ring.json'), 'utf8')) as { version: number }
      return inConsul !== undefined &&
        inConsul.version > above &&
        inConsul.term === term &&
        kept.version === inConsul.version
        ? inConsul
        : undefined
    })
  /** Each query of QUERIES answers through `n` what n1 answered once the data was loaded. */
  const answersAsLoaded = async (n: ServerProcess, when: string): Promise<void> => {
    assert.ok(expected, 'the tests before loaded the data')
    for (const q of QUERIES) {
      assertSame(await n.client.query(q), expected.get(JSON.stringify(q))!, `${when}: ${JSON.stringify(q)}`)
    }
  }
  /** Starts a node again on its data folder, with `args` beside the node flags, and records it. */
  const restartOnFolder = async (id: string, args: readonly string[] = extra): Promise<ServerProcess> => {
    const { spec, node: previous } = started.get(id)!
    const node = await startNode(consul!, { ...spec, dataDir: previous.dataDir }, name, args)
    started.set(id, { spec, node })
    return node
  }
  const restartConsulEmpty = async (): Promise<void> => {
    await consul!.stop()
    consul = await startConsul(port)
  }

  before(async () => {
    if (real) return
    port = await freePort()
    consul = await startConsul(port)
  })

  after(async () => {
    for (const s of started.values()) await s.node.kill()
    await consul?.stop()
    for (const s of started.values()) await removeDataDir(s.node.dataDir)
  })

  it('the leader writes back the ring the nodes know, under a term above the old ones, and a node joins after it', async (t) => {
    if (real) return t.skip('restarts the Consul emulator empty')
    for (const id of ['n1', 'n2']) started.set(id, await startFreshNode(consul!, id, name, extra))
    await waitForMembers(nodes(), ['n1', 'n2'])
    // A second term: the leader stops (releasing the lock) and starts again on its folder, so that
    // the nodes have seen term 2, above the 1 a new lock starts at.
    const leaderId = (await node('n1').client.listNodes()).find((m) => m.leader)?.id
    assert.ok(leaderId !== undefined && started.has(leaderId), `a leader: ${leaderId}`)
    const leader = started.get(leaderId)!
    await leader.node.stop()
    await restartOnFolder(leaderId)
    await waitForMembers(nodes(), ['n1', 'n2'])
    const old = await waitFor('a ring written under term 2', async () => {
      const v = await ringVersion()
      return v !== undefined && v.term >= 2 ? v : undefined
    })
    await node('n1').client.write(preload(), { consistency: 'all' })
    expected = await answersOf(node('n1'))

    await restartConsulEmpty()
    // The new lock starts at LockIndex 1; the leader takes it until it passes the terms seen.
    const back = await waitFor('the ring back in Consul', async () => {
      const v = await ringVersion()
      return v !== undefined && v.version > old.version && v.term > old.term ? v : undefined
    })
    t.diagnostic(`ring version ${old.version} at term ${old.term} before; ${back.version} at term ${back.term} after`)
    // Each acquire bumps the lock's index by one: no more were made than needed.
    assert.ok(old.term <= 4, `term ${old.term} after one change of leader`)
    assert.ok(back.term <= old.term + 3, `term ${back.term} after the restart, ${old.term} before`)
    await waitForMembers(nodes(), ['n1', 'n2'])

    // A ring change: a third node joins, and the data moves to it.
    started.set('n3', await startFreshNode(consul!, 'n3', name, extra))
    await waitForMembers(nodes(), ['n1', 'n2', 'n3'])
    await waitForSettled(nodes())
    for (const n of nodes()) {
      await answersAsLoaded(n, 'after the join')
    }
  })

  it('a member restarted while Consul holds no ring does not start a new one; it waits for a node that knows the ring', async (t) => {
    if (real) return t.skip('restarts the Consul emulator empty')
    assert.ok(expected, 'the test before loaded the data')
    // n1 stops; Consul loses its data; n1 starts again on its folder, knowing no ring, while n2 and
    // n3, which know it, are held (SIGSTOP): n1 is the only candidate. Leading, it would start a ring
    // of itself alone and take the others' ranges.
    const n1 = started.get('n1')!
    const held = [node('n2'), node('n3')]
    const before = await nodeKeys()
    await n1.node.stop()
    for (const n of held) n.child.kill('SIGSTOP')
    let resumed = false
    let restarting: Promise<ServerProcess> | undefined
    try {
      await restartConsulEmpty()
      restarting = startNode(consul!, { ...n1.spec, dataDir: n1.node.dataDir }, name, extra)
      restarting.catch(() => {}) // Awaited below.
      await waitFor('n1 registered in the new Consul', async () => {
        const res = await fetch(`${consul!.url}/v1/health/service/${name}?passing=true`)
        const list = (await res.json()) as { Service: { Meta: Record<string, string> } }[]
        return list.some((e) => e.Service.Meta.node_id === 'n1') ? true : undefined
      })
      // Its election runs from here: give it time to take the lock, which it must not.
      const until = Date.now() + 3000
      while (Date.now() < until) {
        assert.equal(await ringVersion(), undefined, 'n1 started no ring of its own')
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      for (const n of held) n.child.kill('SIGCONT')
      resumed = true
      started.set('n1', { spec: n1.spec, node: await restarting })
    } finally {
      if (!resumed) {
        for (const n of held) n.child.kill('SIGCONT')
        await restarting?.then(
          (n) => n.kill(),
          () => {},
        )
      }
    }
    // n2 and n3 know the ring, and n1 kept it: whichever leads writes that ring back, and n1 is a
    // member of it again, with the others and the tokens they had.
    await waitForMembers(nodes(), ['n1', 'n2', 'n3'])
    // The nodes list the ring they know before the leader has written it: wait for the write.
    await waitFor('the ring back in Consul', ringVersion)
    assert.deepEqual(await nodeKeys(), before, 'the same members with the same tokens')
    for (const n of nodes()) {
      await answersAsLoaded(n, 'after the restart')
    }
  })

  it('every member killed while Consul lost its data: they take back the ring they kept, with its tokens and their data', async (t) => {
    if (real) return t.skip('restarts the Consul emulator empty')
    assert.ok(expected, 'the tests before loaded the data')
    const before = await nodeKeys()
    assert.deepEqual([...before.keys()].sort(), ['n1', 'n2', 'n3'])
    const old = await ringVersion()
    // A power cut: every node and Consul's data go at once; the nodes come back on their folders.
    for (const s of started.values()) await s.node.kill()
    await restartConsulEmpty()
    const specs = [...started.entries()].map(([id, s]) => ({ id, spec: { ...s.spec, dataDir: s.node.dataDir } }))
    const restarted = await Promise.allSettled(specs.map(({ spec }) => startNode(consul!, spec, name, extra)))
    restarted.forEach((r, i) => {
      const { id, spec } = specs[i]!
      if (r.status === 'fulfilled') started.set(id, { spec, node: r.value })
    })
    const failed = restarted.find((r) => r.status === 'rejected')
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason
    await waitForMembers(nodes(), ['n1', 'n2', 'n3'])
    // The nodes route with the ring they took back before the leader has written it: wait for the write.
    const back = await waitFor('the ring back in Consul', ringVersion)
    assert.ok(old !== undefined && back.version > old.version, `ring ${back.version} after ${old?.version}`)
    assert.deepEqual(await nodeKeys(), before, 'the same members with the same tokens')
    const said = nodes().filter((n) => /taking back the ring this node kept/.test(n.stderr())).length
    assert.ok(said >= 1, 'a node took its kept ring back')
    for (const n of nodes()) {
      await answersAsLoaded(n, 'after the power cut')
    }
  })

  it('a member killed and restarted while Consul cannot be reached serves on the ring it kept, and registers once Consul is back', async (t) => {
    if (real) return t.skip('pauses the Consul emulator')
    assert.ok(expected, 'the tests before loaded the data')
    await waitForMembers(nodes(), ['n1', 'n2', 'n3'])
    const n1 = started.get('n1')!
    const version = await keptRingCurrent(n1.node)
    const before = await nodeKeys()
    const paused = consul!.child!
    paused.kill('SIGSTOP')
    try {
      await n1.node.kill()
      // Without its kept ring n1 would wait for Consul before printing its listening line.
      const first = await restartOnFolder('n1')
      assert.match(first.stderr(), /Consul cannot be reached: taking back the ring this node kept/)
      // A clean stop meanwhile does not wait for Consul (the node never registered), and a start
      // after it takes the ring back again.
      assert.deepEqual(await first.stop(), { code: 0, signal: null })
      // A member that does not answer (held with SIGSTOP) keeps the restore waiting, unless it is
      // named in --restore-ring-without: then n1 serves, reading from the members that answered.
      const n3 = node('n3')
      n3.child.kill('SIGSTOP')
      try {
        const without = await restartOnFolder('n1', [...extra, '--restore-ring-without', 'n3'])
        assert.match(without.stderr(), /without waiting for members --restore-ring-without names/)
        await answersAsLoaded(without, 'without n3')
        assert.deepEqual(await without.stop(), { code: 0, signal: null })
      } finally {
        n3.child.kill('SIGCONT')
      }
      const restarted = await restartOnFolder('n1')
      assert.match(restarted.stderr(), /Consul cannot be reached: taking back the ring this node kept/)
      await waitForMembers(nodes(), ['n1', 'n2', 'n3'])
      // Writes and reads through it go on at quorum, its own series and its peers' alike.
      const more = preload().map((sp) => ({ ...sp, metric: `${sp.metric}_outage` }))
      await restarted.client.write(more, { consistency: 'quorum' })
      await answersAsLoaded(restarted, 'during the outage')
      const outage = { selector: { metric: 'cpu_outage' }, startMs: T0, endMs: T0 + 20 * MINUTE }
      const wrote = await restarted.client.query(outage, { consistency: 'quorum' })
      assert.equal(wrote.length, 30, 'every series written through it reads back at quorum')
      paused.kill('SIGCONT')
      // Consul back: n1 registers, and the ring stays what it was. The registration of n1 before
      // its kill has the same service id and address and may still pass its TTL check, so Consul's
      // list alone does not show that the restarted process registered: its metrics do, once its
      // registration (retried with backoff through the outage) went through.
      await waitFor('n1 reaching Consul again and registered', async () =>
        /^v3_consul_reachable 1$/m.test(await (await fetch(restarted.metricsUrl!)).text()) ? true : undefined,
      )
      await waitFor('n1 registered in Consul', async () => {
        const res = await fetch(`${consul!.url}/v1/health/service/${name}?passing=true`)
        const list = (await res.json()) as { Service: { Meta: Record<string, string> } }[]
        return list.some((e) => e.Service.Meta.node_id === 'n1') ? true : undefined
      })
      await waitForMembers(nodes(), ['n1', 'n2', 'n3'])
      // The leader's session could not be renewed through the pause (3 s TTL here): a new term may
      // have written the same ring again under a higher version. Its members and tokens stay.
      const after = await ringVersion()
      assert.ok(
        after !== undefined && after.version >= version.version,
        `ring ${after?.version} after ${version.version}`,
      )
      assert.deepEqual(await nodeKeys(), before, 'the same members with the same tokens')
      for (const n of nodes()) {
        assert.equal((await n.client.query(outage, { consistency: 'quorum' })).length, 30)
        await answersAsLoaded(n, 'after the outage')
      }
    } finally {
      // Resumed already, unless an assertion failed first: a second SIGCONT changes nothing.
      paused.kill('SIGCONT')
    }
  })

  it('a member serving on its kept ring stops, exit 2, once Consul is back and says another live node has its id', async (t) => {
    if (real) return t.skip('pauses the Consul emulator')
    assert.ok(expected, 'the tests before loaded the data')
    await waitForMembers(nodes(), ['n1', 'n2', 'n3'])
    const n1 = started.get('n1')!
    // The pause of the test before may have made a new term write the ring again: n1 takes its
    // kept ring back only when no member knows a newer one.
    const before = await keptRingCurrent(n1.node)
    // Another node takes the id n1 at another address, its check passing: what Consul shows when
    // two processes are started with one --node-id. Its peer address is n1's, so the members'
    // traffic still reaches n1. The leader records the new address in the ring; n1, still
    // running, keeps that ring, so that the ring it takes back below is the newest.
    const serviceId = `${name}-n1`
    const register = await fetch(`${consul!.url}/v1/agent/service/register`, {
      method: 'PUT',
      body: JSON.stringify({
        ID: serviceId,
        Name: name,
        Address: '127.0.0.1',
        Port: await freePort(),
        Meta: { node_id: 'n1', peer_address: `127.0.0.1:${n1.spec.peerPort}` },
        Check: { TTL: '600s' },
      }),
    })
    assert.equal(register.status, 200, await register.text())
    const pass = await fetch(`${consul!.url}/v1/agent/check/pass/service:${serviceId}`, { method: 'PUT' })
    assert.equal(pass.status, 200, await pass.text())
    await keptRingCurrent(n1.node, before.version)
    await n1.node.kill()
    const paused = consul!.child!
    paused.kill('SIGSTOP')
    try {
      const restored = await restartOnFolder('n1')
      assert.match(restored.stderr(), /Consul cannot be reached: taking back the ring this node kept/)
      paused.kill('SIGCONT')
      const code = await waitFor('n1 to stop once Consul answers', async () =>
        restored.child.exitCode === null ? undefined : restored.child.exitCode,
      )
      // Closes its client; the process has exited.
      await restored.kill()
      assert.equal(code, 2, restored.stderr())
      assert.match(restored.stderr(), /the cluster refused this node; shutting down/)
      assert.match(restored.stderr(), /node id n1 is in use: the node at 127\.0\.0\.1:\d+ has it/)
    } finally {
      // Resumed already, unless an assertion failed first: a second SIGCONT changes nothing.
      paused.kill('SIGCONT')
    }
    // With the other process gone, n1 starts on its folder again and serves what it held.
    const deregister = await fetch(`${consul!.url}/v1/agent/service/deregister/${serviceId}`, { method: 'PUT' })
    assert.equal(deregister.status, 200, await deregister.text())
    const again = await restartOnFolder('n1')
    await waitForMembers(nodes(), ['n1', 'n2', 'n3'])
    await answersAsLoaded(again, 'after the refusal')
  })
})
