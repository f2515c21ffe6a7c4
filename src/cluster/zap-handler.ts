/**
 * The process's ZAP handler (ZeroMQ's authentication protocol, RFC 27): ZeroMQ asks it about each
 * new connection to a socket that has a ZAP domain, and it accepts a CURVE connection only when the
 * client's public key is the one registered for that domain: the cluster's (peer-key.ts). A
 * client can present that key only with its secret key, which the CURVE handshake proves.
 */
import { Router } from 'zeromq'

/** ZeroMQ's fixed address of the ZAP handler in a process (its context). */
const ZAP_ENDPOINT = 'inproc://zeromq.zap.01'

/**
 * The process's ZAP handler: ZeroMQ hands it every connection to a socket that has a ZAP domain,
 * and it accepts a CURVE connection whose client key is the public key registered for that domain.
 * Open while a domain is registered: an open socket would keep the process alive.
 */
class ZapHandler {
  private readonly domains = new Map<string, { readonly key: Buffer; readonly refused: (address: string) => void }>()
  /** The handler's socket and its loop, while any domain is registered; each change waits for the one before. */
  private running: { readonly socket: Router; readonly serving: Promise<void> } | undefined
  private changes: Promise<unknown> = Promise.resolve()
  private next = 0

  /**
   * A new domain that accepts `publicBytes`, for one listening socket's `zapDomain`; `refused` hears
   * the address of each connection refused in it.
   */
  register(publicBytes: Buffer, refused: (address: string) => void): Promise<string> {
    const domain = `v3-peers-${++this.next}`
    const change = this.changes.then(async () => {
      if (this.running === undefined) {
        const socket = new Router({ linger: 0 })
        try {
          await socket.bind(ZAP_ENDPOINT)
        } catch (err) {
          socket.close()
          throw err
        }
        this.running = { socket, serving: this.serve(socket) }
      }
      this.domains.set(domain, { key: publicBytes, refused })
      return domain
    })
    this.changes = change.catch(() => undefined)
    return change
  }

  unregister(domain: string): Promise<void> {
    const change = this.changes.then(async () => {
      this.domains.delete(domain)
      if (this.domains.size > 0 || this.running === undefined) return
      const { socket, serving } = this.running
      this.running = undefined
      socket.close()
      await serving
    })
    this.changes = change.catch(() => undefined)
    return change
  }

  /**
   * Answers each request (RFC 27: routing id, empty, version, request id, domain, address, identity,
   * mechanism, credentials) with 200 for the registered key and 400 for anything else.
   */
  private async serve(socket: Router): Promise<void> {
    try {
      for await (const frames of socket) {
        const [from, empty, version, requestId, domain, address, , mechanism, clientKey] = frames
        if (from === undefined || empty === undefined || version === undefined || requestId === undefined) continue
        const wanted = this.domains.get(domain?.toString() ?? '')
        const ok =
          mechanism?.toString() === 'CURVE' &&
          wanted !== undefined &&
          clientKey !== undefined &&
          wanted.key.equals(clientKey)
        if (!ok) wanted?.refused(address?.toString() ?? '')
        await socket.send([
          from,
          empty,
          version,
          requestId,
          ok ? '200' : '400',
          ok ? 'OK' : "not this cluster's key",
          '',
          '',
        ])
      }
    } catch {
      // Closed: the last domain went.
    }
  }
}

export const zapHandler = new ZapHandler()
