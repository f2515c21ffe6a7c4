import { parseArgs } from 'node:util'
import { BasicEngine } from '../engine/basic-engine.js'
import type { BasicEngineOptions, Logger, SyncPolicy } from '../engine/config.js'
import { type RunningServer, SERVER_DEFAULTS, startServer } from '../server/server.js'
import { parseCount, parseDuration, parseListen, parseSize, UsageError } from './args.js'

export const SERVE_USAGE = `Usage: v3 serve [options]

Runs one V3 node: the basic engine on RocksDB behind the gRPC services.

Server:
  --data <dir>                   database folder, created when missing (default ./data)
  --listen <host:port>           address to serve on; port 0 picks a free one (default 127.0.0.1:50051)
  --node-id <id>                 this node's id in ClusterService (default <hostname>:<port>)
  --max-message-bytes <size>     largest request or response message (default 16MiB)
  --stream-chunk-bytes <size>    largest QueryStream message (default 1MiB)
  --shutdown-timeout <duration>  time in-flight calls get on SIGTERM before being cancelled (default 10s)

Engine:
  --hot-window <duration>        blocks newer than this stay in the hot tier (default 2h)
  --retention <duration>         remove data older than this; 0 keeps it forever (default 0)
  --sync always|group|off        fsync every write, share fsyncs between concurrent writes, or never (default group)
  --seal-idle <duration>         seal a finished block after it has been idle this long (default 2s)
  --seal-interval <duration>     how often the sealer runs (default 1s)
  --max-buffered-points <n>      seal blocks early when the write buffer holds more points (default 2000000)
  --move-interval <duration>     how often blocks past the hot window move to the cold tier (default 60s)
  --retention-interval <duration> how often retention runs when set (default 5m)
  --max-points-per-query <n>     a query returning more points fails with RESOURCE_EXHAUSTED (default 5000000)
  --query-concurrency <n>        series one query reads in parallel (default 16)
  --block-cache <size>           RocksDB block cache per data family (default 64MiB)

Write limits (INVALID_ARGUMENT or RESOURCE_EXHAUSTED beyond them):
  --max-series-per-write <n>     series entries in one write (default 10000)
  --max-points-per-write <n>     points in one write (default 1000000)
  --max-tags-per-series <n>      tags of one series (default 64)
  --max-tag-value-bytes <n>      UTF-8 bytes of a tag value (default 1024)
  --max-name-bytes <n>           UTF-8 bytes of a metric name or tag key (default 256)
  --allow-nan                    store NaN values (staleness markers); refused by default

Durations: 500ms, 90s, 15m, 2h, 30d. Sizes: 65536, 512KiB, 16MiB.
SIGTERM or SIGINT stops accepting calls, lets in-flight calls finish, flushes and closes the database.
`

const OPTIONS = {
  data: { type: 'string' },
  listen: { type: 'string' },
  'node-id': { type: 'string' },
  'max-message-bytes': { type: 'string' },
  'stream-chunk-bytes': { type: 'string' },
  'shutdown-timeout': { type: 'string' },
  'hot-window': { type: 'string' },
  retention: { type: 'string' },
  sync: { type: 'string' },
  'seal-idle': { type: 'string' },
  'seal-interval': { type: 'string' },
  'max-buffered-points': { type: 'string' },
  'move-interval': { type: 'string' },
  'retention-interval': { type: 'string' },
  'max-points-per-query': { type: 'string' },
  'query-concurrency': { type: 'string' },
  'block-cache': { type: 'string' },
  'max-series-per-write': { type: 'string' },
  'max-points-per-write': { type: 'string' },
  'max-tags-per-series': { type: 'string' },
  'max-tag-value-bytes': { type: 'string' },
  'max-name-bytes': { type: 'string' },
  'allow-nan': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

export interface ServeConfig {
  readonly help: boolean
  readonly engine: BasicEngineOptions
  readonly listen: string
  readonly nodeId: string | undefined
  readonly maxMessageBytes: number | undefined
  readonly streamChunkBytes: number | undefined
  readonly shutdownTimeoutMs: number | undefined
}

function parseSync(text: string | undefined): SyncPolicy | undefined {
  if (text === undefined || text === 'always' || text === 'group' || text === 'off') return text
  throw new UsageError(`--sync must be always, group or off, got ${JSON.stringify(text)}`)
}

/** Reads the flags of `v3 serve`; absent flags stay undefined so that the engine's defaults apply. */
export function parseServeArgs(args: readonly string[]): ServeConfig {
  let values: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; args: string[] }>>['values']
  try {
    values = parseArgs({ args: [...args], options: OPTIONS, strict: true, allowPositionals: false }).values
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err))
  }
  const opt = <T>(text: string | undefined, parse: (t: string) => T): T | undefined =>
    text === undefined ? undefined : parse(text)
  const duration = (flag: keyof typeof OPTIONS) =>
    opt(values[flag] as string | undefined, (t) => parseDuration(flag, t))
  const size = (flag: keyof typeof OPTIONS) => opt(values[flag] as string | undefined, (t) => parseSize(flag, t))
  const count = (flag: keyof typeof OPTIONS) => opt(values[flag] as string | undefined, (t) => parseCount(flag, t))

  const engine: BasicEngineOptions = {
    dataDir: values.data ?? './data',
    hotWindowMs: duration('hot-window'),
    retentionMs: duration('retention'),
    sync: parseSync(values.sync),
    sealIdleMs: duration('seal-idle'),
    sealIntervalMs: duration('seal-interval'),
    maxBufferedPoints: count('max-buffered-points'),
    moveIntervalMs: duration('move-interval'),
    retentionIntervalMs: duration('retention-interval'),
    maxPointsPerQuery: count('max-points-per-query'),
    queryConcurrency: count('query-concurrency'),
    blockCacheBytes: size('block-cache'),
    limits: {
      maxSeriesPerRequest: count('max-series-per-write'),
      maxPointsPerRequest: count('max-points-per-write'),
      maxTagsPerSeries: count('max-tags-per-series'),
      maxTagValueBytes: count('max-tag-value-bytes'),
      maxNameBytes: count('max-name-bytes'),
      allowNaN: values['allow-nan'],
    },
  }
  return {
    help: values.help ?? false,
    engine,
    listen: parseListen(values.listen ?? SERVER_DEFAULTS.listen),
    nodeId: values['node-id'],
    maxMessageBytes: size('max-message-bytes'),
    streamChunkBytes: size('stream-chunk-bytes'),
    shutdownTimeoutMs: duration('shutdown-timeout'),
  }
}

/** Log lines go to stderr, so that stdout carries only the listening line that scripts wait for. */
export const stderrLogger: Logger = {
  info: (obj, msg) => console.error('info', msg ?? '', obj),
  warn: (obj, msg) => console.error('warn', msg ?? '', obj),
  error: (obj, msg) => console.error('error', msg ?? '', obj),
}

/**
 * Opens the engine, serves it, and on SIGTERM or SIGINT shuts down in order: stop accepting calls,
 * let in-flight calls finish, close the engine (which flushes), exit 0.
 */
export async function serve(args: readonly string[]): Promise<void> {
  const config = parseServeArgs(args)
  if (config.help) {
    process.stdout.write(SERVE_USAGE)
    return
  }
  const engine = new BasicEngine(config.engine, { logger: stderrLogger })
  await engine.open()
  let server: RunningServer
  try {
    server = await startServer({
      engine,
      listen: config.listen,
      nodeId: config.nodeId,
      maxMessageBytes: config.maxMessageBytes,
      streamChunkBytes: config.streamChunkBytes,
      shutdownTimeoutMs: config.shutdownTimeoutMs,
      logger: stderrLogger,
    })
  } catch (err) {
    await engine.close()
    throw err
  }

  let stopping = false
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return
    stopping = true
    stderrLogger.info({ signal }, 'shutting down')
    server
      .close()
      .then(() => engine.close())
      .then(
        () => {
          stderrLogger.info({}, 'stopped cleanly')
          process.exit(0)
        },
        (err: unknown) => {
          stderrLogger.error({ err }, 'shutdown failed')
          process.exit(1)
        },
      )
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  process.stdout.write(`v3 listening on ${server.address}\n`)
}
