import { hostname } from 'node:os'
import { Server, ServerCredentials, type ServerInterceptor } from '@grpc/grpc-js'
import { AdminServiceService } from '../../gen/v3storage/v1/admin_service.js'
import { ClusterServiceService } from '../../gen/v3storage/v1/cluster_service.js'
import { StreamServiceService } from '../../gen/v3storage/v1/stream_service.js'
import type { StorageEngine } from '../engine/storage-engine.js'
import { adminServiceHandlers } from './admin-service.js'
import { clusterServiceHandlers } from './cluster-service.js'
import type { ServerLogger } from './errors.js'
import { addIntrospection } from './introspection.js'
import { queryServiceDefinition, queryServiceHandlers } from './query-service.js'
import { streamServiceHandlers } from './stream-service.js'
import { writeServiceDefinition, writeServiceHandlers } from './write-service.js'

export const SERVER_DEFAULTS = {
  listen: '127.0.0.1:50051',
  maxMessageBytes: 16 * 1024 * 1024,
  streamChunkBytes: 1024 * 1024,
  shutdownTimeoutMs: 10_000,
} as const

/** The smallest QueryStream message budget: room for a series with its longest allowed tags and a point. */
const MIN_STREAM_CHUNK_BYTES = 4096

export interface ServerOptions {
  /** The engine to serve; the caller opens it before and closes it after the server. */
  readonly engine: StorageEngine
  /** host:port to listen on; port 0 picks a free port. Default 127.0.0.1:50051. */
  readonly listen?: string
  /** This node's id in ClusterService answers. Default `<hostname>:<port>`. */
  readonly nodeId?: string
  /**
   * The largest message received or sent, in bytes. Default 16 MiB. A larger request, or a unary
   * response larger than this, fails with RESOURCE_EXHAUSTED; QueryStream stays under it.
   */
  readonly maxMessageBytes?: number
  /** Upper bound of one QueryStream message, in bytes; clamped to maxMessageBytes. Default 1 MiB. */
  readonly streamChunkBytes?: number
  /** How long close() lets in-flight calls finish before cancelling them, in ms. Default 10 s. */
  readonly shutdownTimeoutMs?: number
  /** Where unexpected errors and shutdown notes go. Default console. */
  readonly logger?: ServerLogger
  /** grpc-js server interceptors run around every call, in order (metrics, request logging). */
  readonly interceptors?: readonly ServerInterceptor[]
}

export interface RunningServer {
  /** The port bound, useful with port 0. */
  readonly port: number
  /** host:port as clients reach it. */
  readonly address: string
  /**
   * Stops accepting calls, reports NOT_SERVING, lets in-flight calls finish for up to
   * shutdownTimeoutMs and then cancels the rest. Does not close the engine.
   */
  close(): Promise<void>
}

const consoleLogger: ServerLogger = {
  info: (obj, msg) => console.error(msg ?? '', obj),
  error: (obj, msg) => console.error(msg ?? '', obj),
}

/** Splits host:port, where host may be a bracketed IPv6 address. */
function splitHostPort(listen: string): { host: string; port: number } {
  const colon = listen.lastIndexOf(':')
  const host = listen.slice(0, colon)
  const port = Number(listen.slice(colon + 1))
  if (colon <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`listen must be host:port, got ${JSON.stringify(listen)}`)
  }
  return { host, port }
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0)
    throw new RangeError(`${name} must be a positive integer, got ${value}`)
  return value
}

function bind(server: Server, listen: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(listen, ServerCredentials.createInsecure(), (err, port) => {
      if (err) reject(new Error(`cannot listen on ${listen}: ${err.message}`, { cause: err }))
      else resolve(port)
    })
  })
}

/** Starts the gRPC server over an open engine and resolves once it is serving. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const listen = options.listen ?? SERVER_DEFAULTS.listen
  const { host } = splitHostPort(listen)
  const maxMessageBytes = positiveInteger('maxMessageBytes', options.maxMessageBytes ?? SERVER_DEFAULTS.maxMessageBytes)
  const streamChunkBytes = Math.min(
    positiveInteger('streamChunkBytes', options.streamChunkBytes ?? SERVER_DEFAULTS.streamChunkBytes),
    maxMessageBytes,
  )
  if (streamChunkBytes < MIN_STREAM_CHUNK_BYTES) {
    throw new RangeError(`streamChunkBytes and maxMessageBytes must be at least ${MIN_STREAM_CHUNK_BYTES}`)
  }
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? SERVER_DEFAULTS.shutdownTimeoutMs
  const logger = options.logger ?? consoleLogger

  const server = new Server({
    'grpc.max_receive_message_length': maxMessageBytes,
    'grpc.max_send_message_length': maxMessageBytes,
    interceptors: [...(options.interceptors ?? [])],
  })
  // Set once bound: the port is known only then when listen asks for port 0.
  const identity = { id: options.nodeId ?? '', address: listen }
  const deps = { engine: options.engine, logger }
  server.addService(writeServiceDefinition, writeServiceHandlers(deps))
  server.addService(queryServiceDefinition, queryServiceHandlers({ ...deps, streamChunkBytes }))
  server.addService(StreamServiceService, streamServiceHandlers())
  server.addService(ClusterServiceService, clusterServiceHandlers({ ...deps, identity: () => identity }))
  server.addService(AdminServiceService, adminServiceHandlers(deps))
  const health = addIntrospection(server, [
    'v3storage.v1.WriteService',
    'v3storage.v1.QueryService',
    'v3storage.v1.StreamService',
    'v3storage.v1.ClusterService',
    'v3storage.v1.AdminService',
  ])

  const port = await bind(server, listen)
  identity.address = `${host}:${port}`
  if (identity.id === '') identity.id = `${hostname()}:${port}`

  let closing: Promise<void> | undefined
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      health.setServing(false)
      const timer = setTimeout(() => {
        logger.info({ shutdownTimeoutMs }, 'in-flight calls did not finish in time; cancelling them')
        server.forceShutdown()
        resolve()
      }, shutdownTimeoutMs)
      server.tryShutdown(() => {
        clearTimeout(timer)
        resolve()
      })
    })
    return closing
  }
  return { port, address: identity.address, close }
}
