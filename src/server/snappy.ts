import { createRequire } from 'node:module'

type Snappy = typeof import('snappy')
let loaded: Snappy | undefined

/**
 * The snappy binding, loaded with the first remote-write or remote-read body: a server (or an
 * ingest worker) that never sees one never loads it.
 */
export function snappy(): Snappy {
  loaded ??= createRequire(import.meta.url)('snappy') as Snappy
  return loaded
}
