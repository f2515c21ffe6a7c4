import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { ConsistencyLevel, SeriesInput } from '../../src/client/index.js'
import { runV3 } from './cli-run.js'
import {
  type ConsulProcess,
  type NodeSpec,
  startConsul,
  startFreshNode,
  startNode,
  waitFor,
  waitForMembers,
  waitForSettled,
} from './cluster-kit.js'
import { removeDataDir, type ServerProcess } from './server-process.js'

const T0 = Date.UTC(2026, 2, 1)

/** An error with a gRPC status code. */
type CodedError = Error & { code?: number }

function unavailableNaming(...ids: string[]): (err: CodedError) => boolean {
  return (err) => {
    assert.equal(err.code, 14, err.message)
    for (const id of ids) assert.match(err.message, new RegExp(`\\b${id}\\b`))
    return true
  }
}

/** `count` series of one point each at `ts`, value i. */
function points(metric: string, count: number, ts: number): SeriesInput[] {
  return Array.from({ length: count }, (_, i) => ({
    metric,
    tags: { s: String(i).padStart(3, '0') },
    timestamps: [ts],
    values: [i],
  }))
}

/** How many points of `metric` a node answers for over the whole test range, at `consistency`. */
async function countPoints(
  node: ServerProcess,
  metric: string,
  consistency: ConsistencyLevel = 'one',
): Promise<number> {
  const series = await node.client.query(
    { selector: { metric }, startMs: T0, endMs: T0 + 86_400_000 },
    { consistency, timeoutMs: 20_000 },
  )
  return series.reduce((n, s) => n + s.timestamps.length, 0)
}

/** A figure of a node's /metrics, 0 when absent. */
async function metric(node: ServerProcess, name: string, peer: string): Promise<number> {
  const text = await (await fetch(node.metricsUrl!)).text()
  const line = new RegExp(`^${name}\\{peer="${peer}"\\} (\\S+)$`, 'm').exec(text)
  return line === null ? 0 : Number(line[1])
}

/**
 * Three nodes with three copies of each series. Nodes are killed with SIGKILL and restarted on
 * their data folder and ports; each test leaves all three running.
 */
describe('a cluster of three nodes with three copies: write and read consistency, hints', { timeout: 300_000 }, () => {
  let consul: ConsulProcess
  const specs: NodeSpec[] = []
  const nodes: ServerProcess[] = []
  const name = `v3-levels-${process.pid}`
  const args = ['--replication-factor', '3', '--read-timeout', '300ms']

  async function restart(i: number): Promise<void> {
    nodes[i] = await startNode(consul, { ...specs[i]!, dataDir: nodes[i]!.dataDir }, name, args)
  }

  async function allUp(): Promise<void> {
    await waitForMembers(nodes, ['a', 'b', 'c'])
  }

  before(async () => {
    consul = await startConsul()
    for (const id of ['a', 'b', 'c']) {
      const { spec, node } = await startFreshNode(consul, id, name, args)
      specs.push(spec)
      nodes.push(node)
    }
    await allUp()
    // The joins are over once their cleanups are: none runs on into the tests that kill nodes.
    await waitForSettled(nodes)
  })

  after(async () => {
    for (const node of nodes) await node.kill()
    await consul?.stop()
    for (const node of nodes) await removeDataDir(node.dataDir)
  })

  it('acknowledges ONE with two owners down, refuses QUORUM and ALL naming them, and hints all of it', async () => {
    const [a, b, c] = nodes as [ServerProcess, ServerProcess, ServerProcess]
    await b.kill()
    await c.kill()
    await a.client.write(points('one', 5, T0), { consistency: 'one' })
    await assert.rejects(
      a.client.write(points('one', 5, T0 + 1), { consistency: 'quorum' }),
      unavailableNaming('b', 'c'),
    )
    // ALL fails at the first owner that fails it, whichever of the two that is.
    await assert.rejects(a.client.write(points('one', 5, T0 + 2), { consistency: 'all' }), (err: CodedError) => {
      assert.equal(err.code, 14, err.message)
      assert.match(err.message, /ALL.*node [bc]\b/)
      return true
    })
    assert.equal(await countPoints(a, 'one'), 15, 'the coordinator stored its part of every write')
    await restart(1)
    await restart(2)
    await allUp()
    // The hints reach both owners: each then answers from its own copy, the others stopped.
    await waitFor('the hints for b and c to be delivered', async () => {
      const left = (await metric(a, 'v3_hints_backlog', 'b')) + (await metric(a, 'v3_hints_backlog', 'c'))
      return left === 0 ? true : undefined
    })
    assert.ok((await metric(a, 'v3_hints_delivered', 'b')) >= 3)
    assert.ok((await metric(a, 'v3_hints_delivered', 'c')) >= 3)
  })

  it('answers a QUORUM read with every QUORUM write while one owner is down, and an ALL read with UNAVAILABLE', async () => {
    const [a, b, c] = nodes as [ServerProcess, ServerProcess, ServerProcess]
    await c.kill()
    await a.client.write(points('quorum', 40, T0), { consistency: 'quorum' })
    await b.client.write(points('quorum', 40, T0 + 1_000), { consistency: 'quorum' })
    assert.equal(await countPoints(b, 'quorum', 'quorum'), 80)
    assert.equal(await countPoints(a, 'quorum', 'quorum'), 80)
    const latest = await b.client.latest({ metric: 'quorum' }, { consistency: 'quorum' })
    assert.equal(latest.length, 40)
    assert.ok(latest.every((s) => s.timestamps[0] === T0 + 1_000))
    assert.equal((await a.client.listSeries({ metric: 'quorum' }, { consistency: 'quorum' })).length, 40)
    // Aggregates over three copies count each point once.
    const [count] = await b.client.query(
      {
        selector: { metric: 'quorum' },
        startMs: T0,
        endMs: T0 + 86_400_000,
        aggregation: { func: 'count', stepMs: 0, mergeSeries: true },
      },
      { consistency: 'quorum' },
    )
    assert.equal(count?.values[0], 80)
    await assert.rejects(
      a.client.query({ selector: { metric: 'quorum' }, startMs: T0, endMs: T0 + 86_400_000 }, { consistency: 'all' }),
      unavailableNaming('c'),
    )
    await restart(2)
    await allUp()
  })

  it('fails an ALL read, a listing and the stats at once naming a node Consul reports down, without waiting for it', async () => {
    const [a, , c] = nodes as [ServerProcess, ServerProcess, ServerProcess]
    await a.client.write(points('downread', 5, T0), { consistency: 'all' })
    // A clean stop deregisters the node: the others see it down as soon as Consul answers their watch.
    await c.stop()
    await waitFor('a to see c down', async () =>
      (await a.client.listNodes()).some((m) => m.id === 'c' && m.state !== 'healthy') ? true : undefined,
    )
    const down = (err: CodedError) => {
      unavailableNaming('c')(err)
      assert.match(err.message, /node c \(127\.0\.0\.1:\d+\) is down: its Consul check fails/)
      return true
    }
    const range = { selector: { metric: 'downread' }, startMs: T0, endMs: T0 + 86_400_000 }
    await assert.rejects(a.client.query(range, { consistency: 'all' }), down)
    await assert.rejects(a.client.listSeries({ metric: 'downread' }, { consistency: 'all' }), down)
    await assert.rejects(a.client.stats(), down)
    // ONE and QUORUM read the copies that are up.
    assert.equal(await countPoints(a, 'downread', 'quorum'), 5)
    await restart(2)
    await allUp()
  })

  it('keeps hints across a kill -9 of the coordinator and delivers them: the owner alone then holds every point', async () => {
    await nodes[2]!.kill()
    await nodes[0]!.client.write(points('hinted', 30, T0), { consistency: 'quorum' })
    await nodes[0]!.client.write(points('hinted', 30, T0 + 1_000), { consistency: 'quorum' })
    // c's parts become hints once a gives up on c, which may be after the writes were answered.
    await waitFor('a to hold the hints for c', async () =>
      (await metric(nodes[0]!, 'v3_hints_backlog', 'c')) >= 2 ? true : undefined,
    )
    // ListNodes and `v3 cluster status` on a show the backlog it keeps for c.
    const listed = (await nodes[0]!.client.listNodes()).find((n) => n.id === 'c')
    assert.ok((listed?.hintsPending ?? 0) >= 2, `a lists ${listed?.hintsPending} hints for c`)
    const status = await runV3(['cluster', 'status', '--server', nodes[0]!.address])
    assert.equal(status.code, 0, status.stderr)
    // A part still under way when the listing was taken may have become a hint since: at least as many.
    // node address peer health state share [leader] hints [move]
    const shown = /^c\s+\S+\s+\S+\s+\S+\s+\S+\s+[\d.]+%\s+(?:yes\s+)?(\d+)(?:\s|$)/m.exec(status.stdout)
    assert.ok(shown, status.stdout)
    assert.ok(Number(shown[1]) >= (listed?.hintsPending ?? 0), status.stdout)
    await nodes[0]!.kill()
    await restart(0)
    await restart(2)
    await allUp()
    await waitFor('the hints for c to be delivered after the restart', async () =>
      (await metric(nodes[0]!, 'v3_hints_backlog', 'c')) === 0 ? true : undefined,
    )
    // With a and b gone, c answers from its own copy.
    await nodes[0]!.kill()
    await nodes[1]!.kill()
    assert.equal(await countPoints(nodes[2]!, 'hinted'), 60)
    assert.equal(await countPoints(nodes[2]!, 'one'), 15)
    await restart(0)
    await restart(1)
    await allUp()
  })
})

describe('a cluster of three nodes with two copies: reads around a stopped node', { timeout: 180_000 }, () => {
  let consul: ConsulProcess
  const nodes: ServerProcess[] = []

  before(async () => {
    consul = await startConsul()
    for (const id of ['p', 'q', 'r']) {
      nodes.push(
        (
          await startFreshNode(consul, id, `v3-hedge-${process.pid}`, [
            '--replication-factor',
            '2',
            '--read-timeout',
            '300ms',
          ])
        ).node,
      )
    }
    await waitForMembers(nodes, ['p', 'q', 'r'])
  })

  after(async () => {
    for (const node of nodes) {
      node.child.kill('SIGCONT')
      await node.kill()
    }
    await consul?.stop()
    for (const node of nodes) await removeDataDir(node.dataDir)
  })

  it('answers from the other replica within the read timeout while one is stopped with SIGSTOP', async () => {
    const [p, , r] = nodes as [ServerProcess, ServerProcess, ServerProcess]
    await p.client.write(points('hedged', 60, T0), { consistency: 'all' })
    const aggregation = { func: 'sum', stepMs: 0, mergeSeries: true } as const
    const query = { selector: { metric: 'hedged' }, startMs: T0, endMs: T0 + 60_000 }
    const expectedSum = (59 * 60) / 2
    r.child.kill('SIGSTOP')
    try {
      // The peer timeout is 3 s: without a second replica each read would fail after it.
      for (let round = 0; round < 3; round++) {
        const raw = await p.client.query(query, { timeoutMs: 2_000 })
        assert.equal(raw.length, 60)
        const [sum] = await p.client.query({ ...query, aggregation }, { timeoutMs: 2_000 })
        assert.equal(sum?.values[0], expectedSum)
        assert.equal((await p.client.latest({ metric: 'hedged' }, { timeoutMs: 2_000 })).length, 60)
        assert.equal((await p.client.listSeries({ metric: 'hedged' }, { timeoutMs: 2_000 })).length, 60)
      }
    } finally {
      r.child.kill('SIGCONT')
    }
  })
})
