/**
 * Bearer-token authentication and role-based authorization, as a grpc-js server interceptor.
 * Tokens come from a file of `<role>:<token>` lines; the server keeps only their SHA-256 digests,
 * so a token never sits in a config object that might be logged, and compares digests in constant
 * time.
 */

import { createHash, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import {
  type Metadata,
  ResponderBuilder,
  ServerInterceptingCall,
  type ServerInterceptor,
  ServerListenerBuilder,
  status,
} from '@grpc/grpc-js'

/** Roles in increasing order of power: each can do everything the ones before it can. */
export const ROLES = ['read', 'write', 'admin'] as const
export type Role = (typeof ROLES)[number]

/** What a method needs: open (no token at all) or a least role. */
export type Requirement = 'open' | Role

interface TokenEntry {
  readonly digest: Buffer
  readonly role: Role
}

/** The tokens a server accepts, by digest. Deliberately holds no token text. */
export interface TokenTable {
  readonly entries: readonly TokenEntry[]
}

/**
 * Visible ASCII only: a token travels in an HTTP/2 header value, and whitespace at either end
 * would be trimmed by some clients and proxies, making a token that matches nothing.
 */
const TOKEN_RE = /^[\x21-\x7e]+$/

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest()
}

/**
 * Parses a tokens file. Every problem names the file and line number but never echoes the line,
 * since the line holds a secret.
 */
export function parseTokens(text: string, source: string): TokenTable {
  const entries: TokenEntry[] = []
  const lines = text.split(/\r?\n/)
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const where = `${source} line ${index + 1}`
    const colon = line.indexOf(':')
    const role = line.slice(0, colon)
    const token = line.slice(colon + 1)
    if (colon < 0 || !(ROLES as readonly string[]).includes(role)) {
      throw new Error(`${where}: expected <role>:<token> with role read, write or admin`)
    }
    if (!TOKEN_RE.test(token)) {
      throw new Error(`${where}: the token must be non-empty visible ASCII without spaces`)
    }
    const d = digest(token)
    if (entries.some((e) => e.digest.equals(d))) {
      throw new Error(`${where}: this token is listed before; give each token one role`)
    }
    entries.push({ digest: d, role: role as Role })
  }
  if (entries.length === 0) throw new Error(`${source} holds no tokens; every call would be refused`)
  return { entries }
}

export async function loadTokens(path: string): Promise<TokenTable> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    throw new Error(`cannot read tokens file ${path}: ${reason}`, { cause: err })
  }
  return parseTokens(text, `tokens file ${path}`)
}

/**
 * The role a token grants, or undefined. Every entry is compared, match or not, so the time taken
 * tells nothing about which entry or how many bytes matched; digests have equal length, which
 * timingSafeEqual requires.
 */
export function roleOf(table: TokenTable, token: string): Role | undefined {
  const d = digest(token)
  let found: Role | undefined
  for (const entry of table.entries) {
    if (timingSafeEqual(entry.digest, d)) found = entry.role
  }
  return found
}

const OPEN_SERVICES = new Set([
  'grpc.health.v1.Health',
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
])

/** Methods of a read service that change the cluster's data, and so need admin like Compact. */
const ADMIN_METHODS = new Set(['v3storage.v1.ClusterService/Repair', 'v3storage.v1.ClusterService/Decommission'])
const READ_METHODS = new Set(['v3storage.v1.StreamService/Subscribe'])
const READ_SERVICES = new Set(['v3storage.v1.QueryService', 'v3storage.v1.ClusterService'])
const WRITE_METHODS = new Set(['v3storage.v1.StreamService/Ingest'])
const WRITE_SERVICES = new Set(['v3storage.v1.WriteService'])

/**
 * What calling `path` (`/package.Service/Method`) requires. Anything not listed needs admin, so a
 * method added later is locked down until someone decides who may call it.
 */
export function requirementOf(path: string): Requirement {
  const method = path.startsWith('/') ? path.slice(1) : path
  const service = method.slice(0, method.indexOf('/'))
  if (OPEN_SERVICES.has(service)) return 'open'
  if (ADMIN_METHODS.has(method)) return 'admin'
  if (READ_SERVICES.has(service) || READ_METHODS.has(method)) return 'read'
  if (WRITE_SERVICES.has(service) || WRITE_METHODS.has(method)) return 'write'
  return 'admin'
}

function allows(role: Role, needed: Role): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(needed)
}

/** The refusal for a call's metadata, or undefined when the call may go on. */
export function checkCall(
  table: TokenTable,
  path: string,
  metadata: Metadata,
): { code: status; details: string } | undefined {
  const needed = requirementOf(path)
  if (needed === 'open') return undefined
  const header = metadata.get('authorization')[0]
  const match = typeof header === 'string' ? /^Bearer +(\S+)\s*$/i.exec(header) : null
  if (match?.[1] === undefined) {
    return { code: status.UNAUTHENTICATED, details: 'missing "authorization: Bearer <token>" metadata' }
  }
  const role = roleOf(table, match[1])
  if (role === undefined) return { code: status.UNAUTHENTICATED, details: 'unknown bearer token' }
  if (!allows(role, needed)) {
    return { code: status.PERMISSION_DENIED, details: `${path} needs the ${needed} role; this token has ${role}` }
  }
  return undefined
}

/**
 * Checks the token of every call before its handler sees any of it: a refused call is answered
 * from the metadata alone and its request message is never read. The refusal's status reaches
 * only the interceptors listed before this one (grpc-js wraps each around those before it); those
 * after it see just the stream closing, so an interceptor that records statuses goes before it.
 */
export function authInterceptor(table: TokenTable): ServerInterceptor {
  return (method, call) => {
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const refusal = checkCall(table, method.path, metadata)
        if (refusal === undefined) next(metadata)
        else call.sendStatus(refusal)
      })
      .build()
    const responder = new ResponderBuilder().withStart((next) => next(listener)).build()
    return new ServerInterceptingCall(call, responder)
  }
}
