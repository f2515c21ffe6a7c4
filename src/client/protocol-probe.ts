/**
 * Which protocol a server speaks, asked directly when a connection fails. grpc-js says "Failed to
 * connect" when a plaintext client reaches a TLS port (the server hangs up on it), and dumps
 * OpenSSL's "ssl3_get_record:wrong version number" when a TLS client reaches a plaintext one; a
 * second, bare connection in the other protocol tells these apart from every other failure.
 */
import { isIP, type Socket, connect as tcpConnect } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import type { TlsSettingNames } from './tls-files.js'

/** The client preface of HTTP/2 (RFC 9113 §3.4), then an empty SETTINGS frame. */
const HTTP2_PREFACE = Buffer.concat([
  Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'),
  Buffer.from([0, 0, 0, 0x04, 0, 0, 0, 0, 0]),
])
const FRAME_HEADER_BYTES = 9
const SETTINGS_FRAME = 0x04

interface HostPort {
  readonly host: string
  readonly port: number
}

/** host and port of `host:port`, `[v6]:port` or `dns:[//authority/]host:port`; undefined for other targets. */
export function hostPort(address: string): HostPort | undefined {
  const m = /^(?:dns:(?:\/\/[^/]*\/)?)?(?:\[([0-9A-Fa-f:.]+)\]|([^:/[\]]+)):(\d{1,5})$/.exec(address)
  if (m === null) return undefined
  return { host: m[1] ?? m[2] ?? '', port: Number(m[3]) }
}

/** Runs one probe: resolves with what it found, or false once `timeoutMs` passed, and closes its socket. */
function probe(timeoutMs: number, open: (done: (found: boolean) => void) => Socket): Promise<boolean> {
  return new Promise((resolve) => {
    let socket: Socket | undefined
    const done = (found: boolean): void => {
      clearTimeout(timer)
      socket?.destroy()
      resolve(found)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    socket = open(done)
    socket.on('error', () => done(false))
    socket.on('close', () => done(false))
  })
}

/** Whether the server completes a TLS handshake, whatever its certificate. */
export function speaksTls(target: HostPort, timeoutMs: number): Promise<boolean> {
  return probe(timeoutMs, (done) =>
    tlsConnect(
      {
        host: target.host,
        port: target.port,
        // Only the protocol is in question here: the real connection checks the certificate.
        rejectUnauthorized: false,
        ALPNProtocols: ['h2'],
        // Node warns when the server name is an IP address, which SNI does not allow.
        ...(isIP(target.host) === 0 ? { servername: target.host } : {}),
      },
      () => done(true),
    ),
  )
}

/** Whether the server answers the plaintext HTTP/2 preface with a SETTINGS frame, as a gRPC server does. */
export function speaksPlaintextHttp2(target: HostPort, timeoutMs: number): Promise<boolean> {
  return probe(timeoutMs, (done) => {
    let received = Buffer.alloc(0)
    const socket = tcpConnect({ host: target.host, port: target.port }, () => socket.write(HTTP2_PREFACE))
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk])
      if (received.length >= FRAME_HEADER_BYTES) done(received[3] === SETTINGS_FRAME)
    })
    return socket
  })
}

function listOf(items: readonly string[]): string {
  return items.length <= 1 ? items.join('') : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`
}

/**
 * Why a connection to `address` failed when the server speaks the other protocol: a plaintext
 * client at a TLS port, or a TLS client at a plaintext one. Undefined when it does not, or when
 * the probe could not tell (a refused connection, a server that says nothing).
 */
export async function tlsMismatch(
  address: string,
  tls: { readonly caFile?: string; readonly certFile?: string; readonly keyFile?: string } | undefined,
  names: TlsSettingNames,
  timeoutMs: number,
): Promise<string | undefined> {
  const target = hostPort(address)
  if (target === undefined) return undefined
  if (tls === undefined) {
    if (!(await speaksTls(target, timeoutMs))) return undefined
    return `the server at ${address} requires TLS (give ${names.caFile})`
  }
  if (!(await speaksPlaintextHttp2(target, timeoutMs))) return undefined
  const given = (['caFile', 'certFile', 'keyFile'] as const).filter((s) => tls[s] !== undefined).map((s) => names[s])
  const drop = given.length === 0 ? 'connect without TLS' : `drop ${listOf(given)}`
  return `the server at ${address} does not speak TLS (${drop}, or point at its TLS port)`
}
