import { existsSync, readFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { type PeerKey, parsePeerKey } from '../cluster/peer-key.js'
import {
  type BasicEngineOptions,
  ENGINE_DEFAULTS,
  type Logger,
  resolveEngineConfig,
  type SyncPolicy,
} from '../engine/config.js'
import type { StorageEngine } from '../engine/storage-engine.js'
import { bug, ValidationError } from '../model/errors.js'
import type { ConsistencyLevel } from '../model/types.js'
import { type PreparedHttpEndpoint, prepareHttpEndpoint, type RunningHttpEndpoint } from '../server/http-endpoint.js'
import { createServerMetrics } from '../server/metrics.js'
import { PromQueryApi } from '../server/promql/api.js'
import { requestLogInterceptor } from '../server/request-log.js'
import { type PreparedServer, prepareServer, type RunningServer } from '../server/server.js'
import type { TlsOptions } from '../server/tls.js'
import { checkCanListen, checkPeerExposure, splitHostPort } from '../server/transport.js'
import { UsageError } from './args.js'
import type { ClusterNode, ClusterServeOptions } from './cluster-node.js'
import {
  envName,
  flagTable,
  optionsHelp,
  printConfig,
  type ResolvedConfig,
  readConfigFile,
  resolveConfig,
  unknownEnvWarnings,
} from './config.js'
import { createLogger, type LogFormat } from './logger.js'
import { engineOf, loadPlugins } from './plugins.js'

export function serveUsage(): string {
  return `Usage: v3 serve [--config <file>] [options]

Runs one V3 node: a storage engine (the basic engine on RocksDB by default) behind the gRPC
services, with metrics and health checks over HTTP.

Every option can be set in a YAML or JSON config file (--config, keys as the flags without --), in
an environment variable (V3_ and the name in capitals, e.g. ${envName('hot-window')}), or as a
flag; a flag beats the environment, which beats the file. --print-config prints the result.

${optionsHelp()}Durations: 500ms, 90s, 15m, 2h, 30d. Sizes: 65536, 512KiB, 16MiB.
SIGTERM or SIGINT stops accepting calls, lets in-flight calls finish, flushes and closes the database.
`
}

export interface ServeConfig {
  /** One line for each `V3_` variable that is no option; logged once the logger exists. */
  readonly warnings: readonly string[]
  readonly help: boolean
  readonly printConfig: boolean
  readonly resolved: ResolvedConfig
  readonly engine: BasicEngineOptions
  /** A registered engine name or the path of a plugin module. */
  readonly engineSpec: string
  readonly plugins: readonly string[]
  readonly listen: string
  readonly nodeId: string | undefined
  readonly maxMessageBytes: number | undefined
  readonly receiveWindowBytes: number | undefined
  readonly streamChunkBytes: number | undefined
  readonly shutdownTimeoutMs: number | undefined
  readonly keepaliveTimeMs: number | undefined
  readonly keepaliveTimeoutMs: number | undefined
  readonly maxConcurrentStreams: number | undefined
  readonly tokensFile: string | undefined
  readonly tls: TlsOptions | undefined
  readonly insecure: boolean
  /** undefined: no HTTP endpoint. */
  readonly httpListen: string | undefined
  readonly httpMaxBodyBytes: number | undefined
  /** undefined: the listener's default (cores - 1, at least 1). */
  readonly httpIngestWorkers: number | undefined
  readonly httpMaxConcurrentWrites: number | undefined
  readonly httpWriteQueueTimeoutMs: number | undefined
  readonly logLevel: string
  readonly logFormat: LogFormat
  readonly logRequests: boolean
  /** undefined: a single node. */
  readonly cluster: ClusterServeOptions | undefined
}

/** Consul's own variable may name the agent without a scheme (`127.0.0.1:8500`), as its CLI allows. */
function consulUrl(text: string): string {
  return /^https?:\/\//.test(text) ? text : `http://${text}`
}

/**
 * Reads `v3 serve`'s configuration from its flags, the environment and the config file named by
 * --config (or V3_CONFIG), validating every value; throws UsageError naming the first bad one.
 */
export function parseServeArgs(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>> = {},
): ServeConfig {
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({ args: [...args], options: flagTable(), strict: true, allowPositionals: false }).values
  } catch (err) {
    // Node's messages can run over several lines; a refusal is one line, and names where to look.
    const message = (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ')
    const unknown = err instanceof Error && 'code' in err && err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION'
    throw new UsageError(unknown ? `${message}; v3 serve --help lists the options` : message)
  }
  const configPath = (values.config as string | undefined) ?? env.V3_CONFIG
  const resolved = resolveConfig({
    file: configPath === undefined ? undefined : { path: configPath, values: readConfigFile(configPath) },
    env,
    flags: values,
  })
  const get = (key: string) => resolved.get(key)?.value
  const str = (key: string) => get(key) as string | undefined
  const num = (key: string) => get(key) as number | undefined
  const bool = (key: string) => (get(key) as boolean | undefined) ?? false
  // An option with a default in the schema always has a value; its default is written there alone.
  const set = <T>(key: string): T => {
    const value = get(key)
    if (value === undefined) throw bug(`option ${key} has neither a value nor a default`)
    return value as T
  }

  const cert = str('tls-cert')
  const key = str('tls-key')
  const clientCa = str('tls-client-ca')
  if ((cert === undefined) !== (key === undefined)) throw new UsageError('--tls-cert and --tls-key go together')
  if (clientCa !== undefined && cert === undefined)
    throw new UsageError('--tls-client-ca needs --tls-cert and --tls-key')
  const httpListen = str('http-listen')

  return {
    warnings: unknownEnvWarnings(env),
    help: values.help === true,
    printConfig: values['print-config'] === true,
    resolved,
    engine: {
      dataDir: set<string>('data'),
      hotWindowMs: num('hot-window'),
      retentionMs: num('retention'),
      // Write versions are needed while writes of one point can still arrive out of order: hints
      // arrive up to the hint window late, and points are sealed into blocks while hot.
      versionWindowMs: set<number>('hint-window') + set<number>('hot-window'),
      sync: str('sync') as SyncPolicy | undefined,
      sealIdleMs: num('seal-idle'),
      sealIntervalMs: num('seal-interval'),
      maxBufferedPoints: num('max-buffered-points'),
      moveIntervalMs: num('move-interval'),
      retentionIntervalMs: num('retention-interval'),
      maxPointsPerQuery: num('max-points-per-query'),
      queryConcurrency: num('query-concurrency'),
      blockCacheBytes: num('block-cache'),
      resultCachePoints: num('result-cache-points'),
      decodedCachePoints: num('decoded-cache-points'),
      decodeWorkers: num('decode-workers'),
      workerDecodeMinRuns: num('worker-decode-min-runs'),
      limits: {
        maxSeriesPerRequest: num('max-series-per-write'),
        maxPointsPerRequest: num('max-points-per-write'),
        maxTagsPerSeries: num('max-tags-per-series'),
        maxTagValueBytes: num('max-tag-value-bytes'),
        maxNameBytes: num('max-name-bytes'),
        allowNaN: bool('allow-nan'),
      },
    },
    engineSpec: set<string>('engine'),
    plugins: (get('plugins') as readonly string[] | undefined) ?? [],
    listen: set<string>('listen'),
    nodeId: str('node-id'),
    maxMessageBytes: num('max-message-bytes'),
    receiveWindowBytes: num('receive-window'),
    streamChunkBytes: num('stream-chunk-bytes'),
    shutdownTimeoutMs: num('shutdown-timeout'),
    keepaliveTimeMs: num('keepalive-time'),
    keepaliveTimeoutMs: num('keepalive-timeout'),
    maxConcurrentStreams: num('max-concurrent-streams'),
    tokensFile: str('tokens-file'),
    tls: cert === undefined || key === undefined ? undefined : { certFile: cert, keyFile: key, clientCaFile: clientCa },
    insecure: bool('insecure'),
    httpListen: httpListen === 'off' ? undefined : httpListen,
    httpMaxBodyBytes: num('http-max-body-bytes'),
    httpIngestWorkers: num('http-ingest-workers'),
    httpMaxConcurrentWrites: num('http-max-concurrent-writes'),
    httpWriteQueueTimeoutMs: num('http-write-queue-timeout'),
    logLevel: set<string>('log-level'),
    logFormat: set<LogFormat>('log-format'),
    logRequests: bool('log-requests'),
    cluster: bool('cluster')
      ? {
          nodeId: str('node-id'),
          peerListen: str('peer-listen'),
          peerKeyFile: str('peer-key'),
          advertise: str('advertise'),
          consulUrl: consulUrl(str('consul') ?? env.CONSUL_HTTP_ADDR ?? 'http://127.0.0.1:8500'),
          consulToken: str('consul-token') ?? env.CONSUL_HTTP_TOKEN,
          clusterName: set<string>('cluster-name'),
          replicationFactor: set<number>('replication-factor'),
          vnodes: set<number>('vnodes'),
          peerTimeoutMs: set<number>('peer-timeout'),
          // The schema refuses any other value of --write-consistency.
          writeConsistency: set<ConsistencyLevel>('write-consistency'),
          readTimeoutMs: set<number>('read-timeout'),
          hintWindowMs: set<number>('hint-window'),
          hintMaxBytes: set<number>('hint-max-bytes'),
          repairIntervalMs: set<number>('repair-interval'),
          deadNodeTimeoutMs: set<number>('dead-node-timeout'),
          restoreRingWithout: (get('restore-ring-without') as readonly string[] | undefined) ?? [],
          leaderTtlMs: set<number>('leader-ttl'),
          leaderLockDelayMs: set<number>('leader-lock-delay'),
        }
      : undefined,
  }
}

/**
 * The cluster's peer key from its file (--peer-key); undefined without one. Throws naming the flag;
 * warns when other users may read the file.
 */
async function readPeerKey(file: string | undefined, logger: Logger): Promise<PeerKey | undefined> {
  if (file === undefined) return undefined
  let text: string
  let mode: number
  try {
    // One open for both, so that the mode warned about is the one of the file read.
    const handle = await open(file)
    try {
      mode = (await handle.stat()).mode
      text = await handle.readFile('utf8')
    } finally {
      await handle.close()
    }
  } catch (err) {
    throw new Error(`cannot read --peer-key ${file}: ${(err as Error).message}`)
  }
  let key: PeerKey
  try {
    key = parsePeerKey(text)
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err
    throw new Error(`--peer-key ${file} ${err.violations[0]?.description ?? err.message}`)
  }
  if ((mode & 0o077) !== 0) {
    logger.warn(
      { file, mode: `0${(mode & 0o777).toString(8)}` },
      'the peer key file (--peer-key) can be read by other users of this machine; chmod 600 it',
    )
  }
  return key
}

/**
 * The version in V3's package.json, which the query API's buildinfo reports. Looked for upwards
 * from this module, since it runs from src/cli under tsx and from dist/src/cli once built.
 */
function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version?: unknown }
      if (typeof pkg.version === 'string') return pkg.version
    } catch {
      // No package.json here: look one folder up.
    }
    const up = dirname(dir)
    if (up === dir) return 'unknown'
    dir = up
  }
}

/**
 * Refuses two of this node's listeners on one port: both are free when probed, and the second to
 * bind would fail once the engine has opened. Port 0 (any free port) never clashes.
 */
function checkDistinctPorts(listeners: readonly (readonly [string, string | undefined])[]): void {
  const given = listeners.flatMap(([flag, address]) =>
    address === undefined || splitHostPort(address).port === 0 ? [] : [{ flag, address }],
  )
  given.forEach(({ flag, address }, i) => {
    for (const other of given.slice(0, i)) {
      if (splitHostPort(other.address).port === splitHostPort(address).port) {
        throw new Error(`${flag} (${address}) and ${other.flag} (${other.address}) must use different ports`)
      }
    }
  })
}

/**
 * Starts the engine plugin (and the plugins it needs), serves it over gRPC and its metrics over
 * HTTP, and on SIGTERM or SIGINT shuts down in order: not ready, stop accepting calls, let in-flight
 * calls finish, stop the plugins in reverse (which flushes and closes the engine), exit 0.
 */
export async function serve(args: readonly string[]): Promise<void> {
  const config = parseServeArgs(args, process.env)
  if (config.help) {
    process.stdout.write(serveUsage())
    return
  }
  if (config.printConfig) {
    // The same warnings a start logs (unknown V3_ variables), on stderr: the config stays loadable.
    for (const warning of config.warnings) process.stderr.write(`v3: warning: ${warning}\n`)
    process.stdout.write(printConfig(config.resolved))
    return
  }
  const logger = createLogger(config.logLevel, config.logFormat)
  for (const warning of config.warnings) logger.warn({}, warning)
  // Refusals come before the engine opens: a start that cannot serve leaves the data folder as it was.
  let prepared: PreparedServer
  let preparedHttp: PreparedHttpEndpoint | undefined
  let peerKey: PeerKey | undefined
  try {
    // The peers' address too, when it is known before the gRPC server binds: its default follows the
    // advertised gRPC port, which --listen on port 0 (and no --advertise) leaves to the system.
    const clusterOptions = config.cluster
    let peers: string | undefined
    if (
      clusterOptions !== undefined &&
      (clusterOptions.peerListen !== undefined || splitHostPort(clusterOptions.advertise ?? config.listen).port !== 0)
    ) {
      const { peerListenOf } = await import('./cluster-node.js')
      peers = peerListenOf(clusterOptions, config.listen)
    }
    checkDistinctPorts([
      ['--listen', config.listen],
      ['--http-listen', config.httpListen],
      ['--peer-listen', peers],
    ])
    prepared = await prepareServer({
      listen: config.listen,
      nodeId: config.nodeId,
      maxMessageBytes: config.maxMessageBytes,
      receiveWindowBytes: config.receiveWindowBytes,
      streamChunkBytes: config.streamChunkBytes,
      shutdownTimeoutMs: config.shutdownTimeoutMs,
      keepaliveTimeMs: config.keepaliveTimeMs,
      keepaliveTimeoutMs: config.keepaliveTimeoutMs,
      maxConcurrentStreams: config.maxConcurrentStreams,
      tokensFile: config.tokensFile,
      tls: config.tls,
      insecure: config.insecure,
      logger,
    })
    // The HTTP listener reads and writes data too, so it is refused on the same grounds as gRPC.
    if (config.httpListen !== undefined) {
      preparedHttp = await prepareHttpEndpoint({
        listen: config.httpListen,
        tokensFile: config.tokensFile,
        tls: config.tls,
        insecure: config.insecure,
        maxBodyBytes: config.httpMaxBodyBytes,
        ingestWorkers: config.httpIngestWorkers,
        maxConcurrentWrites: config.httpMaxConcurrentWrites,
        writeQueueTimeoutMs: config.httpWriteQueueTimeoutMs,
        logger,
      })
    }
    if (peers !== undefined) await checkCanListen(peers, 'peers (--peer-listen)')
    if (clusterOptions !== undefined) {
      peerKey = await readPeerKey(clusterOptions.peerKeyFile, logger)
      // Without --peer-listen the peers' host is the gRPC one, whatever port they get.
      const host = splitHostPort(peers ?? config.listen).host
      const warning = checkPeerExposure(host, peers ?? host, peerKey !== undefined, config.insecure)
      if (warning !== undefined) logger.warn({}, warning)
    }
  } catch (err) {
    // Each check names the setting and what to do; the settings are the user's, so it is a usage error.
    throw new UsageError(err instanceof Error ? err.message : String(err), { cause: err })
  }
  // RocksDB writes CURRENT when it creates a database: without it, this start creates the node's.
  const newDataFolder = config.cluster !== undefined && !existsSync(join(config.engine.dataDir, 'CURRENT'))
  const { manager, engineName } = await loadPlugins(config.engineSpec, config.plugins)
  const instances = await manager.start([engineName], { options: config.engine, logger })
  let engine: StorageEngine
  let cluster: ClusterNode | undefined
  let server: RunningServer
  let http: RunningHttpEndpoint | undefined
  let ready = false
  let stopping = false
  /** Stops serving, cluster first, and exits with `code` once stopped (1 if the stop failed). */
  const shutDown = (code: number): void => {
    stopping = true
    ready = false
    // Deregister first, so that other nodes stop sending reads here while calls drain.
    Promise.resolve(cluster?.stop())
      .then(() => server.close())
      .then(() => http?.close())
      .then(() => manager.stop())
      .then(
        () => {
          logger.info({}, 'stopped cleanly')
          process.exit(code)
        },
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed')
          process.exit(1)
        },
      )
  }
  /** Membership refused this node after it began serving: it stops, exiting as a refused start does. */
  const fail = (err: Error): void => {
    if (stopping) return
    logger.error({ err: err.message }, 'the cluster refused this node; shutting down')
    shutDown(err instanceof UsageError ? 2 : 1)
  }
  try {
    engine = engineOf(instances, engineName)
    if (config.cluster !== undefined) {
      const resolved = resolveEngineConfig(config.engine)
      // The cluster's code (ZeroMQ, Consul and the rest) loads only for a cluster node.
      const { createClusterNode } = await import('./cluster-node.js')
      cluster = createClusterNode(engine, config.cluster, resolved, logger, resolved.dataDir, newDataFolder, peerKey)
      engine = cluster.engine
    }
    const metrics = createServerMetrics(engine)
    const queryApi = new PromQueryApi(engine, { version: packageVersion() })
    http = await preparedHttp?.start({
      metrics,
      ready: () => ready,
      engine,
      queryApi,
      maxReadPoints: config.engine.maxPointsPerQuery ?? ENGINE_DEFAULTS.maxPointsPerQuery,
    })
    server = await prepared.start(engine, [
      metrics.interceptor,
      ...(config.logRequests ? [requestLogInterceptor(logger)] : []),
    ])
    // Membership waits for Consul while it is unreachable; anything else it refuses ends the start
    // (or, for a node that joined on its kept ring before it could register, ends the node).
    if (cluster !== undefined) await cluster.join(server.address, fail)
  } catch (err) {
    await cluster?.stop()
    await http?.close()
    await manager.stop()
    throw err
  }
  ready = true

  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return
    logger.info({ signal }, 'shutting down')
    shutDown(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  logger.info({ address: server.address, engine: engineName, http: http?.address }, 'serving')
  // Scripts (and the tests) read these lines; the listening line comes last, once everything is up.
  if (http !== undefined) process.stdout.write(`v3 metrics on ${http.scheme}://${http.address}/metrics\n`)
  process.stdout.write(`v3 listening on ${server.address}\n`)
}
