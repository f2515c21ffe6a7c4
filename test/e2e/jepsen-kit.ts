/**
 * A set test in the Jepsen style against real processes: three `v3 serve --cluster` nodes with
 * three copies of each series, several writers adding unique points at QUORUM through different
 * nodes, and a nemesis that kills one node with SIGKILL (then restarts it on its data folder) and
 * stops another with SIGSTOP for 10 s (then continues it). Timing and victims come from a seeded
 * PRNG, so a failing seed replays the same schedule (the machine's timing still varies).
 *
 * A write is acknowledged only when the call succeeded; a write that failed or timed out is
 * unknown: it may or may not be stored, and nothing is required of it. Afterwards:
 * - every acknowledged point is read back at QUORUM through each node;
 * - once every node lists no pending hints and `v3 cluster repair` has run, each node in turn
 *   answers a read at ONE with every acknowledged point while the other two are stopped with
 *   SIGSTOP, so that only its own copy can answer.
 */
import { runV3 } from './cli-run.js'
import { type ConsulProcess, type NodeSpec, startConsul, startFreshNode, startNode, waitFor } from './cluster-kit.js'
import { Rng } from './fuzz-kit.js'
import { removeDataDir, type ServerProcess } from './server-process.js'

const T0 = Date.UTC(2026, 2, 1)
const METRIC = 'jepsen_set'
const IDS = ['a', 'b', 'c'] as const
/** The client deadline of one write: above the nodes' peer timeout (3 s), so a write that waits for a stopped owner fails with the node's answer. */
const WRITE_TIMEOUT_MS = 6_000
/** A write that failed is tried again through the next node this many times before it counts as unknown. */
const WRITE_ATTEMPTS = 3
const STOP_MS = 10_000
/** Every wait on a condition: generous, for a 2-core machine that other tests share. */
const WAIT_MS = 90_000

export interface JepsenOptions {
  readonly seed: number
  /** Concurrent writers, each starting on its own node. Default 4. */
  readonly writers?: number
  /**
   * Writing goes on for at least this long, and until both faults are over plus a short tail, in
   * ms. Default 0: just the faults.
   */
  readonly minWriteMs?: number
  /** Progress lines, e.g. the test's diagnostics. */
  readonly log?: (line: string) => void
}

export interface JepsenReport {
  readonly seed: number
  /** Points whose write was acknowledged. */
  readonly acked: number
  /** Points whose write failed or timed out on every attempt. */
  readonly unknown: number
  /** Unknown points that turned out to be stored (read at QUORUM). */
  readonly unknownStored: number
  /** Acknowledged points read back at QUORUM, through each node. */
  readonly foundQuorum: Readonly<Record<string, number>>
  /** Acknowledged points each node answers at ONE with the other two stopped. */
  readonly foundAlone: Readonly<Record<string, number>>
  /** Acknowledged points missing from a read at QUORUM. */
  readonly lostQuorum: number
  /** Acknowledged points missing from a node's own copy, read at ONE with the other two stopped. */
  readonly lostAlone: number
  /**
   * Points `v3 cluster repair` sent between the nodes after the hints were delivered: what hints
   * alone left missing (a coordinator killed before it stored a hint, for one).
   */
  readonly repairPointsSent: number
  readonly faults: readonly string[]
  /** Wall time of the whole run, in ms. */
  readonly durationMs: number
  /**
   * The first points missing from each read, with the node that acknowledged each and when; empty
   * when none is lost.
   */
  readonly missingQuorum: readonly string[]
  readonly missingAlone: readonly string[]
}

/** The fault schedule, drawn from the seed before anything starts. */
interface Schedule {
  readonly killed: number
  readonly killAtMs: number
  readonly killForMs: number
  readonly stopped: number
  readonly stopAtMs: number
}

function drawSchedule(rng: Rng): Schedule {
  const killed = rng.int(3)
  const stopped = (killed + 1 + rng.int(2)) % 3
  return {
    killed,
    killAtMs: 1_500 + rng.int(4_000),
    killForMs: 1_000 + rng.int(5_000),
    stopped,
    // The two faults may overlap; while they do, QUORUM cannot be met and writes are unknown.
    stopAtMs: 1_500 + rng.int(8_000),
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** The three processes of the run and what the nemesis did to them. */
class Cluster {
  readonly nodes: ServerProcess[] = []
  readonly specs: NodeSpec[] = []
  /** Nodes the nemesis has killed or stopped; writers avoid them. */
  readonly down = new Set<number>()
  private readonly paused = new Set<number>()
  private readonly dataDirs: string[] = []
  private consul: ConsulProcess | undefined
  private readonly name = `v3-jepsen-${process.pid}-${Date.now()}`
  private readonly args = ['--replication-factor', '3', '--read-timeout', '300ms', '--hint-window', '1h']

  async start(): Promise<void> {
    this.consul = await startConsul()
    for (const id of IDS) {
      const { spec, node } = await startFreshNode(this.consul, id, this.name, this.args)
      this.specs.push(spec)
      this.nodes.push(node)
      this.dataDirs.push(node.dataDir)
    }
    await this.allHealthy()
  }

  node(i: number): ServerProcess {
    const node = this.nodes[i]
    if (node === undefined) throw new Error(`BUG: no node ${i}`)
    return node
  }

  async kill(i: number): Promise<void> {
    this.down.add(i)
    await this.node(i).kill()
  }

  /** Starts a killed node again with its id, ports and data folder. */
  async restart(i: number): Promise<void> {
    const spec = this.specs[i]
    if (spec === undefined || this.consul === undefined) throw new Error(`BUG: no node ${i} to restart`)
    this.nodes[i] = await startNode(this.consul, { ...spec, dataDir: this.dataDirs[i] }, this.name, this.args)
    this.down.delete(i)
  }

  pause(i: number): void {
    this.down.add(i)
    this.paused.add(i)
    this.node(i).child.kill('SIGSTOP')
  }

  resume(i: number): void {
    this.node(i).child.kill('SIGCONT')
    this.paused.delete(i)
    this.down.delete(i)
  }

  /**
   * Waits until every node lists all three members healthy. A node that never does is reported with
   * how its process ended, if it did, and the end of what it wrote to stderr.
   */
  async allHealthy(): Promise<void> {
    for (const node of this.nodes) {
      try {
        await waitFor(
          `all three members healthy on ${node.address}`,
          async () => {
            const members = await node.client.listNodes({ timeoutMs: 5_000 })
            return members.length === IDS.length && members.every((m) => m.state === 'healthy') ? true : undefined
          },
          WAIT_MS,
        )
      } catch (err) {
        const { exitCode, signalCode } = node.child
        const ended = exitCode === null && signalCode === null ? 'still running' : `exited (${exitCode ?? signalCode})`
        throw new Error(
          `${(err as Error).message}; the node's process ${ended}; its stderr ends:\n${node.stderr().slice(-4000)}`,
          {
            cause: err,
          },
        )
      }
    }
  }

  /** Waits until no node keeps a hint for any member: ListNodes' hints_pending is 0 on every node. */
  async hintsDelivered(): Promise<void> {
    await waitFor(
      'every hint delivered (hints_pending 0 on every node)',
      async () => {
        for (const node of this.nodes) {
          const members = await node.client.listNodes({ timeoutMs: 5_000 })
          if (members.some((m) => m.hintsPending !== 0)) return undefined
        }
        return true
      },
      WAIT_MS,
    )
  }

  /** Stops every process, continuing stopped ones first, and removes the data folders. */
  async close(): Promise<void> {
    for (const i of this.paused) this.node(i).child.kill('SIGCONT')
    for (const node of this.nodes) await node.kill()
    await this.consul?.stop()
    for (const dir of this.dataDirs) await removeDataDir(dir)
  }
}

/** Writer w's points: one series, timestamp T0 + i, value i. */
interface WriterLog {
  readonly acked: number[]
  readonly unknown: number[]
  /** Per acknowledged point: the node that acknowledged it and when (ms into the run), to explain a loss. */
  readonly ackedBy: Map<number, string>
}

async function writer(
  cluster: Cluster,
  w: number,
  rng: Rng,
  running: () => boolean,
  logs: WriterLog,
  start: number,
): Promise<void> {
  let home = w % IDS.length
  for (let i = 0; running(); i++) {
    let acked = false
    for (let attempt = 0; attempt < WRITE_ATTEMPTS && !acked; attempt++) {
      // Through the writer's node unless the nemesis took it; the first one up after it otherwise.
      let through = home
      for (let k = 0; k < IDS.length && cluster.down.has(through); k++) through = (through + 1) % IDS.length
      try {
        await cluster
          .node(through)
          .client.write([{ metric: METRIC, tags: { w: String(w) }, timestamps: [T0 + i], values: [i] }], {
            consistency: 'quorum',
            timeoutMs: WRITE_TIMEOUT_MS,
          })
        acked = true
        logs.ackedBy.set(i, `${IDS[through]}@${Date.now() - start}ms`)
      } catch {
        home = (through + 1) % IDS.length
        // A node that is down (and not yet known to be) refuses at once: a short pause keeps the
        // retries from spinning.
        await sleep(50)
      }
    }
    ;(acked ? logs.acked : logs.unknown).push(i)
    await sleep(rng.int(15))
  }
}

/** The timestamps (minus T0) of each writer's series a node answers at `consistency`, with their values checked. */
async function readSet(node: ServerProcess, consistency: 'one' | 'quorum'): Promise<Map<number, Set<number>>> {
  const series = await node.client.query(
    { selector: { metric: METRIC }, startMs: T0, endMs: T0 + 86_400_000 },
    { consistency, timeoutMs: 30_000 },
  )
  const out = new Map<number, Set<number>>()
  for (const s of series) {
    const w = Number(s.tags.find((t) => t.key === 'w')?.value)
    const seen = new Set<number>()
    s.timestamps.forEach((ts, j) => {
      const i = Number(ts) - T0
      if (s.values[j] !== i) throw new Error(`writer ${w}'s point ${i} reads back as ${s.values[j]}`)
      seen.add(i)
    })
    out.set(w, seen)
  }
  return out
}

/** Counts the acknowledged points a read holds; names the first few missing. */
function check(
  what: string,
  logs: readonly WriterLog[],
  read: Map<number, Set<number>>,
  missing: string[],
): { found: number; lost: number } {
  let found = 0
  const lost: string[] = []
  logs.forEach((log, w) => {
    const seen = read.get(w) ?? new Set<number>()
    for (const i of log.acked) {
      if (seen.has(i)) found++
      else lost.push(`w${w}:${i}(${log.ackedBy.get(i)})`)
    }
  })
  if (lost.length > 0)
    missing.push(
      `${what}: ${lost.length} missing, first ${lost.slice(0, 5).join(' ')}, last ${lost.slice(-3).join(' ')}`,
    )
  return { found, lost: lost.length }
}

/** Runs `v3 cluster repair` through one node, as a user does; returns the points it sent in all. */
async function repair(node: ServerProcess): Promise<number> {
  const out = await runV3(['cluster', 'repair', '--server', node.address, '--format', 'json'])
  if (out.code !== 0) throw new Error(`v3 cluster repair exited with ${out.code}: ${out.stderr}`)
  const report: unknown = JSON.parse(out.stdout)
  const nodes = (report as { nodes?: unknown }).nodes
  if (!Array.isArray(nodes)) throw new Error(`v3 cluster repair printed no nodes: ${out.stdout}`)
  return nodes.reduce((n: number, r: { pointsSent?: unknown }) => n + Number(r.pointsSent), 0)
}

export async function runJepsenSet(options: JepsenOptions): Promise<JepsenReport> {
  const t0 = Date.now()
  const log = options.log ?? (() => {})
  const rng = new Rng(options.seed)
  const schedule = drawSchedule(rng)
  const writers = options.writers ?? 4
  const cluster = new Cluster()
  const faults: string[] = []
  const note = (line: string): void => {
    faults.push(line)
    log(line)
  }
  try {
    await cluster.start()
    const logs: WriterLog[] = Array.from({ length: writers }, () => ({ acked: [], unknown: [], ackedBy: new Map() }))
    let writing = true
    const start = Date.now()
    const at = (ms: number): Promise<void> => sleep(Math.max(0, start + ms - Date.now()))
    const runs = logs.map((l, w) => writer(cluster, w, new Rng(options.seed * 31 + w + 1), () => writing, l, start))
    const killed = IDS[schedule.killed]
    const stopped = IDS[schedule.stopped]
    const nemesis = [
      (async () => {
        await at(schedule.killAtMs)
        note(`${Date.now() - start} ms: kill -9 ${killed}`)
        await cluster.kill(schedule.killed)
        await sleep(schedule.killForMs)
        note(`${Date.now() - start} ms: restart ${killed} on its data folder`)
        await cluster.restart(schedule.killed)
        note(`${Date.now() - start} ms: ${killed} listening again`)
      })(),
      (async () => {
        await at(schedule.stopAtMs)
        note(`${Date.now() - start} ms: SIGSTOP ${stopped}`)
        cluster.pause(schedule.stopped)
        await sleep(STOP_MS)
        cluster.resume(schedule.stopped)
        note(`${Date.now() - start} ms: SIGCONT ${stopped}`)
      })(),
    ]
    let nemesisError: unknown
    try {
      await Promise.all(nemesis)
      // A tail of writes with every node back, while the stopped node catches up.
      await at(options.minWriteMs ?? 0)
      await sleep(2_000)
    } catch (err) {
      nemesisError = err
    } finally {
      writing = false
      await Promise.all(runs)
    }
    if (nemesisError !== undefined) throw nemesisError
    const writeMs = Date.now() - start
    const acked = logs.reduce((n, l) => n + l.acked.length, 0)
    const unknown = logs.reduce((n, l) => n + l.unknown.length, 0)
    log(`seed ${options.seed}: ${acked} points acknowledged, ${unknown} unknown, over ${writeMs} ms of writes`)

    const missingQuorum: string[] = []
    const missingAlone: string[] = []
    let lostQuorum = 0
    let lostAlone = 0
    await cluster.allHealthy()
    // a) Every acknowledged point at QUORUM, through each node.
    const foundQuorum: Record<string, number> = {}
    let unknownStored = 0
    for (const [i, id] of IDS.entries()) {
      const read = await readSet(cluster.node(i), 'quorum')
      const r = check(`QUORUM through ${id}`, logs, read, missingQuorum)
      foundQuorum[id] = r.found
      lostQuorum += r.lost
      if (i === 0) {
        logs.forEach((l, w) => {
          for (const u of l.unknown) if (read.get(w)?.has(u)) unknownStored++
        })
      }
    }
    // b) Hints delivered and repair run, then each node alone at ONE.
    await cluster.hintsDelivered()
    const repairPointsSent = await repair(cluster.node(0))
    log(`v3 cluster repair: ${repairPointsSent} points sent between the nodes`)
    const foundAlone: Record<string, number> = {}
    for (const [i, id] of IDS.entries()) {
      const others = [0, 1, 2].filter((j) => j !== i)
      for (const j of others) cluster.pause(j)
      try {
        const r = check(`ONE on ${id} alone`, logs, await readSet(cluster.node(i), 'one'), missingAlone)
        foundAlone[id] = r.found
        lostAlone += r.lost
      } finally {
        for (const j of others) cluster.resume(j)
      }
      if (i < IDS.length - 1) await cluster.allHealthy()
    }
    return {
      seed: options.seed,
      acked,
      unknown,
      unknownStored,
      foundQuorum,
      foundAlone,
      lostQuorum,
      lostAlone,
      repairPointsSent,
      faults,
      durationMs: Date.now() - t0,
      missingQuorum,
      missingAlone,
    }
  } finally {
    await cluster.close()
  }
}

/** One line of a report, for the test's diagnostics and the soak summary. */
export function describeReport(r: JepsenReport): string {
  const per = (m: Readonly<Record<string, number>>): string =>
    Object.entries(m)
      .map(([id, n]) => `${id}=${n}`)
      .join(' ')
  return [
    `seed=${r.seed}`,
    `acked=${r.acked}`,
    `unknown=${r.unknown}`,
    `unknown_stored=${r.unknownStored}`,
    `found_quorum=[${per(r.foundQuorum)}]`,
    `found_alone_one=[${per(r.foundAlone)}]`,
    `lost_quorum=${r.lostQuorum}`,
    `lost_alone=${r.lostAlone}`,
    `repair_points=${r.repairPointsSent}`,
    `duration_ms=${r.durationMs}`,
  ].join(' ')
}
