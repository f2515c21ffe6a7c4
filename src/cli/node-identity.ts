/**
 * The cluster node a data folder belongs to, kept in `<data>/cluster-node.json` from the first time
 * the node is an active member of the ring. A folder holds the points of its node's ranges only:
 * started under another node id (another node's folder, swapped in by mistake, or an id derived
 * from an address that changed) it would answer that node's ranges with the wrong data, so such a
 * start is refused.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { writeWholeFile } from '../engine/whole-file.js'
import { UsageError } from './args.js'

export const IDENTITY_FILE = 'cluster-node.json'

interface FolderIdentity {
  readonly cluster: string
  readonly node: string
}

function parseIdentity(text: string): FolderIdentity | undefined {
  try {
    const parsed: unknown = JSON.parse(text)
    if (typeof parsed !== 'object' || parsed === null) return undefined
    const { cluster, node } = parsed as Record<string, unknown>
    return typeof cluster === 'string' && typeof node === 'string' ? { cluster, node } : undefined
  } catch {
    return undefined
  }
}

/**
 * Checks that `dataDir` may serve as node `node` of cluster `cluster`, and refuses the start (a
 * usage error) when the folder belongs to another node or cluster. Answers a function that records
 * the claim, to call once the node is an active member, when the folder has no record yet (a new
 * folder, or a single node's): a start refused for another reason leaves the folder unclaimed.
 * Answers undefined when the folder records this node: it was a ring member before.
 */
export async function checkDataFolder(
  dataDir: string,
  cluster: string,
  node: string,
): Promise<(() => Promise<void>) | undefined> {
  const path = join(dataDir, IDENTITY_FILE)
  let text: string | undefined
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (text === undefined) return () => writeWholeFile(path, `${JSON.stringify({ cluster, node })}\n`)
  const held = parseIdentity(text)
  if (held === undefined) {
    throw new UsageError(`cannot read ${path}: it should hold {"cluster":…,"node":…}, the node this folder belongs to`)
  }
  if (held.cluster === cluster && held.node === node) return undefined
  throw new UsageError(
    `the data folder ${dataDir} belongs to node ${held.node} of cluster ${held.cluster}, not to node ${node} of cluster ${cluster}: ` +
      `its points are that node's ranges. Start ${held.node} on it (--node-id ${held.node} --cluster-name ${held.cluster}), ` +
      `or give this node a folder of its own`,
  )
}
