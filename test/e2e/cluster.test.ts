import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { mergeChunks, type QueryInput, type SeriesInput, V3Client } from '../../src/client/index.js'
import { newPeerKey } from '../../src/cluster/peer-key.js'
import type { SeriesPoints } from '../../src/model/types.js'
import { freePort, speaksCurve } from '../fixtures/net.js'
import { writeRequest } from '../fixtures/prom-remote-bodies.js'
import { assertSameSeries } from '../fixtures/series-assert.js'
import { runV3 } from './cli-run.js'
import {
  type ConsulProcess,
  clusterNodeArgs,
  type NodeSpec,
  nodeSpec,
  startConsul,
  startFreshNode,
  startNode,
  waitFor,
  waitForMembers,
} from './cluster-kit.js'
import { makeDataDir, removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2026, 0, 1)
const HOUR = 3_600_000

/** 40 series of two metrics, a point every 10 s for an hour; whole values keep sums exact. */
function dataset(): SeriesInput[] {
  const out: SeriesInput[] = []
  for (let h = 0; h < 10; h++) {
    for (const region of ['eu-west', 'us-east']) {
      for (const metric of ['cpu', 'mem']) {
        const timestamps: number[] = []
        const values: number[] = []
        for (let t = 0; t < HOUR; t += 10_000) {
          timestamps.push(T0 + t + h * 7)
          values.push(((h * 31 + t / 10_000) % 97) - (region === 'eu-west' ? 10 : 0))
        }
        const tags: Record<string, string> = { host: `h${String(h).padStart(2, '0')}`, region }
        if (h % 3 === 0) tags.rack = `r${h % 2}`
        out.push({ metric, tags, timestamps, values })
      }
    }
  }
  return out
}

/**
 * Equal answers (see assertSameSeries). Every call compares a query the data set answers, so an
 * empty expected answer means the comparison proves nothing: it fails.
 */
function assertSameAnswer(actual: readonly SeriesPoints[], expected: readonly SeriesPoints[], context: string): void {
  assert.ok(expected.length > 0, `${context}: the single node answers with no series`)
  assertSameSeries(actual, expected, context)
}

const QUERIES: readonly QueryInput[] = (() => {
  const range = { startMs: T0, endMs: T0 + HOUR }
  const out: QueryInput[] = [
    { selector: { metric: 'cpu' }, ...range },
    { selector: { metric: 'cpu', matchers: [{ key: 'region', value: 'eu-.*', op: 'regex' }] }, ...range },
    { selector: { metric: 'cpu', matchers: [{ key: 'host', value: 'h0[12]', op: 'not_regex' }] }, ...range },
    { selector: { metric: 'mem', matchers: [{ key: 'rack', value: '', op: 'eq' }] }, ...range },
    {
      selector: { metric: 'mem', matchers: [{ key: 'host', value: 'h03', op: 'neq' }] },
      startMs: T0 + 1_000,
      endMs: T0 + 20 * 60_000,
    },
    {
      selector: { metric: 'cpu' },
      additionalSelectors: [{ metric: 'mem' }],
      ...range,
      valueFilter: { op: 'gt', value: 40 },
    },
  ]
  const funcs = ['count', 'sum', 'min', 'max', 'avg', 'first', 'last', 'stddev', 'p50', 'p99'] as const
  for (const func of funcs) {
    out.push({ selector: { metric: 'cpu' }, ...range, aggregation: { func, stepMs: 300_000 } })
    out.push({ selector: { metric: 'cpu' }, ...range, aggregation: { func, stepMs: 600_000, groupBy: ['region'] } })
    out.push({ selector: { metric: 'mem' }, ...range, aggregation: { func, stepMs: 0, mergeSeries: true } })
    out.push({ selector: { metric: 'mem' }, ...range, aggregation: { func, stepMs: 900_000, groupBy: ['rack'] } })
  }
  return out
})()

/** Writes the data set through `writer` and to `single`, then checks every query kind through `reader`. */
async function checkAnswers(writer: ServerProcess, reader: ServerProcess, single: ServerProcess): Promise<void> {
  const data = dataset()
  for (let i = 0; i < data.length; i += 10) {
    await writer.client.write(data.slice(i, i + 10))
    await single.client.write(data.slice(i, i + 10))
  }
  for (const query of QUERIES) {
    const context = JSON.stringify(query)
    assertSameAnswer(await reader.client.query(query), await single.client.query(query), context)
    const streamed = await mergeChunks(reader.client.queryStream(query))
    assertSameAnswer(streamed, await single.client.query(query), `stream ${context}`)
  }
  for (const metric of ['cpu', 'mem']) {
    assertSameAnswer(await reader.client.latest({ metric }), await single.client.latest({ metric }), `latest ${metric}`)
    assert.deepEqual(await reader.client.listSeries({ metric }), await single.client.listSeries({ metric }))
  }
  assert.deepEqual(
    await reader.client.listSeries({ metric: 'cpu', matchers: [{ key: 'host', value: 'h0.', op: 'regex' }] }),
    await single.client.listSeries({ metric: 'cpu', matchers: [{ key: 'host', value: 'h0.', op: 'regex' }] }),
  )
}

describe('a cluster of three nodes, one copy of each series', { timeout: 240_000 }, () => {
  let consul: ConsulProcess
  let single: ServerProcess
  const specs: NodeSpec[] = []
  const nodes: ServerProcess[] = []
  const name = `v3-r1-${process.pid}`
  const dataDirs: string[] = []

  before(async () => {
    consul = await startConsul()
    single = await startServerProcess()
    for (const id of ['n1', 'n2', 'n3']) {
      const { spec, node } = await startFreshNode(consul, id, name, ['--replication-factor', '1', '--vnodes', '64'])
      specs.push(spec)
      nodes.push(node)
      dataDirs.push(node.dataDir)
    }
    await waitForMembers(nodes, ['n1', 'n2', 'n3'])
  })

  after(async () => {
    for (const node of nodes) await node.kill()
    await single?.kill()
    await consul?.stop()
    for (const dir of [...dataDirs, single?.dataDir]) if (dir !== undefined) await removeDataDir(dir)
  })

  it('lists every member with its addresses and an even share of the ring', async () => {
    const members = await nodes[1]!.client.listNodes()
    assert.equal(members.length, 3)
    for (const m of members) {
      const spec = specs.find((s) => s.id === m.id)!
      assert.equal(m.address, `127.0.0.1:${spec.port}`)
      assert.equal(m.peerAddress, `127.0.0.1:${spec.peerPort}`)
      assert.equal(m.lifecycle, 'active')
      assert.ok(Math.abs(m.ringShare - 1 / 3) < 0.02, `share of ${m.id} is ${m.ringShare}`)
    }
    assert.equal(members.filter((m) => m.leader).length, 1, 'exactly one member leads')
    const metrics = await (await fetch(nodes[0]!.metricsUrl!)).text()
    assert.match(metrics, /^v3_cluster_members 3$/m)
    assert.match(metrics, /^v3_cluster_healthy_members 3$/m)
    assert.match(metrics, /^v3_consul_reachable 1$/m)
    assert.match(metrics, /^v3_cluster_ring_version [1-9]\d*$/m)
    const status = await runV3(['cluster', 'status', '--server', nodes[2]!.address])
    assert.equal(status.code, 0, status.stderr)
    const lines = status.stdout.trim().split('\n')
    assert.match(lines[0]!, /^node\s+address\s+peer\s+health\s+state\s+ring share\s+leader\s+hints here\s+move$/)
    for (const [i, spec] of specs.entries()) {
      assert.match(
        lines[i + 1]!,
        new RegExp(
          `^${spec.id}\\s+127\\.0\\.0\\.1:${spec.port}\\s+127\\.0\\.0\\.1:${spec.peerPort}\\s+healthy\\s+active\\s+3\\d\\.\\d%`,
        ),
      )
    }
  })

  it('answers every query kind through another node exactly as one node holding the same data', async () => {
    await checkAnswers(nodes[0]!, nodes[1]!, single)
  })

  it('stores on each node only the series the ring gives it', async () => {
    const stats = await nodes[2]!.client.stats()
    const perNode = new Map(stats.nodes.map((n) => [n.id, n.stats.series]))
    const owned = new Map<string, number>()
    for (const s of await single.client.listSeries({ metric: 'cpu' })) {
      const owners = await nodes[2]!.client.locate(s.metric, s.tags)
      assert.equal(owners.length, 1)
      owned.set(owners[0]!.id, (owned.get(owners[0]!.id) ?? 0) + 1)
    }
    for (const s of await single.client.listSeries({ metric: 'mem' })) {
      const owners = await nodes[2]!.client.locate(s.metric, s.tags)
      owned.set(owners[0]!.id, (owned.get(owners[0]!.id) ?? 0) + 1)
    }
    assert.deepEqual([...perNode].sort(), [...owned].sort(), 'series per node equal what Locate assigns')
    assert.equal(stats.series, 40)
    // The totals add up the members' figures, their caches' included (the queries above used them).
    for (const cache of ['results', 'decodedBlocks', 'selectors'] as const) {
      for (const side of ['hits', 'misses'] as const) {
        const sum = stats.nodes.reduce((a, n) => a + n.stats.caches[cache][side], 0)
        assert.equal(stats.caches[cache][side], sum, `${cache}.${side}`)
      }
    }
    assert.ok(stats.caches.selectors.hits + stats.caches.selectors.misses > 0, 'the selector cache was used')
    // A node's metrics are its own figures, and its peer channels count what it forwarded.
    const metrics = await (await fetch(nodes[0]!.metricsUrl!)).text()
    assert.match(metrics, new RegExp(`^v3_series ${perNode.get('n1')}$`, 'm'))
    assert.match(metrics, /^v3_peer_requests_sent\{peer="n2"\} [1-9]\d*$/m)
    assert.match(metrics, /^v3_peer_responses\{peer="n2"\} [1-9]\d*$/m)
    for (const name of [
      'v3_peer_timeouts',
      'v3_peer_send_failures',
      'v3_peer_requests_lost',
      'v3_peer_in_flight',
      'v3_peer_queue_depth',
    ]) {
      assert.match(metrics, new RegExp(`^${name}\\{peer="n2"\\} 0$`, 'm'), name)
    }
    // n1 served the other nodes' parts of the reads through it and refused none.
    assert.match(metrics, /^v3_peer_requests_served [1-9]\d*$/m)
    for (const name of [
      'v3_peer_malformed_messages',
      'v3_peer_requests_rejected',
      'v3_peer_connections_refused',
      'v3_consul_outages',
    ]) {
      assert.match(metrics, new RegExp(`^${name} 0$`, 'm'), name)
    }
    assert.ok(
      [...owned.values()].every((n) => n > 0),
      'every node holds some series',
    )
  })

  it('stores nothing of a rejected batch on any node', async () => {
    const before = (await nodes[0]!.client.stats()).nodes.map((n) => [n.id, n.stats.pointsWritten])
    const bad: SeriesInput[] = []
    for (let h = 0; h < 12; h++) bad.push({ metric: 'fresh', tags: { host: `x${h}` }, timestamps: [T0], values: [1] })
    bad.push({ metric: 'fresh', tags: { host: 'bad' }, timestamps: [T0, T0 + 1], values: [1] })
    await assert.rejects(nodes[1]!.client.write(bad), (err: Error & { code?: number }) => {
      assert.equal(err.code, 3, err.message)
      assert.match(err.message, /series\[12\]/)
      return true
    })
    for (const node of nodes) assert.deepEqual(await node.client.listSeries({ metric: 'fresh' }), [])
    const afterwards = (await nodes[0]!.client.stats()).nodes.map((n) => [n.id, n.stats.pointsWritten])
    assert.deepEqual(afterwards, before)
  })

  it('keeps serving while Consul is paused', { timeout: 90_000 }, async (t) => {
    if (consul.child === undefined) {
      t.skip('a real Consul agent is not paused by the tests')
      return
    }
    consul.child.kill('SIGSTOP')
    try {
      const until = Date.now() + 30_000
      let round = 0
      while (Date.now() < until) {
        const node = nodes[round % 3]!
        const ts = T0 + 2 * HOUR + round * 1_000
        await node.client.write([
          { metric: 'paused', tags: { n: String(round % 5) }, timestamps: [ts], values: [round] },
        ])
        const count = await node.client.query({
          selector: { metric: 'paused' },
          startMs: T0 + 2 * HOUR,
          endMs: T0 + 3 * HOUR,
          aggregation: { func: 'count', stepMs: 0, mergeSeries: true },
        })
        assert.equal(count[0]?.values[0], round + 1)
        round++
        await new Promise((r) => setTimeout(r, 250))
      }
      assert.ok(round > 20, `only ${round} rounds in 30 s`)
    } finally {
      consul.child.kill('SIGCONT')
    }
  })

  it('gives a node restarted with the same id the same tokens', async () => {
    const sharesBefore = (await nodes[0]!.client.listNodes()).map((m) => [m.id, m.ringShare]).sort()
    const refs = await single.client.listSeries({ metric: 'cpu' })
    const ownersBefore = await Promise.all(
      refs.map(async (r) => (await nodes[0]!.client.locate(r.metric, r.tags))[0]!.id),
    )
    const stopped = await nodes[2]!.stop()
    assert.equal(stopped.code, 0)
    nodes[2] = await startNode(consul, { ...specs[2]!, dataDir: dataDirs[2] }, name, ['--replication-factor', '1'])
    await waitForMembers(nodes, ['n1', 'n2', 'n3'])
    const sharesAfter = (await nodes[2]!.client.listNodes()).map((m) => [m.id, m.ringShare]).sort()
    assert.deepEqual(sharesAfter, sharesBefore)
    const ownersAfter = await Promise.all(
      refs.map(async (r) => (await nodes[2]!.client.locate(r.metric, r.tags))[0]!.id),
    )
    assert.deepEqual(ownersAfter, ownersBefore)
    // Its data is still there and still answered.
    assertSameAnswer(
      await nodes[2]!.client.query({ selector: { metric: 'cpu' }, startMs: T0, endMs: T0 + HOUR }),
      await single.client.query({ selector: { metric: 'cpu' }, startMs: T0, endMs: T0 + HOUR }),
      'after the restart',
    )
  })

  it('fails writes and queries that need a dead owner with UNAVAILABLE naming it', async () => {
    await nodes[2]!.kill()
    const refs = await single.client.listSeries({ metric: 'cpu' })
    let victim: (typeof refs)[number] | undefined
    for (const r of refs) if ((await nodes[0]!.client.locate(r.metric, r.tags))[0]!.id === 'n3') victim = r
    assert.ok(victim !== undefined, 'n3 owns some series')
    const unavailable = (err: Error & { code?: number }) => {
      assert.equal(err.code, 14, err.message)
      assert.match(err.message, /n3/)
      return true
    }
    await assert.rejects(
      nodes[0]!.client.write([{ metric: victim.metric, tags: victim.tags, timestamps: [T0 + 5 * HOUR], values: [1] }]),
      unavailable,
    )
    await assert.rejects(
      nodes[1]!.client.query({ selector: { metric: 'cpu' }, startMs: T0, endMs: T0 + HOUR }),
      unavailable,
    )
  })
})

describe('a cluster of three nodes, three copies of each series, with a peer key', { timeout: 180_000 }, () => {
  let consul: ConsulProcess
  let single: ServerProcess
  let keyDir: string | undefined
  const nodes: ServerProcess[] = []
  const specs: NodeSpec[] = []

  before(async () => {
    consul = await startConsul()
    single = await startServerProcess()
    // Every peer message of this cluster is encrypted and authenticated with the cluster's key.
    keyDir = await makeDataDir()
    const keyFile = join(keyDir, 'peer.key')
    // Readable by others (0644): each node warns of that, and runs.
    await writeFile(keyFile, `${newPeerKey().secretKey}\n`, { mode: 0o644 })
    for (const id of ['a', 'b', 'c']) {
      const { spec, node } = await startFreshNode(consul, id, `v3-r3-${process.pid}`, ['--peer-key', keyFile])
      nodes.push(node)
      specs.push(spec)
    }
    await waitForMembers(nodes, ['a', 'b', 'c'])
  })

  after(async () => {
    for (const node of nodes) await node.kill()
    await single?.kill()
    await consul?.stop()
    for (const dir of [...nodes.map((n) => n.dataDir), single?.dataDir, keyDir]) {
      if (dir !== undefined) await removeDataDir(dir)
    }
  })

  it('speaks CurveZMQ on every peer port, and warns of a key file others can read', async () => {
    for (const spec of specs) assert.equal(await speaksCurve(`127.0.0.1:${spec.peerPort}`), true, spec.id)
    for (const node of nodes) assert.match(node.stderr(), /the peer key file \(--peer-key\) can be read by other users/)
  })

  it('counts each series once: aggregates equal the single node answer, not three times it', async () => {
    await checkAnswers(nodes[2]!, nodes[0]!, single)
    const stats = await nodes[1]!.client.stats()
    assert.equal(stats.nodes.length, 3)
    for (const n of stats.nodes) assert.equal(n.stats.series, 40, `series on ${n.id}`)
    const owners = await waitFor('three owners', async () => {
      const list = await nodes[1]!.client.locate('cpu', { host: 'h01', region: 'eu-west' })
      return list.length === 3 ? list : undefined
    })
    assert.deepEqual(owners.map((o) => o.id).sort(), ['a', 'b', 'c'])
  })

  it('takes line protocol and remote write on one node and answers PromQL on another, each point once', async () => {
    const http = (n: ServerProcess): string => {
      assert.ok(n.metricsUrl, 'the node serves HTTP')
      return n.metricsUrl.replace(/\/metrics$/, '')
    }
    const at = T0 + 2 * HOUR
    const lines = ['h1', 'h2', 'h3'].flatMap((host, i) => [
      `lp_cpu,host=${host} usage=${i + 1} ${at - 10_000}`,
      `lp_cpu,host=${host} usage=${10 * (i + 1)} ${at}`,
    ])
    const lp = await fetch(`${http(nodes[0]!)}/write?precision=ms`, { method: 'POST', body: lines.join('\n') })
    assert.equal(lp.status, 204, await lp.text())
    const rw = await fetch(`${http(nodes[1]!)}/api/v1/write`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-protobuf', 'content-encoding': 'snappy' },
      body: writeRequest([
        {
          labels: [
            ['__name__', 'rw_up'],
            ['job', 'j'],
          ],
          samples: [
            [1, at - 20_000],
            [1, at - 10_000],
            ['stale', at - 5_000],
          ],
        },
      ]),
    })
    assert.equal(rw.status, 204, await rw.text())
    const query = async (q: string, time: number): Promise<unknown> => {
      const params = new URLSearchParams({ query: q, time: String(time / 1000) })
      const res = await fetch(`${http(nodes[2]!)}/api/v1/query?${params}`)
      const body = (await res.json()) as { status: string; data: { result: unknown } }
      assert.equal(body.status, 'success', JSON.stringify(body))
      return body.data.result
    }
    // Three copies of each series, counted once: 10 + 20 + 30.
    assert.deepEqual(await query('sum(lp_cpu_usage)', at), [{ metric: {}, value: [at / 1000, '60'] }])
    assert.deepEqual(await query('count_over_time(lp_cpu_usage{host="h2"}[1m])', at), [
      { metric: { host: 'h2' }, value: [at / 1000, '2'] },
    ])
    assert.deepEqual(await query('rw_up', at - 8_000), [
      { metric: { __name__: 'rw_up', job: 'j' }, value: [(at - 8_000) / 1000, '1'] },
    ])
    // The staleness marker, stored on the owners bit for bit, ends the series.
    assert.deepEqual(await query('rw_up', at), [])
  })
})

describe('a node started while Consul is down', { timeout: 120_000 }, () => {
  it('waits for Consul, then joins and serves', async (t) => {
    if (process.env.CONSUL_HTTP_ADDR) {
      t.skip('the tests do not stop a real Consul agent')
      return
    }
    const port = await freePort()
    const spec = await nodeSpec('late')
    // The node cannot register yet: it retries, and prints its listening line only once joined.
    const starting = startNode({ url: `http://127.0.0.1:${port}` }, spec, `v3-late-${process.pid}`)
    starting.catch(() => {}) // Awaited below; a failure to start is reported there.
    let node: ServerProcess | undefined
    // Meanwhile its gRPC port answers, with UNAVAILABLE: it has not joined.
    const early = new V3Client(`127.0.0.1:${spec.port}`)
    try {
      await waitFor('the waiting node to answer UNAVAILABLE', async () => {
        try {
          await early.latest({ metric: 'late' })
          throw new Error('a node that has not joined answered')
        } catch (err) {
          const e = err as Error & { code?: number }
          return e.code === 14 && /not joined the cluster/.test(e.message) ? true : undefined
        }
      })
    } finally {
      early.close()
    }
    const consul = await startConsul(port)
    try {
      node = await starting
      const members = await waitForMembers([node], ['late'])
      assert.equal(members[0]?.address, `127.0.0.1:${spec.port}`)
      await node.client.write([{ metric: 'late', tags: { a: 'b' }, timestamps: [T0], values: [1] }])
      assert.equal((await node.client.latest({ metric: 'late' }))[0]?.values[0], 1)
    } finally {
      await node?.kill()
      await consul.stop()
      if (node !== undefined) await removeDataDir(node.dataDir)
    }
  })
})

/** `v3 serve` of a cluster node run as a command whose refusal a test reads (exit code, stderr). */
function refusedServeArgs(
  consul: Pick<ConsulProcess, 'url'>,
  name: string,
  spec: NodeSpec,
  dataDir: string,
  extra: readonly string[] = [],
): string[] {
  return ['serve', ...clusterNodeArgs(consul, spec, name, extra), '--http-listen', 'off', '--data', dataDir]
}

describe('a node started with the id of a live node', { timeout: 120_000 }, () => {
  it('refuses to start, exit 2 naming --node-id, and leaves the live node in its place', async () => {
    const consul = await startConsul()
    const name = `v3-dup-${process.pid}`
    const { spec, node } = await startFreshNode(consul, 'n1', name)
    const dataDir = await makeDataDir()
    try {
      await waitForMembers([node], ['n1'])
      await node.client.write([{ metric: 'dup', tags: { a: 'b' }, timestamps: [T0], values: [1] }])
      const other = await nodeSpec('n1')
      const r = await runV3(refusedServeArgs(consul, name, other, dataDir))
      assert.equal(r.code, 2, r.stderr)
      assert.match(
        r.stderr,
        new RegExp(`^v3: node id n1 is in use: the node at 127\\.0\\.0\\.1:${spec.port} has it`, 'm'),
      )
      assert.match(r.stderr, /another --node-id/)
      const members = await waitForMembers([node], ['n1'])
      assert.equal(members[0]?.address, `127.0.0.1:${spec.port}`)
      assert.equal((await node.client.latest({ metric: 'dup' }))[0]?.values[0], 1)
    } finally {
      await node.kill()
      await consul.stop()
      await removeDataDir(node.dataDir)
      await removeDataDir(dataDir)
    }
  })
})

describe('a ring member started on a new data folder', { timeout: 120_000 }, () => {
  it('refuses to start, exit 2, rather than answer its ranges empty; on its own folder it starts', async () => {
    const consul = await startConsul()
    const name = `v3-newdir-${process.pid}`
    const extra = ['--replication-factor', '2']
    const first = await startFreshNode(consul, 'n1', name, extra)
    let second = await startFreshNode(consul, 'n2', name, extra)
    const emptyDir = await makeDataDir()
    try {
      await waitForMembers([first.node, second.node], ['n1', 'n2'])
      await first.node.client.write([{ metric: 'newdir', tags: { a: 'b' }, timestamps: [T0], values: [1] }])
      // An active member records itself in its folder.
      await waitFor('n2 to claim its folder', async () =>
        existsSync(join(second.node.dataDir, 'cluster-node.json')) ? true : undefined,
      )
      await second.node.stop()
      const r = await runV3(refusedServeArgs(consul, name, second.spec, `${emptyDir}/n2`, extra))
      assert.equal(r.code, 2, r.stderr)
      assert.match(r.stderr, /^v3: node n2 is a member of the ring, but its data folder is new/m)
      assert.ok(
        (await first.node.client.listNodes()).some((m) => m.id === 'n2'),
        'n2 is still a member',
      )
      assert.ok(!existsSync(join(emptyDir, 'n2', 'cluster-node.json')), 'the refused start claimed no folder')
      // n2's folder holds n2's ranges: started as another node, it is refused.
      const swapped = await runV3(refusedServeArgs(consul, name, await nodeSpec('n3'), second.node.dataDir, extra))
      assert.equal(swapped.code, 2, swapped.stderr)
      assert.match(
        swapped.stderr,
        new RegExp(
          `^v3: the data folder \\S+ belongs to node n2 of cluster ${name}, not to node n3 of cluster ${name}`,
          'm',
        ),
      )
      assert.ok(!(await first.node.client.listNodes()).some((m) => m.id === 'n3'), 'n3 did not join')
      second = {
        spec: second.spec,
        node: await startNode(consul, { ...second.spec, dataDir: second.node.dataDir }, name, extra),
      }
      await waitForMembers([first.node, second.node], ['n1', 'n2'])
      assert.equal((await second.node.client.latest({ metric: 'newdir' }, { consistency: 'all' }))[0]?.values[0], 1)
    } finally {
      await first.node.kill()
      await second.node.kill()
      await consul.stop()
      for (const dir of [first.node.dataDir, second.node.dataDir, emptyDir]) await removeDataDir(dir)
    }
  })
})
