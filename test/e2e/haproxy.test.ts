// deploy/haproxy.cfg as it ships, in front of three `v3 serve --cluster` nodes: a client that knows
// only HAProxy's address writes and reads while one node is killed with SIGKILL and restarted on
// its data folder, and reads back every acknowledged point at QUORUM. The only failure allowed is a
// call the killed node had begun to answer (HAProxy cannot replay it): retried once, at most 3.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { status } from '@grpc/grpc-js'
import { type SeriesInput, V3Client, V3ClientError } from '../../src/client/index.js'
import { freePort } from '../fixtures/net.js'
import { waitFor as poll } from '../fixtures/wait.js'
import {
  type ConsulProcess,
  type NodeSpec,
  nodeSpec,
  startConsul,
  startNode,
  waitFor,
  waitForMembers,
} from './cluster-kit.js'
import { makeTestCertificates, opensslMissing, type TestCertificates } from './security-certs.js'
import { removeDataDir, type ServerProcess } from './server-process.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
const CONFIG = join(ROOT, 'deploy', 'haproxy.cfg')
const HAPROXY = '/usr/sbin/haproxy'
const T0 = Date.UTC(2026, 3, 1)
const SERIES = 10
const WRITERS = 2

function haproxyMissing(): string | false {
  return existsSync(HAPROXY) ? false : `needs ${HAPROXY}: apt-get update && apt-get install -y haproxy`
}

interface Haproxy {
  readonly address: string
  readonly statsUrl: string
  /** The TLS address, when the test certificates could be made. */
  readonly tlsAddress: string | undefined
  readonly child: ChildProcess
  /** Everything HAProxy logged so far (stdout and stderr). */
  output(): string
  stop(): Promise<void>
}

/** One row of HAProxy's CSV statistics for a server of the v3_nodes backend. */
interface ServerStat {
  readonly status: string
  /** Calls sent to the server so far. */
  readonly sessions: number
}

/**
 * Starts HAProxy on deploy/haproxy.cfg with the node addresses in the environment. A port taken
 * between freePort and HAProxy's bind makes it exit; it is started again on new ports.
 */
async function startHaproxy(
  specs: readonly NodeSpec[],
  httpPorts: readonly number[],
  tlsPem: string | undefined,
): Promise<Haproxy> {
  for (let attempt = 1; ; attempt++) {
    const [port, statsPort, tlsPort] = [await freePort(), await freePort(), await freePort()]
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      V3_HAPROXY_BIND: `127.0.0.1:${port}`,
      V3_HAPROXY_STATS: `127.0.0.1:${statsPort}`,
    }
    specs.forEach((spec, i) => {
      env[`V3_NODE${i + 1}`] = `127.0.0.1:${spec.port}`
      env[`V3_NODE${i + 1}_CHECK_PORT`] = String(httpPorts[i])
    })
    if (tlsPem !== undefined) {
      env.V3_HAPROXY_TLS_BIND = `127.0.0.1:${tlsPort}`
      env.V3_HAPROXY_TLS_CRT = tlsPem
    }
    const child = spawn(HAPROXY, ['-f', CONFIG, '-db'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    const collect = (chunk: string): void => {
      output += chunk
    }
    child.stdout.setEncoding('utf8').on('data', collect)
    child.stderr.setEncoding('utf8').on('data', collect)
    const exited = once(child, 'exit')
    const haproxy: Haproxy = {
      address: `127.0.0.1:${port}`,
      statsUrl: `http://127.0.0.1:${statsPort}/stats;csv`,
      tlsAddress: tlsPem === undefined ? undefined : `127.0.0.1:${tlsPort}`,
      child,
      output: () => output,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return
        child.kill('SIGKILL')
        await exited
      },
    }
    const started = await poll(
      'HAProxy to answer on its statistics page',
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) return 'exited'
        try {
          return (await fetch(haproxy.statsUrl)).ok ? 'up' : undefined
        } catch {
          return undefined
        }
      },
      20_000,
      50,
    )
    if (started === 'up') return haproxy
    await haproxy.stop()
    if (attempt >= 3 || !/cannot bind|Address already in use/i.test(output)) {
      throw new Error(`haproxy did not start:\n${output}`)
    }
  }
}

/** The servers of the v3_nodes backend by name (n1, n2, n3), from the CSV statistics. */
async function serverStats(haproxy: Haproxy): Promise<Map<string, ServerStat>> {
  const [header, ...rows] = (await (await fetch(haproxy.statsUrl)).text()).trim().split('\n')
  const columns = (header ?? '').replace(/^# /, '').split(',')
  const at = (row: string[], name: string): string => row[columns.indexOf(name)] ?? ''
  const servers = new Map<string, ServerStat>()
  for (const line of rows) {
    const row = line.split(',')
    if (at(row, 'pxname') !== 'v3_nodes' || /^(FRONTEND|BACKEND)$/.test(at(row, 'svname'))) continue
    servers.set(at(row, 'svname'), { status: at(row, 'status'), sessions: Number(at(row, 'stot')) })
  }
  return servers
}

async function serverStat(haproxy: Haproxy, name: string): Promise<ServerStat> {
  const stat = (await serverStats(haproxy)).get(name)
  assert.ok(stat, `HAProxy lists server ${name}`)
  return stat
}

/**
 * Counts HAProxy's log lines of abnormal calls (option dontlog-normal logs only those): by
 * termination state (`----` ended normally, `SD--` the server connection died while answering,
 * ...) and how many went to another node after a failure (the retries field `+N`).
 */
function summarizeLog(output: string): string {
  const states = new Map<string, number>()
  let redispatched = 0
  const line = / v3_grpc v3_nodes\/\S+ \S+ -?\d+ \d+ \S+ \S+ (\S{4}) \d+\/\d+\/\d+\/\d+\/(\+?)\d+ /
  for (const match of output.matchAll(new RegExp(line, 'g'))) {
    states.set(match[1]!, (states.get(match[1]!) ?? 0) + 1)
    if (match[2] === '+') redispatched++
  }
  const byState = [...states].map(([state, n]) => `${state} ${n}`).join(', ')
  return `${redispatched} redispatched to another node; termination states: ${byState || 'none'}`
}

/** One point at `ts` for each of the test's series, value `ts`. */
function batch(ts: number): SeriesInput[] {
  return Array.from({ length: SERIES }, (_, i) => ({
    metric: 'lb',
    tags: { s: String(i).padStart(2, '0') },
    timestamps: [ts],
    values: [ts],
  }))
}

describe('HAProxy in front of three nodes', { skip: haproxyMissing(), timeout: 120_000 }, () => {
  let consul: ConsulProcess | undefined
  const specs: NodeSpec[] = []
  const httpPorts: number[] = []
  const nodes: ServerProcess[] = []
  let haproxy: Haproxy | undefined
  let certs: TestCertificates | undefined
  const clients: V3Client[] = []
  const name = `v3-haproxy-${process.pid}`
  const args = ['--replication-factor', '3', '--read-timeout', '300ms']

  /** Starts node i on its spec and HTTP port: the ports HAProxy knows. */
  function start(i: number, dataDir?: string): Promise<ServerProcess> {
    return startNode(consul!, { ...specs[i]!, dataDir }, name, [...args, '--http-listen', `127.0.0.1:${httpPorts[i]}`])
  }

  before(async () => {
    consul = await startConsul()
    for (const [i, id] of ['a', 'b', 'c'].entries()) {
      // Fresh ports on each attempt: another process may take one before the node binds it.
      for (let attempt = 1; ; attempt++) {
        specs[i] = await nodeSpec(id)
        httpPorts[i] = await freePort()
        try {
          nodes[i] = await start(i)
          break
        } catch (err) {
          if (attempt >= 3 || !/cannot listen/.test(String(err))) throw err
        }
      }
    }
    await waitForMembers(nodes, ['a', 'b', 'c'])
    let tlsPem: string | undefined
    if (opensslMissing() === false) {
      certs = await makeTestCertificates()
      tlsPem = join(certs.dir, 'haproxy.pem')
      await writeFile(tlsPem, (await readFile(certs.serverCert, 'utf8')) + (await readFile(certs.serverKey, 'utf8')))
    }
    haproxy = await startHaproxy(specs, httpPorts, tlsPem)
  })

  after(async () => {
    for (const client of clients) client.close()
    await haproxy?.stop()
    for (const node of nodes) await node.kill()
    await consul?.stop()
    for (const node of nodes) await removeDataDir(node.dataDir)
    await certs?.remove()
  })

  it('keeps writing and reading through HAProxy alone while a node is killed and restarted', async (t) => {
    const lb = haproxy!
    const client = new V3Client(lb.address, { defaultTimeoutMs: 10_000 })
    clients.push(client)
    await waitFor('every node UP in HAProxy', async () =>
      [...(await serverStats(lb)).values()].every((s) => s.status === 'UP') ? true : undefined,
    )
    assert.equal((await client.listNodes()).length, 3, 'ListNodes through HAProxy')

    const acked: number[] = []
    const failures: string[] = []
    let reads = 0
    let stop = false
    // A node killed after it began to answer leaves a call that HAProxy cannot replay: part of the
    // answer has gone to the client, which sees the stream end without a gRPC status (HAProxy logs
    // it with SD, the server connection died during the data transfer). Only that failure is tried
    // once more, and each is counted; any other failure, or a second one, fails the test.
    const cutMidAnswer: string[] = []
    const retryCutAnswer = async <T>(call: () => Promise<T>, what: string): Promise<T> => {
      try {
        return await call()
      } catch (err) {
        if (
          !(err instanceof V3ClientError && err.code === status.INTERNAL && /without gRPC status/.test(err.message))
        ) {
          throw err
        }
        cutMidAnswer.push(`${what}: ${err.message}`)
        return call()
      }
    }
    const writer = async (w: number): Promise<void> => {
      for (let seq = 0; !stop; seq++) {
        const ts = T0 + seq * WRITERS + w
        try {
          await retryCutAnswer(() => client.write(batch(ts), { consistency: 'quorum' }), `write ${ts}`)
          acked.push(ts)
        } catch (err) {
          failures.push(`write ${ts}: ${String(err)}`)
        }
      }
    }
    const reader = async (): Promise<void> => {
      while (!stop) {
        try {
          await retryCutAnswer(
            () => client.query({ selector: { metric: 'lb' }, startMs: T0, endMs: T0 + 86_400_000 }),
            'query',
          )
          reads++
        } catch (err) {
          failures.push(`query: ${String(err)}`)
        }
      }
    }
    const load = Promise.all([...Array.from({ length: WRITERS }, (_, w) => writer(w)), reader()])
    const ackedAtLeast = (n: number): Promise<true> =>
      waitFor(`${n} acknowledged writes`, async () => (acked.length >= n ? true : undefined), 20_000)

    try {
      await ackedAtLeast(50)
      const c = nodes[2]!
      await c.kill()
      const killedAt = acked.length
      await waitFor('HAProxy to mark n3 DOWN', async () =>
        (await serverStat(lb, 'n3')).status.startsWith('DOWN') ? true : undefined,
      )
      const downAt = acked.length
      await ackedAtLeast(downAt + 50)
      nodes[2] = await start(2, c.dataDir)
      await waitFor('HAProxy to mark n3 UP', async () =>
        (await serverStat(lb, 'n3')).status === 'UP' ? true : undefined,
      )
      // The restarted node takes calls through HAProxy again.
      const sessions = (await serverStat(lb, 'n3')).sessions
      await waitFor('calls to reach the restarted n3', async () =>
        (await serverStat(lb, 'n3')).sessions >= sessions + 20 ? true : undefined,
      )
      await ackedAtLeast(acked.length + 50)
      t.diagnostic(`acknowledged: ${killedAt} before the kill, ${downAt - killedAt} before n3 was DOWN`)
    } finally {
      stop = true
      await load
    }
    t.diagnostic(`writes acknowledged: ${acked.length}, queries answered: ${reads}, failed calls: ${failures.length}`)
    t.diagnostic(`HAProxy's log of abnormal calls: ${summarizeLog(lb.output())}`)
    t.diagnostic(`calls cut mid-answer by the kill and tried again: ${cutMidAnswer.length}`)
    for (const line of cutMidAnswer) t.diagnostic(line)
    assert.deepEqual(failures, [], 'no call through HAProxy failed')
    // At most the calls in flight on the killed node: two writers and a reader.
    assert.ok(cutMidAnswer.length <= WRITERS + 1, `${cutMidAnswer.length} calls cut mid-answer`)

    // Every acknowledged point, read back at QUORUM through HAProxy.
    const series = await client.query(
      { selector: { metric: 'lb' }, startMs: T0, endMs: T0 + 86_400_000 },
      { consistency: 'quorum' },
    )
    assert.equal(series.length, SERIES)
    const want = [...acked].sort((x, y) => x - y)
    for (const s of series) assert.deepEqual([...s.timestamps], want, `series ${JSON.stringify(s.tags)}`)
  })

  it('serves gRPC over TLS on the HAProxy TLS bind', { skip: opensslMissing() }, async () => {
    const client = new V3Client(haproxy!.tlsAddress!, { tls: { caFile: certs!.caFile }, defaultTimeoutMs: 10_000 })
    clients.push(client)
    await client.write(batch(T0 - 1_000), { consistency: 'quorum' })
    const latest = await client.latest({ metric: 'lb' }, { consistency: 'quorum' })
    assert.equal(latest.length, SERIES)
    assert.equal((await client.listNodes()).length, 3)
  })
})
