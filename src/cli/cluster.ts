import { UsageError } from './args.js'
import { CONNECTION_USAGE, connect, parseCommandArgs, stringFlag } from './client-command.js'
import { alignedTable } from './query.js'

const CLUSTER_USAGE = `Usage: v3 cluster status [--server <host:port>] [--format table|json]

Prints the members of the cluster the node belongs to: id, gRPC and peer addresses, health,
lifecycle state, share of the ring, whether it leads, and the writes the node asked keeps as
hints for it while it is down (hinted handoff; ask each node for its own).

${CONNECTION_USAGE}`

/** `v3 cluster status`: the members as a table (or JSON), from any node. */
export async function runCluster(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { format: { type: 'string' } })
  if (values.help === true) {
    process.stdout.write(CLUSTER_USAGE)
    return 0
  }
  const [sub, ...rest] = positionals
  if (sub !== 'status' || rest.length > 0) throw new UsageError(`v3 cluster takes status\n\n${CLUSTER_USAGE}`)
  const format = stringFlag(values, 'format') ?? 'table'
  if (format !== 'table' && format !== 'json') throw new UsageError(`--format must be table or json, got ${format}`)
  const client = connect(values)
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
    ])
    process.stdout.write(
      alignedTable(
        ['node', 'address', 'peer', 'health', 'state', 'ring share', 'leader', 'hints here'],
        rows,
        new Set([5, 7]),
      ),
    )
  } finally {
    client.close()
  }
  return 0
}
