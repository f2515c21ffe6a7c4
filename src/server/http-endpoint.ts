/**
 * The monitoring endpoint beside the gRPC port: `/metrics` (Prometheus text format), `/healthz`
 * (the process answers: liveness) and `/readyz` (the engine is open and the gRPC server accepts
 * calls: readiness, 503 before start and while shutting down). Plain node:http, because scrapers
 * and orchestrators speak HTTP/1.1 and need nothing more.
 */
import { createServer, type Server } from 'node:http'
import type { ServerMetrics } from './metrics.js'
import { splitHostPort } from './transport.js'

export interface HttpEndpointOptions {
  /** host:port; port 0 picks a free one. */
  readonly listen: string
  readonly metrics: ServerMetrics
  /** Whether the node serves calls now; /readyz answers 200 only then. */
  readonly ready: () => boolean
  /** Where a failed scrape is logged. */
  readonly logger: { error(obj: object, msg?: string): void }
}

export interface RunningHttpEndpoint {
  /** host:port as bound. */
  readonly address: string
  close(): Promise<void>
}

export async function startHttpEndpoint(options: HttpEndpointOptions): Promise<RunningHttpEndpoint> {
  const { host: bracketed, port } = splitHostPort(options.listen)
  const host = bracketed.replace(/^\[(.*)\]$/, '$1')
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n')
    } else if (path === '/readyz') {
      const ready = options.ready()
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : 'not ready\n')
    } else if (path === '/metrics') {
      options.metrics.render().then(
        (text) => res.writeHead(200, { 'content-type': options.metrics.contentType }).end(text),
        (err: unknown) => {
          options.logger.error({ err }, 'cannot render metrics')
          res.writeHead(503, { 'content-type': 'text/plain' }).end('metrics unavailable\n')
        },
      )
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /readyz\n')
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${options.listen} for HTTP: ${err.message}`)))
    server.listen(port, host, resolve)
  })
  const bound = server.address()
  const boundPort = typeof bound === 'object' && bound !== null ? bound.port : port
  const address = `${host.includes(':') ? `[${host}]` : host}:${boundPort}`
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        // Scrapers keep connections alive; without this close() would wait for them to time out.
        server.closeAllConnections()
      }),
  }
}
