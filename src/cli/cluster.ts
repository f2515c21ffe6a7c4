import type { RepairReport } from '../client/index.js'
import { newPeerKey } from '../cluster/peer-key.js'
import { parseDuration, UsageError } from './args.js'
import { CONNECTION_USAGE, connect, parseCommandArgs, stringFlag } from './client-command.js'
import { alignedTable } from './query.js'

const CLUSTER_USAGE = `Usage: v3 cluster status [--server <host:port>] [--format table|json]
       v3 cluster repair [--server <host:port>] [--format table|json] [--timeout <duration>]
       v3 cluster decommission <node-id> [--server <host:port>] [--timeout <duration>]
       v3 cluster peer-key

status prints the members of the cluster the node belongs to: id, gRPC and peer addresses,
health, lifecycle state, share of the ring, whether it leads, and how many writes for it the node
named by --server keeps as hints while it is down (hinted handoff; ask each node for its own).

repair runs an anti-entropy repair pass on every healthy node now, over all data up to now, and
prints what each pass compared and moved once all are done. Members that are down are named and
not repaired; the command then exits with status 1. --timeout bounds the wait (default: none).

decommission moves a member's ranges to the nodes that take them over while the cluster serves,
then removes it from the ring, and returns once it has left and the change is over: the node may
then be stopped. The leader carries it out; 'v3 cluster status' shows its progress meanwhile.
Needs the admin role.

peer-key prints a new key for the nodes' ZeroMQ traffic (a CurveZMQ secret key, one line): give
the same file to every node with --peer-key, and keep it secret, e.g.
  (umask 077; v3 cluster peer-key > peer.key)

${CONNECTION_USAGE}`

/** `v3 cluster status`: the members as a table (or JSON), from any node. */
export async function runCluster(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { format: { type: 'string' }, timeout: { type: 'string' } })
  if (values.help === true) {
    process.stdout.write(CLUSTER_USAGE)
    return 0
  }
  const [sub, ...rest] = positionals
  const timeout = stringFlag(values, 'timeout')
  if (sub === 'peer-key') {
    if (rest.length > 0 || Object.keys(values).length > 0) throw new UsageError('v3 cluster peer-key takes no argument')
    process.stdout.write(`${newPeerKey().secretKey}\n`)
    return 0
  }
  if (sub === 'decommission') {
    if (rest.length !== 1) throw new UsageError(`v3 cluster decommission takes one node id\n\n${CLUSTER_USAGE}`)
    if (values.format !== undefined) throw new UsageError('--format goes with v3 cluster status and repair')
    const timeoutMs = timeout === undefined ? undefined : parseDuration('timeout', timeout)
    const client = await connect(values)
    try {
      const report = await client.decommission(rest[0]!, timeoutMs === undefined ? {} : { timeoutMs })
      process.stdout.write(
        `${report.nodeId} left the ring (ring version ${report.ringVersion}, ${(report.durationMs / 1000).toFixed(1)}s); it may be stopped\n`,
      )
      return 0
    } finally {
      client.close()
    }
  }
  if (sub !== 'status' && sub !== 'repair') {
    throw new UsageError(`v3 cluster takes status, repair, decommission or peer-key\n\n${CLUSTER_USAGE}`)
  }
  if (rest.length > 0) throw new UsageError(`v3 cluster ${sub} takes no argument, got ${JSON.stringify(rest[0])}`)
  const format = stringFlag(values, 'format') ?? 'table'
  if (format !== 'table' && format !== 'json') throw new UsageError(`--format must be table or json, got ${format}`)
  if (sub === 'status' && timeout !== undefined)
    throw new UsageError('--timeout goes with v3 cluster repair and decommission')
  if (sub === 'repair') {
    const timeoutMs = timeout === undefined ? undefined : parseDuration('timeout', timeout)
    const client = await connect(values)
    try {
      return printRepair(await client.repair(timeoutMs === undefined ? {} : { timeoutMs }), format)
    } finally {
      client.close()
    }
  }
  const client = await connect(values)
  try {
    const nodes = [...(await client.listNodes())].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    if (format === 'json') {
      process.stdout.write(`${JSON.stringify(nodes, null, 2)}\n`)
      return 0
    }
    const rows = nodes.map((n) => [
      n.id,
      n.address,
      n.peerAddress === '' ? '-' : n.peerAddress,
      n.state,
      n.lifecycle,
      `${(n.ringShare * 100).toFixed(1)}%`,
      n.leader ? 'yes' : '',
      String(n.hintsPending),
      n.move === undefined
        ? ''
        : `${n.move.phase} ${n.move.rangesDone}/${n.move.rangesTotal} ranges, ${n.move.pointsMoved} points`,
    ])
    process.stdout.write(
      alignedTable(
        ['node', 'address', 'peer', 'health', 'state', 'ring share', 'leader', 'hints here', 'move'],
        rows,
        new Set([5, 7]),
      ),
    )
  } finally {
    client.close()
  }
  return 0
}

/** Prints a repair's figures per node and in total; 1 when some member was down and not repaired. */
function printRepair(report: RepairReport, format: 'table' | 'json'): number {
  if (format === 'json') process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
  else {
    const total = (pick: (n: RepairReport['nodes'][number]) => number) => report.nodes.reduce((a, n) => a + pick(n), 0)
    const rows = report.nodes.map((n) => [
      n.nodeId,
      String(n.rangesCompared),
      String(n.rangesRepaired),
      String(n.pointsSent),
      String(n.pointsReceived),
      `${(n.durationMs / 1000).toFixed(1)}s`,
    ])
    rows.push([
      'total',
      String(total((n) => n.rangesCompared)),
      String(total((n) => n.rangesRepaired)),
      String(total((n) => n.pointsSent)),
      String(total((n) => n.pointsReceived)),
      `${(report.durationMs / 1000).toFixed(1)}s`,
    ])
    process.stdout.write(
      alignedTable(
        ['node', 'ranges compared', 'blocks repaired', 'points sent', 'points received', 'duration'],
        rows,
        new Set([1, 2, 3, 4, 5]),
      ),
    )
  }
  if (report.downNodes.length === 0) return 0
  process.stderr.write(`not repaired, down: ${report.downNodes.join(', ')}\n`)
  return 1
}
