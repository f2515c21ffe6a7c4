/**
 * How the server meets the network: HTTP/2 settings (keepalive, concurrent streams) and the rule
 * that decides whether an address may be served without TLS and tokens.
 */

import { createServer } from 'node:net'
import type { ServerOptions as GrpcServerOptions } from '@grpc/grpc-js'

export const TRANSPORT_DEFAULTS = {
  /**
   * Five minutes between keepalive pings on an idle connection: often enough to notice a client
   * that vanished without closing (a Subscribe stream would otherwise hold its resources for the
   * two hours of TCP's own keepalive), rare enough to cost nothing.
   */
  keepaliveTimeMs: 5 * 60_000,
  /** A ping unanswered this long closes the connection and cancels its calls. */
  keepaliveTimeoutMs: 20_000,
  /**
   * Calls one connection may have open at once. HTTP/2's default is unbounded; a bound keeps one
   * client from holding unlimited handler memory. Well above what a pooled client needs.
   */
  maxConcurrentStreams: 1000,
} as const

export interface TransportOptions {
  /** Idle time after which the server pings a connection, in ms. Default 5 min. */
  readonly keepaliveTimeMs?: number
  /** How long a ping may go unanswered before the connection is closed, in ms. Default 20 s. */
  readonly keepaliveTimeoutMs?: number
  /** Calls open at once on one connection; more wait for a free slot. Default 1000. */
  readonly maxConcurrentStreams?: number
}

/** Splits host:port, where host may be a bracketed IPv6 address (kept with its brackets). */
export function splitHostPort(listen: string): { host: string; port: number } {
  const colon = listen.lastIndexOf(':')
  const host = listen.slice(0, colon)
  const port = Number(listen.slice(colon + 1))
  if (colon <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`listen must be host:port, got ${JSON.stringify(listen)}`)
  }
  return { host, port }
}

/**
 * Refuses an address that another process listens on, or that cannot be bound, before the engine
 * opens its data folder: a plain TCP listener is bound there and closed again. Port 0 always binds.
 * A process that takes the port in between is still caught when the server itself binds.
 */
export async function checkCanListen(listen: string, what: string): Promise<void> {
  const { host, port } = splitHostPort(listen)
  if (port === 0) return
  await new Promise<void>((resolve, reject) => {
    const probe = createServer()
    probe.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'another process listens there' : err.message
      reject(new Error(`cannot listen on ${listen} for ${what}: ${why}`, { cause: err }))
    })
    const bare = host.startsWith('[') ? host.slice(1, -1) : host
    probe.listen({ host: bare, port, exclusive: true }, () => probe.close(() => resolve()))
  })
}

export function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`)
  }
  return value
}

/** grpc-js server options for the transport settings, defaults filled in. */
export function transportChannelOptions(options: TransportOptions): GrpcServerOptions {
  return {
    'grpc.keepalive_time_ms': positive(
      'keepaliveTimeMs',
      options.keepaliveTimeMs ?? TRANSPORT_DEFAULTS.keepaliveTimeMs,
    ),
    'grpc.keepalive_timeout_ms': positive(
      'keepaliveTimeoutMs',
      options.keepaliveTimeoutMs ?? TRANSPORT_DEFAULTS.keepaliveTimeoutMs,
    ),
    'grpc.max_concurrent_streams': positive(
      'maxConcurrentStreams',
      options.maxConcurrentStreams ?? TRANSPORT_DEFAULTS.maxConcurrentStreams,
    ),
  }
}

/** True for addresses only this machine can reach: localhost, 127.0.0.0/8 and ::1. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1')
  return h === 'localhost' || h === '::1' || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)
}

export interface Exposure {
  readonly host: string
  readonly listen: string
  readonly tls: boolean
  readonly tokens: boolean
  readonly insecure: boolean
}

/**
 * Refuses to serve a reachable address without both TLS and tokens unless told to (insecure):
 * a storage node on 0.0.0.0 by mistake would otherwise hand every series to anyone on the network.
 * Returns the warning to log when the insecure escape hatch is what lets the start go on.
 */
export function checkExposure(e: Exposure): string | undefined {
  if (isLoopbackHost(e.host) || (e.tls && e.tokens)) return undefined
  const missing = [
    ...(e.tls ? [] : ['TLS (--tls-cert and --tls-key)']),
    ...(e.tokens ? [] : ['bearer tokens (--tokens-file)']),
  ]
  if (!e.insecure) {
    throw new Error(
      `refusing to serve ${e.listen} without ${missing.join(' and ')}: it is not a loopback address; ` +
        `add ${missing.join(' and ')}, or pass --insecure to serve it anyway`,
    )
  }
  return `serving ${e.listen} without ${missing.join(' and ')} because --insecure was given`
}

/**
 * Refuses to serve peers (ZeroMQ) on a reachable host without the cluster's peer key unless told to
 * (insecure): whoever reaches that port could read, write and delete data. `where` names the
 * address in messages. Returns the warning to log when the insecure escape hatch lets the start go on.
 */
export function checkPeerExposure(host: string, where: string, keyed: boolean, insecure: boolean): string | undefined {
  if (keyed || isLoopbackHost(host)) return undefined
  if (!insecure) {
    throw new Error(
      `refusing to serve peers (--peer-listen) on ${where} without a peer key: it is not a loopback address, and ` +
        'whoever reaches it could read, write and delete data; add --peer-key <file> (`v3 cluster peer-key` writes one), ' +
        'or pass --insecure to serve it anyway',
    )
  }
  return `serving peers on ${where} without a peer key because --insecure was given`
}
