/** What the client commands (import, export, query, series, stats, migrate) share: flags and the connection. */
import { parseArgs } from 'node:util'
import { status, TlsFileError, V3Client, V3ClientError, type V3ClientOptions } from '../client/index.js'
import type { ConsistencyLevel } from '../model/types.js'
import { parseDuration, UsageError } from './args.js'

export const CONNECTION_FLAGS = {
  server: { type: 'string' },
  token: { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'connect-timeout': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

export const CONNECTION_USAGE = `Connection:
  --server <host:port>     the node to talk to (default $V3_SERVER or 127.0.0.1:50051)
  --token <token>          bearer token (default $V3_TOKEN); prefer the variable, flags show in ps
  --tls-ca <path>          connect with TLS, trusting this PEM CA (the system's roots when only
                           --tls-cert/--tls-key are given)
  --tls-cert <path>        client certificate for mutual TLS, with --tls-key
  --tls-key <path>         the private key of --tls-cert
  --connect-timeout <duration>
                           give up when the node neither answers nor refuses within it
                           (default 10s); a refused connection fails at once
`

/** The flag of the commands that write or read: the consistency level their calls ask for. */
export const CONSISTENCY_FLAG = { consistency: { type: 'string' } } as const

/** --consistency in the help of a command that writes. */
export const WRITE_CONSISTENCY_USAGE = `  --consistency one|quorum|all
                           how many owners of each series must have a batch durable before it
                           is acknowledged (default: the server's --write-consistency, quorum)
`

/** --consistency in the help of a command that reads. */
export const READ_CONSISTENCY_USAGE = `  --consistency one|quorum|all
                           how many owners of each series are asked, their answers merged
                           (default one)
`

const CONSISTENCY_LEVELS: readonly ConsistencyLevel[] = ['one', 'quorum', 'all']

/** The level --consistency asks for; undefined when the flag is absent, leaving it to the server. */
export function consistencyFlag(values: FlagValues): ConsistencyLevel | undefined {
  const text = stringFlag(values, 'consistency')
  if (text === undefined) return undefined
  if (!(CONSISTENCY_LEVELS as readonly string[]).includes(text)) {
    throw new UsageError(`--consistency must be one, quorum or all, got ${JSON.stringify(text)}`)
  }
  return text as ConsistencyLevel
}

type FlagSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>
export type FlagValues = Record<string, string | boolean | string[] | undefined>

/**
 * parseArgs with usage errors, positionals allowed. A value flag followed by a dash and a digit
 * takes it as its value (`--start -2h`, `--end -5`): parseArgs would refuse it as ambiguous, and no
 * flag starts with a digit.
 */
export function parseCommandArgs(
  args: readonly string[],
  flags: FlagSpec,
): { values: FlagValues; positionals: string[] } {
  const options: FlagSpec = { ...CONNECTION_FLAGS, ...flags }
  try {
    const { values, positionals } = parseArgs({
      args: joinNegativeValues(args, options),
      options,
      strict: true,
      allowPositionals: true,
    })
    return { values: values as FlagValues, positionals }
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err))
  }
}

/** `args` with each value flag and a following `-<digit>…` argument joined as `--flag=-<digit>…`. */
function joinNegativeValues(args: readonly string[], options: FlagSpec): string[] {
  const out: string[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string
    const next = args[i + 1]
    const name = arg.startsWith('--') ? arg.slice(2) : undefined
    if (name !== undefined && options[name]?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`${arg}=${next}`)
      i++
    } else out.push(arg)
  }
  return out
}

export function stringFlag(values: FlagValues, name: string): string | undefined {
  const v = values[name]
  return typeof v === 'string' ? v : undefined
}

/** The client options of the connection flags and variables; the token never leaves this object. */
export function clientOptions(values: FlagValues, env: Readonly<Record<string, string | undefined>>): V3ClientOptions {
  const token = stringFlag(values, 'token') ?? env.V3_TOKEN
  const caFile = stringFlag(values, 'tls-ca')
  const certFile = stringFlag(values, 'tls-cert')
  const keyFile = stringFlag(values, 'tls-key')
  if ((certFile === undefined) !== (keyFile === undefined)) throw new UsageError('--tls-cert and --tls-key go together')
  const tls = caFile === undefined && certFile === undefined ? undefined : { caFile, certFile, keyFile }
  return { ...(token === undefined ? {} : { token }), ...(tls === undefined ? {} : { tls }) }
}

/** host:port, the host a name, an IPv4 address or a bracketed IPv6 one. */
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/
/** gRPC's own target forms (unix:/path, dns:///host:port, …), passed on as they are. */
const GRPC_TARGET = /^(unix|unix-abstract|dns|ipv4|ipv6):/

/** The node to talk to: --server, else $V3_SERVER, else the default; a malformed one is a usage error. */
export function serverAddress(values: FlagValues, env: Readonly<Record<string, string | undefined>>): string {
  const flag = stringFlag(values, 'server')
  const [source, address] =
    flag !== undefined
      ? ['--server', flag]
      : env.V3_SERVER !== undefined
        ? ['V3_SERVER', env.V3_SERVER]
        : ['', '127.0.0.1:50051']
  return checkServerAddress(source, address)
}

/** `address` when it is host:port (port 1 to 65535) or a gRPC target; a usage error naming `source` otherwise. */
export function checkServerAddress(source: string, address: string): string {
  if (GRPC_TARGET.test(address)) return address
  const port = Number(HOST_PORT.exec(address)?.[2] ?? Number.NaN)
  if (!(port >= 1 && port <= 65_535)) {
    throw new UsageError(`${source} must be host:port with a port from 1 to 65535, got ${JSON.stringify(address)}`)
  }
  return address
}

/**
 * A client of the node the flags name, once it has answered (or refused, which the first call then
 * reports): a node that does not answer at all (a stopped process, a port that speaks something
 * else) ends the command after --connect-timeout instead of holding it for ever.
 */
export function connect(values: FlagValues): Promise<V3Client> {
  return connectTo(serverAddress(values, process.env), values)
}

const TLS_FLAGS = { caFile: '--tls-ca', certFile: '--tls-cert', keyFile: '--tls-key' } as const

/** As connect, to the node at `address` (v3 migrate's --from and --to). */
export async function connectTo(address: string, values: FlagValues): Promise<V3Client> {
  const timeoutMs = parseDuration('connect-timeout', stringFlag(values, 'connect-timeout') ?? '10s')
  let client: V3Client
  try {
    client = new V3Client(address, { ...clientOptions(values, process.env), tlsSettingNames: TLS_FLAGS })
  } catch (err) {
    // A TLS file that is missing, or is not what its flag needs, is the user's to fix: exit code 2.
    throw err instanceof TlsFileError ? new UsageError(err.message, { cause: err }) : err
  }
  try {
    await client.waitForAnswer(timeoutMs)
  } catch (err) {
    client.close()
    // A server that speaks the other protocol (TLS or plaintext): the client's line names it.
    if (err instanceof V3ClientError && err.code === status.UNAVAILABLE) throw new Error(err.details, { cause: err })
    throw new Error(
      `no answer from ${address} within ${timeoutMs / 1000} s (--connect-timeout): is a v3 node listening there, and running?`,
    )
  }
  return client
}
