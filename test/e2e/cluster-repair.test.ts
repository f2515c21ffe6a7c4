import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { dirname, join, resolve } from 'node:path'
import { after, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { SeriesInput } from '../../src/client/index.js'
import {
  type ConsulProcess,
  type NodeSpec,
  startConsul,
  startFreshNode,
  startNode,
  waitFor,
  waitForMembers,
} from './cluster-kit.js'
import { removeDataDir, type ServerProcess } from './server-process.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
/** The installed command; `npm test` builds dist/ before the tests run. */
const V3_BIN = join(ROOT, 'bin', 'v3.js')

// Two hours ago: settled data, which background passes cover too.
const T0 = Math.floor((Date.now() - 2 * 3_600_000) / 1000) * 1000
const SERIES = 30

/** SERIES series with two points each. */
function points(metric: string): SeriesInput[] {
  return Array.from({ length: SERIES }, (_, i) => ({
    metric,
    tags: { s: String(i).padStart(3, '0') },
    timestamps: [T0, T0 + 1_000],
    values: [i, i + 0.5],
  }))
}

/** The points of `metric` a node answers for at ONE: with three copies, from its own copy alone. */
async function countPoints(node: ServerProcess, metric: string): Promise<number> {
  const series = await node.client.query(
    { selector: { metric }, startMs: T0, endMs: T0 + 60_000 },
    { consistency: 'one', timeoutMs: 20_000 },
  )
  return series.reduce((n, s) => n + s.timestamps.length, 0)
}

/** The sum of a metric's samples on a node whose labels include `labels` (0 when none). */
async function metric(node: ServerProcess, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(node.metricsUrl!)).text()
  let total = 0
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, 'gm'))) {
    if ((m[1] ?? '').includes(labels)) total += Number(m[2])
  }
  return total
}

/**
 * Three nodes with three copies and a one-second hint window: while c is down, QUORUM writes
 * through a leave hints for c that a drops, so only repair can bring c's copy back.
 */
async function startCluster(
  consul: ConsulProcess,
  name: string,
  args: readonly string[],
): Promise<{ nodes: ServerProcess[]; specs: NodeSpec[] }> {
  const nodes: ServerProcess[] = []
  const specs: NodeSpec[] = []
  for (const id of ['a', 'b', 'c']) {
    const { spec, node } = await startFreshNode(consul, id, name, args)
    specs.push(spec)
    nodes.push(node)
  }
  await waitForMembers(nodes, ['a', 'b', 'c'])
  return { nodes, specs }
}

/** Kills c, writes `metric` at QUORUM through a, waits until a dropped c's hints, and starts c again. */
async function outageLongerThanHints(
  consul: ConsulProcess,
  name: string,
  args: readonly string[],
  nodes: ServerProcess[],
  specs: NodeSpec[],
  metricName: string,
  untilRequestsEnd: boolean,
): Promise<void> {
  await nodes[2]!.kill()
  await nodes[0]!.client.write(points(metricName), { consistency: 'quorum' })
  await waitFor('a to drop its hints for c', async () =>
    (await metric(nodes[0]!, 'v3_hints_dropped', 'peer="c"')) > 0 &&
    (await metric(nodes[0]!, 'v3_hints_backlog', 'peer="c"')) === 0
      ? true
      : undefined,
  )
  assert.equal(await metric(nodes[0]!, 'v3_hints_needs_repair', 'peer="c"'), 1)
  // A write a sent c while it was down waits in a's socket until c listens again, and c stores it if
  // it arrives before its deadline (--peer-timeout): where the test needs c empty, c starts only once
  // a has given that request up. (Background passes every second keep requests to c in flight.)
  if (untilRequestsEnd) {
    await waitFor('a to give up its requests to c', async () =>
      (await metric(nodes[0]!, 'v3_peer_in_flight', 'peer="c"')) === 0 &&
      (await metric(nodes[0]!, 'v3_peer_queue_depth', 'peer="c"')) === 0
        ? true
        : undefined,
    )
  }
  nodes[2] = await startNode(consul, { ...specs[2]!, dataDir: nodes[2]!.dataDir }, name, args)
  await waitForMembers(nodes, ['a', 'b', 'c'])
}

describe('anti-entropy repair after an outage longer than the hint window', { timeout: 120_000 }, () => {
  let consul: ConsulProcess | undefined
  const started: ServerProcess[] = []

  after(async () => {
    for (const node of started) await node.kill()
    await consul?.stop()
    for (const node of started) await removeDataDir(node.dataDir)
  })

  it('v3 cluster repair brings the replica back and reports what it moved; c alone then holds every point', async () => {
    consul ??= await startConsul()
    const name = `v3-repair-cmd-${process.pid}`
    const args = ['--replication-factor', '3', '--read-timeout', '300ms', '--hint-window', '1s', '--peer-timeout', '2s']
    const { nodes, specs } = await startCluster(consul, name, args)
    started.push(...nodes)
    await outageLongerThanHints(consul, name, args, nodes, specs, 'repaired', true)
    started.push(nodes[2]!)
    const c = nodes[2]!
    assert.equal(await countPoints(c, 'repaired'), 0, 'c missed every write and got no hint')

    const run = async (...extra: string[]) =>
      promisify(execFile)(process.execPath, [V3_BIN, 'cluster', 'repair', '--server', nodes[0]!.address, ...extra], {
        cwd: ROOT,
      })
    const { stdout } = await run()
    // node  ranges compared  blocks repaired  points sent  points received  duration
    const total = /^total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+s$/m.exec(stdout)
    assert.ok(total, stdout)
    const [compared, repaired, sent, received] = total.slice(1).map(Number) as [number, number, number, number]
    assert.ok(compared > 0, stdout)
    assert.ok(repaired > 0, stdout)
    // Every point c lacked reached it at least once (two passes may cover the same range).
    assert.ok(sent + received >= 2 * SERIES, stdout)
    for (const id of ['a', 'b', 'c']) assert.match(stdout, new RegExp(`^${id}\\s+\\d+`, 'm'))
    assert.equal(await countPoints(c, 'repaired'), 2 * SERIES)
    // a's pass covered every range of c: the mark its dropped hints left is gone.
    assert.equal(await metric(nodes[0]!, 'v3_hints_needs_repair', 'peer="c"'), 0)
    assert.ok((await metric(nodes[0]!, 'v3_repair_passes_total', 'outcome="ok"')) >= 1)

    // A second run finds nothing to move.
    const again = JSON.parse((await run('--format', 'json')).stdout) as {
      nodes: { nodeId: string; rangesRepaired: number; pointsSent: number; pointsReceived: number }[]
      downNodes: string[]
    }
    assert.deepEqual(
      again.nodes.map((n) => [n.nodeId, n.rangesRepaired, n.pointsSent, n.pointsReceived]),
      [
        ['a', 0, 0, 0],
        ['b', 0, 0, 0],
        ['c', 0, 0, 0],
      ],
    )
    assert.deepEqual(again.downNodes, [])

    // With a and b gone, c answers from its own copy.
    await nodes[0]!.kill()
    await nodes[1]!.kill()
    assert.equal(await countPoints(c, 'repaired'), 2 * SERIES)
    for (const node of nodes) await node.kill()
  })

  it('a background pass alone heals the replica, without the command', async () => {
    consul ??= await startConsul()
    const name = `v3-repair-bg-${process.pid}`
    const args = [
      '--replication-factor',
      '3',
      '--read-timeout',
      '300ms',
      '--hint-window',
      '1s',
      '--repair-interval',
      '1s',
    ]
    const { nodes, specs } = await startCluster(consul, name, args)
    started.push(...nodes)
    await outageLongerThanHints(consul, name, args, nodes, specs, 'healed', false)
    started.push(nodes[2]!)
    const c = nodes[2]!
    await waitFor('background repair to bring c every point', async () =>
      (await countPoints(c, 'healed')) === 2 * SERIES ? true : undefined,
    )
    let repaired = 0
    for (const node of nodes) repaired += await metric(node, 'v3_repair_ranges_repaired_total')
    assert.ok(repaired > 0, 'the repair metrics count the blocks repaired')
    await waitFor('a to clear the repair mark of c', async () =>
      (await metric(nodes[0]!, 'v3_hints_needs_repair', 'peer="c"')) === 0 ? true : undefined,
    )
    // With a and b gone, c answers from its own copy.
    await nodes[0]!.kill()
    await nodes[1]!.kill()
    assert.equal(await countPoints(c, 'healed'), 2 * SERIES)
  })
})
