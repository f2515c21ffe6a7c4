/**
 * The configuration of `v3 serve`: one schema, read from a file (YAML or JSON), from `V3_…`
 * environment variables and from flags, in that order of increasing precedence. Every source is
 * validated against the schema, so an unknown key or a bad value stops the start with a message
 * naming the key and where it came from. Only src/cli reads these sources (STYLE.md); what it
 * builds is handed down as plain option objects.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { parseCount, parseDuration, parseListen, parseSize, UsageError } from './args.js'

export type OptionKind =
  | 'string'
  | 'listen'
  /** A host:port, or `off` (kept as the string "off") to turn the listener off. */
  | 'listen-or-off'
  | 'duration'
  | 'size'
  | 'count'
  | 'bool'
  | 'list'
  | { readonly oneOf: readonly string[] }

export interface OptionSpec {
  /** The flag (`--hot-window`), the file key (`hot-window:`) and, upper-cased, the variable (`V3_HOT_WINDOW`). */
  readonly key: string
  readonly kind: OptionKind
  /** As it would be written in a file; null: unset, the component's own default applies. */
  readonly default: string | boolean | null
  readonly group: 'server' | 'cluster' | 'security' | 'observability' | 'engine' | 'limits'
  readonly arg?: string
  readonly help: string
  /** The smallest and largest value a number option takes, in its unit (bytes, milliseconds). */
  readonly min?: number
  readonly max?: number
}

/** Every option of `v3 serve`. The README's options table lists the same keys, and a test checks it. */
export const SERVE_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'data',
    kind: 'string',
    default: './data',
    group: 'server',
    arg: '<dir>',
    help: 'database folder, created when missing',
  },
  {
    key: 'listen',
    kind: 'listen',
    default: '127.0.0.1:50051',
    group: 'server',
    arg: '<host:port>',
    help: 'gRPC address; port 0 picks a free one',
  },
  {
    key: 'node-id',
    kind: 'string',
    default: null,
    group: 'server',
    arg: '<id>',
    help: "this node's id in ClusterService (default <hostname>:<port>)",
  },
  {
    key: 'cluster',
    kind: 'bool',
    default: false,
    group: 'cluster',
    help: 'run as a node of a cluster: Consul membership, a hash ring, writes and queries routed to owners',
  },
  {
    key: 'peer-listen',
    kind: 'listen',
    default: null,
    group: 'cluster',
    arg: '<host:port>',
    help: 'ZeroMQ address for node-to-node traffic (default the gRPC port + 1 on the same host)',
  },
  {
    key: 'advertise',
    kind: 'listen',
    default: null,
    group: 'cluster',
    arg: '<host:port>',
    help: 'gRPC address other nodes and clients use (default --listen)',
  },
  {
    key: 'consul',
    kind: 'string',
    default: null,
    group: 'cluster',
    arg: '<url>',
    help: 'Consul HTTP API (default $CONSUL_HTTP_ADDR, else http://127.0.0.1:8500)',
  },
  {
    key: 'consul-token',
    kind: 'string',
    default: null,
    group: 'cluster',
    arg: '<token>',
    help: 'Consul ACL token (default $CONSUL_HTTP_TOKEN)',
  },
  {
    key: 'cluster-name',
    kind: 'string',
    default: 'v3',
    group: 'cluster',
    arg: '<name>',
    help: 'Consul service name and KV prefix',
  },
  {
    key: 'replication-factor',
    kind: 'count',
    default: '3',
    group: 'cluster',
    arg: '<n>',
    help: 'copies of each series; the first node records it and the cluster keeps it',
    min: 1,
  },
  {
    key: 'vnodes',
    kind: 'count',
    default: '128',
    group: 'cluster',
    arg: '<n>',
    help: 'ring tokens of a joining node',
    min: 1,
  },
  {
    key: 'peer-timeout',
    kind: 'duration',
    default: '10s',
    group: 'cluster',
    arg: '<duration>',
    help: 'time a peer has to answer a forwarded write or a part of a query',
    min: 1,
  },
  {
    key: 'write-consistency',
    kind: { oneOf: ['one', 'quorum', 'all'] },
    default: 'quorum',
    group: 'cluster',
    arg: 'one|quorum|all',
    help: "a write is acknowledged once this many of its series' owners have it durable, unless it asks for a level",
  },
  {
    key: 'read-timeout',
    kind: 'duration',
    default: '1s',
    group: 'cluster',
    arg: '<duration>',
    help: 'how long a read waits for one replica before it asks the next',
    min: 1,
  },
  {
    key: 'hint-window',
    kind: 'duration',
    default: '3h',
    group: 'cluster',
    arg: '<duration>',
    help: 'how long writes for an owner that is down are kept as hints, to be replayed when it is back',
    min: 1,
  },
  {
    key: 'hint-max-bytes',
    kind: 'size',
    default: '1GiB',
    group: 'cluster',
    arg: '<size>',
    help: 'most bytes of hints a node keeps for the owners that are down',
    min: 1,
  },
  {
    key: 'repair-interval',
    kind: 'duration',
    default: '10m',
    group: 'cluster',
    arg: '<duration>',
    help: 'how often each node runs a background anti-entropy repair pass over its token ranges',
    min: 1,
  },
  {
    key: 'dead-node-timeout',
    kind: 'duration',
    default: '0s',
    group: 'cluster',
    arg: '<duration>',
    help: 'the leader removes a member down this long and re-replicates its ranges; 0s (the default) never does',
  },
  {
    key: 'restore-ring-without',
    kind: 'list',
    default: null,
    group: 'cluster',
    arg: '<id,…>',
    help: 'members gone for good that the restore of a kept ring does not wait for while they are down (one that answers is still asked which ring it knows)',
  },
  {
    key: 'leader-ttl',
    kind: 'duration',
    default: '10s',
    group: 'cluster',
    arg: '<duration>',
    help: "TTL of the leader's Consul session: a dead leader is replaced within it plus the lock delay",
    min: 1,
  },
  {
    key: 'leader-lock-delay',
    kind: 'duration',
    default: '5s',
    group: 'cluster',
    arg: '<duration>',
    help: "Consul lock-delay of the leader lock: how long the lock stays free after its holder's session ends",
  },
  {
    key: 'engine',
    kind: 'string',
    default: 'basic',
    group: 'server',
    arg: '<name|path>',
    help: 'storage engine: a registered name or the path of a plugin module',
  },
  {
    key: 'plugins',
    kind: 'list',
    default: null,
    group: 'server',
    arg: '<path,…>',
    help: 'further plugin modules to load (engines or plugins they depend on)',
  },
  {
    key: 'max-message-bytes',
    kind: 'size',
    default: '16MiB',
    group: 'server',
    arg: '<size>',
    help: 'largest request or response message',
    min: 4096,
    max: 2147483647,
  },
  {
    key: 'receive-window',
    kind: 'size',
    default: '8MiB',
    group: 'server',
    arg: '<size>',
    help: 'HTTP/2 receive window of each gRPC connection and call: how much a client may send ahead',
    min: 65535,
    max: 2147483647,
  },
  {
    key: 'stream-chunk-bytes',
    kind: 'size',
    default: '1MiB',
    group: 'server',
    arg: '<size>',
    help: 'largest QueryStream message',
    min: 4096,
    max: 2147483647,
  },
  {
    key: 'shutdown-timeout',
    kind: 'duration',
    default: '10s',
    group: 'server',
    arg: '<duration>',
    help: 'time in-flight calls get on SIGTERM before being cancelled',
  },
  {
    key: 'keepalive-time',
    kind: 'duration',
    default: '5m',
    group: 'server',
    arg: '<duration>',
    help: 'ping an idle connection after this long',
    min: 1,
  },
  {
    key: 'keepalive-timeout',
    kind: 'duration',
    default: '20s',
    group: 'server',
    arg: '<duration>',
    help: 'close a connection whose ping goes unanswered this long',
    min: 1,
  },
  {
    key: 'max-concurrent-streams',
    kind: 'count',
    default: '1000',
    group: 'server',
    arg: '<n>',
    help: 'calls open at once on one connection',
    min: 1,
  },
  {
    key: 'tokens-file',
    kind: 'string',
    default: null,
    group: 'security',
    arg: '<path>',
    help: 'bearer tokens, one <role>:<token> a line; absent: no authentication',
  },
  {
    key: 'tls-cert',
    kind: 'string',
    default: null,
    group: 'security',
    arg: '<path>',
    help: 'PEM certificate chain; with --tls-key serves TLS',
  },
  {
    key: 'tls-key',
    kind: 'string',
    default: null,
    group: 'security',
    arg: '<path>',
    help: 'PEM private key of --tls-cert',
  },
  {
    key: 'tls-client-ca',
    kind: 'string',
    default: null,
    group: 'security',
    arg: '<path>',
    help: 'PEM CA bundle; clients must present a certificate it signed (mutual TLS)',
  },
  {
    key: 'peer-key',
    kind: 'string',
    default: null,
    group: 'security',
    arg: '<path>',
    help: "the cluster's CurveZMQ secret key (`v3 cluster peer-key` writes one): peer traffic encrypted, only nodes holding it served",
  },
  {
    key: 'insecure',
    kind: 'bool',
    default: false,
    group: 'security',
    help: 'serve a non-loopback address without TLS and tokens (peers: without --peer-key)',
  },
  {
    key: 'http-listen',
    kind: 'listen-or-off',
    default: '127.0.0.1:9464',
    group: 'observability',
    arg: '<host:port|off>',
    help: 'HTTP address: /metrics, /healthz, /readyz, Prometheus remote write/read and query API, InfluxDB /write; off disables',
  },
  {
    key: 'http-max-body-bytes',
    kind: 'size',
    default: '64MiB',
    group: 'observability',
    arg: '<size>',
    help: 'largest HTTP request body, compressed or inflated; larger answers 413',
    min: 1,
  },
  {
    key: 'http-max-concurrent-writes',
    kind: 'count',
    default: null,
    group: 'observability',
    arg: '<n>',
    help: 'HTTP write requests read, decoded and written at once (default: 2 x cores, at least 4); more wait their turn',
    min: 1,
  },
  {
    key: 'http-write-queue-timeout',
    kind: 'duration',
    default: '10s',
    group: 'observability',
    arg: '<duration>',
    help: 'how long an HTTP write waits for its turn before a 503 with Retry-After',
    min: 1,
  },
  {
    key: 'http-ingest-workers',
    kind: 'count',
    default: null,
    group: 'observability',
    arg: '<n>',
    help: 'worker threads that decode remote-write and line-protocol bodies of 8 KiB or more (default: cores - 1, at least 1); 0 decodes on the event loop',
  },
  {
    key: 'log-level',
    kind: { oneOf: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] },
    default: 'info',
    group: 'observability',
    arg: '<level>',
    help: 'least severe level logged',
  },
  {
    key: 'log-format',
    kind: { oneOf: ['auto', 'json', 'pretty'] },
    default: 'auto',
    group: 'observability',
    arg: '<format>',
    help: 'json lines, pretty text, or auto: pretty on a terminal, json otherwise',
  },
  {
    key: 'log-requests',
    kind: 'bool',
    default: false,
    group: 'observability',
    help: 'log every call: method, status, duration, peer',
  },
  {
    key: 'hot-window',
    kind: 'duration',
    default: '2h',
    group: 'engine',
    arg: '<duration>',
    help: 'blocks newer than this stay in the hot tier',
    min: 1,
  },
  {
    key: 'retention',
    kind: 'duration',
    default: '0',
    group: 'engine',
    arg: '<duration>',
    help: 'remove data older than this; 0 keeps it forever',
  },
  {
    key: 'sync',
    kind: { oneOf: ['always', 'group', 'off'] },
    default: 'group',
    group: 'engine',
    arg: 'always|group|off',
    help: 'fsync every write, share fsyncs between concurrent writes, or never',
  },
  {
    key: 'seal-idle',
    kind: 'duration',
    default: '2s',
    group: 'engine',
    arg: '<duration>',
    help: 'seal a finished block after it has been idle this long',
  },
  {
    key: 'seal-interval',
    kind: 'duration',
    default: '1s',
    group: 'engine',
    arg: '<duration>',
    help: 'how often the sealer runs',
    min: 1,
  },
  {
    key: 'max-buffered-points',
    kind: 'count',
    default: '1000000',
    group: 'engine',
    arg: '<n>',
    help: 'seal early when the write buffer holds more points; writers wait at twice this',
    min: 1,
  },
  {
    key: 'move-interval',
    kind: 'duration',
    default: '60s',
    group: 'engine',
    arg: '<duration>',
    help: 'how often blocks past the hot window move to the cold tier',
    min: 1,
  },
  {
    key: 'retention-interval',
    kind: 'duration',
    default: '5m',
    group: 'engine',
    arg: '<duration>',
    help: 'how often retention runs when set',
    min: 1,
  },
  {
    key: 'max-points-per-query',
    kind: 'count',
    default: '5000000',
    group: 'engine',
    arg: '<n>',
    help: 'a query returning more points fails with RESOURCE_EXHAUSTED',
    min: 1,
  },
  {
    key: 'query-concurrency',
    kind: 'count',
    default: '16',
    group: 'engine',
    arg: '<n>',
    help: 'series one query reads in parallel',
    min: 1,
  },
  {
    key: 'block-cache',
    kind: 'size',
    default: '64MiB',
    group: 'engine',
    arg: '<size>',
    help: 'RocksDB block cache of the hot family',
  },
  {
    key: 'result-cache-points',
    kind: 'count',
    default: '1000000',
    group: 'engine',
    arg: '<n>',
    help: 'points of recent query results kept for repeated queries; 0 disables',
  },
  {
    key: 'decoded-cache-points',
    kind: 'count',
    default: '4000000',
    group: 'engine',
    arg: '<n>',
    help: "points of decoded blocks, runs and run summaries kept for repeated reads, each entry's heap included; 0 disables",
  },
  {
    key: 'decode-workers',
    kind: 'count',
    default: '1',
    group: 'engine',
    arg: '<n>',
    help: 'worker threads that decode cold runs for long reads; 0 decodes on the event loop',
  },
  {
    key: 'worker-decode-min-runs',
    kind: 'count',
    default: '48',
    group: 'engine',
    arg: '<n>',
    help: 'a series read spanning at least this many one-hour runs is decoded in a worker',
    min: 1,
  },
  {
    key: 'max-series-per-write',
    kind: 'count',
    default: '10000',
    group: 'limits',
    arg: '<n>',
    help: 'series entries in one write',
    min: 1,
  },
  {
    key: 'max-points-per-write',
    kind: 'count',
    default: '1000000',
    group: 'limits',
    arg: '<n>',
    help: 'points in one write',
    min: 1,
  },
  {
    key: 'max-tags-per-series',
    kind: 'count',
    default: '64',
    group: 'limits',
    arg: '<n>',
    help: 'tags of one series',
    min: 1,
  },
  {
    key: 'max-tag-value-bytes',
    kind: 'count',
    default: '1024',
    group: 'limits',
    arg: '<n>',
    help: 'UTF-8 bytes of a tag value',
    min: 1,
  },
  {
    key: 'max-name-bytes',
    kind: 'count',
    default: '256',
    group: 'limits',
    arg: '<n>',
    help: 'UTF-8 bytes of a metric name or tag key',
    min: 1,
  },
  {
    key: 'allow-nan',
    kind: 'bool',
    default: false,
    group: 'limits',
    help: 'store NaN values (staleness markers); refused by default',
  },
]

const SPECS = new Map(SERVE_OPTIONS.map((s) => [s.key, s]))

/**
 * Environment variables that are not options: V3_CONFIG names the file, and the client commands and
 * the benchmark read the others. The schema check leaves them alone.
 */
const FOREIGN_ENV = /^V3_(BENCH_|CONFIG$|SERVER$|TOKEN$)/

export type OptionValue = string | number | boolean | readonly string[]

/** Where the value of an option came from, for messages and --print-config. */
export type Source = 'default' | 'file' | 'env' | 'flag'

export interface ResolvedOption {
  /** Parsed: milliseconds, bytes, counts, booleans, lists; undefined when unset. */
  readonly value: OptionValue | undefined
  /** As written (or the default), so that --print-config can be loaded again as a file. */
  readonly text: string | boolean | readonly string[] | null
  readonly source: Source
}

export type ResolvedConfig = ReadonlyMap<string, ResolvedOption>

export function envName(key: string): string {
  return `V3_${key.toUpperCase().replaceAll('-', '_')}`
}

function where(source: Source, key: string, file?: string): string {
  switch (source) {
    case 'flag':
      return `--${key}`
    case 'env':
      return envName(key)
    case 'file':
      return `${key} in ${file ?? 'the config file'}`
    case 'default':
      return `the default of ${key}`
  }
}

/** Parses one raw value of an option; `label` names it in the error. */
function parseValue(spec: OptionSpec, raw: unknown, label: string): OptionValue {
  const fail = (expected: string): never => {
    throw new UsageError(`${label} must be ${expected}, got ${JSON.stringify(raw)}`)
  }
  const kind = spec.kind
  if (kind === 'bool') {
    if (typeof raw === 'boolean') return raw
    if (raw === 'true' || raw === '1') return true
    if (raw === 'false' || raw === '0') return false
    return fail('true or false')
  }
  if (kind === 'list') {
    if (Array.isArray(raw) && raw.every((x) => typeof x === 'string')) return raw as string[]
    if (typeof raw === 'string')
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '')
    return fail('a list of strings')
  }
  // Numbers in a file are accepted where a number makes sense: milliseconds, bytes, counts.
  if (typeof raw === 'number' && (kind === 'duration' || kind === 'size' || kind === 'count')) raw = String(raw)
  if (typeof raw !== 'string') return fail('a string')
  const text = raw
  // The helpers name the flag; rewrap their message so that it names the actual source.
  const rename = <T>(parse: () => T): T => {
    try {
      return parse()
    } catch (err) {
      if (err instanceof UsageError) throw new UsageError(err.message.replace(/^--\S+/, label))
      throw err
    }
  }
  switch (kind) {
    case 'string':
      // An empty path or name means nothing; a token may be empty (no token).
      if (text === '' && spec.key !== 'consul-token') return fail('a non-empty string')
      return text
    case 'listen':
      return rename(() => parseListen(text))
    case 'listen-or-off':
      if (text === 'off') return text
      try {
        return parseListen(text)
      } catch {
        return fail('host:port or off')
      }
    case 'duration':
      return inRange(
        spec,
        rename(() => parseDuration(spec.key, text)),
        label,
        text,
      )
    case 'size':
      return inRange(
        spec,
        rename(() => parseSize(spec.key, text)),
        label,
        text,
      )
    case 'count':
      return inRange(
        spec,
        rename(() => parseCount(spec.key, text)),
        label,
        text,
      )
    default:
      if (!kind.oneOf.includes(text)) return fail(`one of ${kind.oneOf.join(', ')}`)
      return text
  }
}

/** Checks a parsed number against the option's min and max; the message names the source. */
function inRange(spec: OptionSpec, value: number, label: string, text: string): number {
  const { min, max } = spec
  if ((min === undefined || value >= min) && (max === undefined || value <= max)) return value
  const unit = (n: number | undefined): string =>
    spec.kind === 'duration' ? `${n} ms` : spec.kind === 'size' ? `${n} ${n === 1 ? 'byte' : 'bytes'}` : `${n}`
  const range =
    max === undefined
      ? `at least ${unit(min)}`
      : min === undefined
        ? `at most ${unit(max)}`
        : `from ${min} to ${unit(max)}`
  throw new UsageError(`${label} must be ${range}, got ${JSON.stringify(text)}`)
}

function textOf(raw: unknown): string | boolean | readonly string[] {
  if (typeof raw === 'boolean' || Array.isArray(raw)) return raw as boolean | string[]
  return String(raw)
}

/**
 * The YAML parser, loaded when a config file is read or the configuration printed: a server started
 * with flags and variables alone never loads it.
 */
function yaml(): typeof import('yaml') {
  return createRequire(import.meta.url)('yaml') as typeof import('yaml')
}

/** Reads a config file: YAML (JSON is YAML too), a mapping of option keys to values. */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new UsageError(`cannot read the config file ${path}: ${(err as Error).message}`)
  }
  let doc: unknown
  try {
    doc = yaml().parse(text)
  } catch (err) {
    throw new UsageError(`cannot parse the config file ${path}: ${(err as Error).message}`)
  }
  if (doc === null || doc === undefined) return {}
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new UsageError(`the config file ${path} must hold a mapping of option names to values`)
  }
  return doc as Record<string, unknown>
}

export interface ConfigSources {
  /** Parsed config file, with the path for messages. */
  readonly file?: { readonly path: string; readonly values: Record<string, unknown> }
  readonly env: Readonly<Record<string, string | undefined>>
  /** Flags as parseArgs returned them (strings, booleans), keyed by option key. */
  readonly flags: Readonly<Record<string, string | boolean | undefined>>
}

/**
 * Merges the sources over the defaults: a flag beats the environment, which beats the file. Throws
 * UsageError for an unknown key in the file and for any bad value, naming it. Unknown `V3_`
 * variables are left alone here: unknownEnvWarnings names them.
 */
export function resolveConfig(sources: ConfigSources): ResolvedConfig {
  const fileValues = sources.file?.values ?? {}
  for (const key of Object.keys(fileValues)) {
    if (!SPECS.has(key)) {
      throw new UsageError(`unknown option ${JSON.stringify(key)} in ${sources.file?.path}; ${suggest(key)}`)
    }
  }
  const out = new Map<string, ResolvedOption>()
  for (const spec of SERVE_OPTIONS) {
    const candidates: Array<[Source, unknown]> = [
      ['flag', sources.flags[spec.key]],
      ['env', sources.env[envName(spec.key)]],
      ['file', fileValues[spec.key]],
    ]
    const found = candidates.find(([, raw]) => raw !== undefined && raw !== null)
    if (found === undefined) {
      const def = spec.default
      out.set(spec.key, {
        value: def === null ? undefined : parseValue(spec, def, where('default', spec.key)),
        text: def,
        source: 'default',
      })
      continue
    }
    const [source, raw] = found
    out.set(spec.key, {
      value: parseValue(spec, raw, where(source, spec.key, sources.file?.path)),
      text: textOf(raw),
      source,
    })
  }
  return out
}

/**
 * One warning for each `V3_` variable that is no option, naming the nearest option or saying that
 * none is similar. They warn rather than stop the start because the environment is not only the
 * user's: Kubernetes injects V3_PORT, V3_SERVICE_HOST and more into every pod when a Service is
 * named v3, and wrapper scripts set their own (etcd warns about unknown ETCD_ variables in the same
 * way).
 */
export function unknownEnvWarnings(env: Readonly<Record<string, string | undefined>>): string[] {
  const known = new Set(SERVE_OPTIONS.map((s) => envName(s.key)))
  const warnings: string[] = []
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('V3_') || FOREIGN_ENV.test(name) || known.has(name)) continue
    const near = nearestOption(name.slice(3).toLowerCase().replaceAll('_', '-'))
    const hint = near === undefined ? 'no similar option' : `the nearest option is ${envName(near)} (--${near})`
    warnings.push(`ignoring unknown environment variable ${name}; ${hint}`)
  }
  return warnings
}

/**
 * Words that name an option without resembling its key: what Kubernetes (V3_PORT, V3_SERVICE_HOST)
 * and hand-written scripts tend to mean by them.
 */
const OPTION_WORDS: Readonly<Record<string, string>> = { port: 'listen', host: 'listen', addr: 'listen', dir: 'data' }

/**
 * The option `text` most likely means: one named by a word of it, else the key with the smallest
 * edit distance (the first in schema order on a tie), or undefined when even that one is far.
 */
function nearestOption(text: string): string | undefined {
  for (const word of text.split('-')) {
    const named = OPTION_WORDS[word]
    if (named !== undefined) return named
  }
  let best: string | undefined
  let bestDistance = Number.POSITIVE_INFINITY
  for (const spec of SERVE_OPTIONS) {
    const d = editDistance(text, spec.key)
    if (d < bestDistance) {
      best = spec.key
      bestDistance = d
    }
  }
  // A third of the name (at least 2) covers typos, a doubled or dropped word ending and `_` for
  // `-`; past it every short name is "near" some option, and the suggestion would only mislead.
  return bestDistance <= Math.max(2, Math.floor(text.length / 3)) ? best : undefined
}

/** Levenshtein distance, with one row of the table kept. */
function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0] as number
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const above = row[j] as number
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      row[j] = Math.min(above + 1, (row[j - 1] as number) + 1, diagonal + cost)
      diagonal = above
    }
  }
  return row[b.length] as number
}

function suggest(key: string): string {
  const near = SERVE_OPTIONS.find((s) => s.key.replaceAll('-', '') === key.toLowerCase().replaceAll(/[-_]/g, ''))
  return near ? `did you mean ${near.key}?` : 'v3 serve --help lists the options'
}

/** The effective configuration as YAML, loadable again with --config; each line says where it came from. */
export function printConfig(config: ResolvedConfig): string {
  const lines: string[] = []
  const { stringify } = yaml()
  for (const spec of SERVE_OPTIONS) {
    const option = config.get(spec.key)
    if (option === undefined) continue
    // Plain numbers print as numbers: a file takes them for milliseconds, bytes or counts alike. A
    // switch prints as true or false, whichever way it was given (V3_ALLOW_NAN=1).
    const text =
      spec.kind === 'bool'
        ? option.value === true
        : typeof option.text === 'string' && /^\d+$/.test(option.text)
          ? Number(option.text)
          : option.text
    lines.push(`${stringify({ [spec.key]: text }).trimEnd()}  # ${option.source}`)
  }
  return `${lines.join('\n')}\n`
}

/** The parseArgs option table of the schema, plus the flags that only exist on the command line. */
export function flagTable(): Record<string, { type: 'string' | 'boolean'; short?: string }> {
  const table: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
    config: { type: 'string' },
    'print-config': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  }
  for (const spec of SERVE_OPTIONS) table[spec.key] = { type: spec.kind === 'bool' ? 'boolean' : 'string' }
  return table
}

const GROUP_TITLES: Readonly<Record<OptionSpec['group'], string>> = {
  server: 'Server',
  cluster: 'Cluster (with --cluster)',
  security: 'Security',
  observability: 'Metrics and logs',
  engine: 'Engine',
  limits: 'Write limits (INVALID_ARGUMENT or RESOURCE_EXHAUSTED beyond them)',
}

/** The option part of `v3 serve --help`, generated so that it cannot drift from the schema. */
export function optionsHelp(): string {
  const out: string[] = []
  for (const group of Object.keys(GROUP_TITLES) as Array<OptionSpec['group']>) {
    out.push(`${GROUP_TITLES[group]}:`)
    for (const spec of SERVE_OPTIONS.filter((s) => s.group === group)) {
      const left = `  --${spec.key}${spec.arg ? ` ${spec.arg}` : ''}`
      const def = spec.default === null || spec.default === false ? '' : ` (default ${String(spec.default)})`
      out.push(`${left.padEnd(40)} ${spec.help}${def}`)
    }
    out.push('')
  }
  return out.join('\n')
}
