/**
 * Helpers of the cluster tests: a Consul emulator process (or the real agent named by
 * CONSUL_HTTP_ADDR), free loopback ports, and `v3 serve --cluster` nodes on them. Every process a
 * test starts, the test stops.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { NodeInfo } from '../../src/client/index.js'
import { freePort } from '../fixtures/net.js'
import { waitFor as poll } from '../fixtures/wait.js'
import { type ServerProcess, startServerProcess } from './server-process.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

export interface ConsulProcess {
  readonly url: string
  /** The emulator's process; undefined against a real agent, which the tests must not pause. */
  readonly child: ChildProcess | undefined
  stop(): Promise<void>
}

/** The real agent at CONSUL_HTTP_ADDR when set, else the emulator in a process of its own (on `port` if given). */
export async function startConsul(port?: number): Promise<ConsulProcess> {
  const real = process.env.CONSUL_HTTP_ADDR
  if (real !== undefined && real !== '') {
    return { url: /^https?:\/\//.test(real) ? real : `http://${real}`, child: undefined, stop: async () => {} }
  }
  const portArgs = port === undefined ? [] : ['--port', String(port)]
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'test', 'fixtures', 'consul-emulator.ts'), ...portArgs],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  )
  let out = ''
  child.stdout?.setEncoding('utf8')
  const url = await new Promise<string>((resolveUrl, reject) => {
    child.stdout?.on('data', (chunk: string) => {
      out += chunk
      const match = /^consul emulator on (\S+)$/m.exec(out)
      if (match?.[1] !== undefined) resolveUrl(match[1])
    })
    child.once('exit', (code) => reject(new Error(`the Consul emulator exited with ${code} before listening`)))
  })
  return {
    url,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGCONT')
      child.kill('SIGKILL')
      await once(child, 'exit')
    },
  }
}

export interface NodeSpec {
  readonly id: string
  readonly port: number
  readonly peerPort: number
  readonly dataDir?: string
}

export async function nodeSpec(id: string): Promise<NodeSpec> {
  return { id, port: await freePort(), peerPort: await freePort() }
}

/** The `v3 serve` flags of a cluster node of the tests, after `serve` and before the data folder. */
export function clusterNodeArgs(
  consul: Pick<ConsulProcess, 'url'>,
  spec: NodeSpec,
  clusterName: string,
  extra: readonly string[] = [],
): string[] {
  return [
    '--cluster',
    '--consul',
    consul.url,
    '--cluster-name',
    clusterName,
    '--node-id',
    spec.id,
    '--listen',
    `127.0.0.1:${spec.port}`,
    '--peer-listen',
    `127.0.0.1:${spec.peerPort}`,
    '--peer-timeout',
    '3s',
    '--log-level',
    'warn',
    ...extra,
  ]
}

/** Starts one cluster node; it prints its listening line once it has joined the ring. */
export function startNode(
  consul: Pick<ConsulProcess, 'url'>,
  spec: NodeSpec,
  clusterName: string,
  extra: readonly string[] = [],
): Promise<ServerProcess> {
  return startServerProcess({ dataDir: spec.dataDir, args: clusterNodeArgs(consul, spec, clusterName, extra) })
}

/**
 * Starts a node on ports picked now. Another process can take a port between freePort and the
 * node's bind (any outgoing connection on the machine draws from the same range), so a node that
 * cannot listen is started again on new ports, up to three times.
 */
export async function startFreshNode(
  consul: Pick<ConsulProcess, 'url'>,
  id: string,
  clusterName: string,
  extra: readonly string[] = [],
): Promise<{ readonly spec: NodeSpec; readonly node: ServerProcess }> {
  for (let attempt = 1; ; attempt++) {
    const spec = await nodeSpec(id)
    try {
      return { spec, node: await startNode(consul, spec, clusterName, extra) }
    } catch (err) {
      if (attempt >= 3 || !/cannot listen/.test(String(err))) throw err
    }
  }
}

/**
 * Waits until a condition holds, polling every 100 ms: a node that is starting or stopping may
 * fail a call, which counts as not yet. Fails with the last such failure after the timeout.
 */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  let last: unknown
  const attempt = async (): Promise<T | undefined> => {
    try {
      return await probe()
    } catch (err) {
      last = err
      return undefined
    }
  }
  try {
    return await poll(what, attempt, timeoutMs, 100)
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${String(last)}`)
  }
}

/**
 * Waits until no membership change is under way on any of the nodes (the leader has finished its
 * last one, old owners' drops included), as their metrics say.
 */
export async function waitForSettled(nodes: readonly ServerProcess[]): Promise<void> {
  for (const node of nodes) {
    await waitFor(`no change under way on ${node.address}`, async () => {
      const metrics = await (await fetch(node.metricsUrl!)).text()
      return /^v3_cluster_change_in_progress 0$/m.test(metrics) ? true : undefined
    })
  }
}

/** Waits until every node lists exactly these members, all healthy and active (no change under way). */
export async function waitForMembers(nodes: readonly ServerProcess[], ids: readonly string[]): Promise<NodeInfo[]> {
  const want = [...ids].sort().join(',')
  let listed: NodeInfo[] = []
  for (const node of nodes) {
    listed = await waitFor(`${want} on ${node.address}`, async () => {
      const members = await node.client.listNodes()
      return members
        .map((m) => m.id)
        .sort()
        .join(',') === want && members.every((m) => m.state === 'healthy' && m.lifecycle === 'active')
        ? members
        : undefined
    })
  }
  return listed
}
