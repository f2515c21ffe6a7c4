import { hostname } from 'node:os'
import type { FileRegistry } from '@bufbuild/protobuf'
import { Server, ServerCredentials, type ServerInterceptor } from '@grpc/grpc-js'
import type { PackageDefinition } from '@grpc/proto-loader'
import { AdminServiceService } from '../../gen/v3storage/v1/admin_service.js'
import { ClusterServiceService } from '../../gen/v3storage/v1/cluster_service.js'
import type { StorageEngine } from '../engine/storage-engine.js'
import { EncodedHeaderCache, SeriesHeaderCache } from '../wire/series-codec.js'
import { adminServiceHandlers } from './admin-service.js'
import { authInterceptor, loadTokens } from './auth.js'
import { callStatusInterceptor } from './call-status.js'
import { clusterServiceHandlers } from './cluster-service.js'
import type { ServerLogger } from './errors.js'
import { fullCollector, IdleReclaimer } from './idle-reclaim.js'
import { addIntrospection, loadContract } from './introspection.js'
import { queryServiceDefinition, queryServiceHandlers } from './query-service.js'
import { MAX_RECEIVE_WINDOW_BYTES, raiseReceiveWindow } from './receive-window.js'
import { checkedService, contractRegistry } from './request-check.js'
import { streamService, streamServiceDefinition } from './stream-service.js'
import { type TlsOptions, tlsCredentials } from './tls.js'
import {
  checkCanListen,
  checkExposure,
  positive,
  splitHostPort,
  type TransportOptions,
  transportChannelOptions,
} from './transport.js'
import { writeServiceDefinition, writeServiceHandlers } from './write-service.js'

export { TRANSPORT_DEFAULTS } from './transport.js'

export const SERVER_DEFAULTS = {
  listen: '127.0.0.1:50051',
  maxMessageBytes: 16 * 1024 * 1024,
  receiveWindowBytes: 8 * 1024 * 1024,
  streamChunkBytes: 1024 * 1024,
  shutdownTimeoutMs: 10_000,
} as const

/** The smallest QueryStream message budget: room for a series with its longest allowed tags and a point. */
const MIN_STREAM_CHUNK_BYTES = 4096

export interface ServerOptions extends TransportOptions {
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
  /**
   * The HTTP/2 receive window of each connection and call, in bytes: how much a client may send
   * before the server has read it. Default 8 MiB (HTTP/2's own default is 64 KiB).
   */
  readonly receiveWindowBytes?: number
  /** Upper bound of one QueryStream message, in bytes; clamped to maxMessageBytes. Default 1 MiB. */
  readonly streamChunkBytes?: number
  /** How long close() lets in-flight calls finish before cancelling them, in ms. Default 10 s. */
  readonly shutdownTimeoutMs?: number
  /** Points a Subscribe call may have waiting before it ends with RESOURCE_EXHAUSTED. Default 100,000. */
  readonly subscriberBufferPoints?: number
  /** Where unexpected errors and shutdown notes go. Default console. */
  readonly logger?: ServerLogger
  /**
   * grpc-js server interceptors that observe every call (metrics, request logging), in order. They
   * see each call before authentication does, so they also see a call it refuses, with the status
   * its client gets. A call grpc-js answers itself reaches only their onCancel; callStatusRecord
   * (call-status.ts) tells them its status.
   */
  readonly interceptors?: readonly ServerInterceptor[]
  /**
   * File of `<role>:<token>` lines (roles read, write, admin; `#` comments). When set, every call
   * but health and reflection needs `authorization: Bearer <token>` with a strong enough role.
   * Absent: no authentication, allowed only on a loopback address unless insecure is set.
   */
  readonly tokensFile?: string
  /** Serve TLS with these PEM files (mutual TLS with clientCaFile). Absent: plaintext. */
  readonly tls?: TlsOptions
  /** Serve a non-loopback address without TLS or tokens anyway. Default false: refuse to start. */
  readonly insecure?: boolean
  /**
   * Run a full garbage collection when calls stop after a burst that grew the heap (see
   * idle-reclaim.ts). Default true; false leaves the heap to V8 alone.
   */
  readonly reclaimWhenIdle?: boolean
}

export interface RunningServer {
  /** The port bound, useful with port 0. */
  readonly port: number
  /** host:port as clients reach it. */
  readonly address: string
  /**
   * Stops accepting calls, reports NOT_SERVING, lets in-flight calls finish for up to
   * shutdownTimeoutMs and then cancels the rest. Does not close the engine. grpc-js closes each
   * HTTP/2 session, which sends GOAWAY: clients open no new calls on the connection and reconnect
   * elsewhere, while streams already open run to their end.
   */
  close(): Promise<void>
}

const consoleLogger: ServerLogger = {
  info: (obj, msg) => console.error(msg ?? '', obj),
  error: (obj, msg) => console.error(msg ?? '', obj),
}

function bind(server: Server, listen: string, creds: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(listen, creds, (err, port) => {
      if (err) reject(new Error(`cannot listen on ${listen}: ${err.message}`, { cause: err }))
      else resolve(port)
    })
  })
}

/** Everything startServer takes but the engine and the interceptors, which need the engine. */
export type ServerSettings = Omit<ServerOptions, 'engine' | 'interceptors'>

export interface PreparedServer {
  /**
   * Serves the engine, with these observing interceptors around every call (refused ones too; see
   * ServerOptions.interceptors); resolves once it is serving.
   */
  start(engine: StorageEngine, interceptors?: readonly ServerInterceptor[]): Promise<RunningServer>
}

/**
 * Checks the settings and reads the files they name (tokens, TLS keys) without an engine, so that
 * a start that has to be refused (a bad value, an exposed address, an unreadable file) is refused
 * before the engine opens and locks its data folder.
 */
export async function prepareServer(settings: ServerSettings): Promise<PreparedServer> {
  const listen = settings.listen ?? SERVER_DEFAULTS.listen
  const { host } = splitHostPort(listen)
  const maxMessageBytes = positive('maxMessageBytes', settings.maxMessageBytes ?? SERVER_DEFAULTS.maxMessageBytes)
  const receiveWindowBytes = settings.receiveWindowBytes ?? SERVER_DEFAULTS.receiveWindowBytes
  if (
    !Number.isSafeInteger(receiveWindowBytes) ||
    receiveWindowBytes < 65_535 ||
    receiveWindowBytes > MAX_RECEIVE_WINDOW_BYTES
  ) {
    throw new RangeError(
      `receiveWindowBytes must be from 65535 to ${MAX_RECEIVE_WINDOW_BYTES}, got ${receiveWindowBytes}`,
    )
  }
  const streamChunkBytes = Math.min(
    positive('streamChunkBytes', settings.streamChunkBytes ?? SERVER_DEFAULTS.streamChunkBytes),
    maxMessageBytes,
  )
  if (streamChunkBytes < MIN_STREAM_CHUNK_BYTES) {
    throw new RangeError(`streamChunkBytes and maxMessageBytes must be at least ${MIN_STREAM_CHUNK_BYTES}`)
  }
  const logger = settings.logger ?? consoleLogger
  const transport = transportChannelOptions(settings)
  const warning = checkExposure({
    host,
    listen,
    tls: settings.tls !== undefined,
    tokens: settings.tokensFile !== undefined,
    insecure: settings.insecure ?? false,
  })
  if (warning !== undefined) logger.info({ listen }, warning)
  const tokens = settings.tokensFile === undefined ? undefined : await loadTokens(settings.tokensFile)
  const creds = settings.tls === undefined ? ServerCredentials.createInsecure() : await tlsCredentials(settings.tls)
  await checkCanListen(listen, 'gRPC')
  const definition = loadContract()
  const registry = contractRegistry(definition)
  return {
    start: (engine, interceptors = []) =>
      serveEngine({
        ...settings,
        listen,
        host,
        maxMessageBytes,
        receiveWindowBytes,
        streamChunkBytes,
        logger,
        transport,
        tokens,
        creds,
        definition,
        registry,
        engine,
        interceptors,
      }),
  }
}

/** Starts the gRPC server over an open engine and resolves once it is serving. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  return (await prepareServer(options)).start(options.engine, options.interceptors)
}

/** What prepareServer checked and read, with the engine to serve. */
interface Prepared extends ServerSettings {
  readonly listen: string
  readonly host: string
  readonly maxMessageBytes: number
  readonly receiveWindowBytes: number
  readonly streamChunkBytes: number
  readonly logger: ServerLogger
  readonly transport: ReturnType<typeof transportChannelOptions>
  readonly tokens: Awaited<ReturnType<typeof loadTokens>> | undefined
  readonly creds: ServerCredentials
  readonly definition: PackageDefinition
  readonly registry: FileRegistry
  readonly engine: StorageEngine
  readonly interceptors: readonly ServerInterceptor[]
}

async function serveEngine(options: Prepared): Promise<RunningServer> {
  const { listen, host, maxMessageBytes, receiveWindowBytes, streamChunkBytes, logger, transport, tokens, creds } =
    options
  const { definition, registry } = options
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? SERVER_DEFAULTS.shutdownTimeoutMs
  const collect = options.reclaimWhenIdle === false ? undefined : fullCollector()
  const reclaimer = collect === undefined ? undefined : new IdleReclaimer(collect)
  const server = new Server({
    ...transport,
    'grpc.max_receive_message_length': maxMessageBytes,
    'grpc.max_send_message_length': maxMessageBytes,
    // grpc-js wraps each interceptor around the ones before it, so the first listed sees a call's
    // metadata first and a status last. Authentication refuses a call by sending the status to
    // the interceptors before it; the ones after it see only the stream closing, which they would
    // count as CANCELLED. So the observers (metrics, request logging) come before it, and count and
    // log a refused call under the status its client got; the handler comes after it and never
    // sees a refused call. A refused call is activity too, so the reclaimer comes first. Before all
    // of them, callStatusInterceptor wraps grpc-js's own call object, the only place that sees the
    // statuses grpc-js sends itself (a request over the size limit, a passed deadline), so that
    // the observers count and log those under the status the client got, not as CANCELLED.
    interceptors: [
      callStatusInterceptor(),
      ...(reclaimer === undefined ? [] : [reclaimer.interceptor()]),
      ...options.interceptors,
      ...(tokens === undefined ? [] : [authInterceptor(tokens)]),
    ],
  })
  if (!raiseReceiveWindow(server, receiveWindowBytes)) {
    logger.info({ receiveWindowBytes }, 'this grpc-js cannot be given a receive window; HTTP/2 keeps its 64 KiB')
  }
  // Set once bound: the port is known only then when listen asks for port 0.
  const identity = { id: options.nodeId ?? '', address: listen }
  const deps = { engine: options.engine, logger }
  // One cache of series headers for every write path of this server: writers repeat their series.
  const headers = new SeriesHeaderCache()
  const encoded = new EncodedHeaderCache()
  server.addService(writeServiceDefinition(headers), writeServiceHandlers(deps))
  server.addService(queryServiceDefinition(encoded, registry), queryServiceHandlers({ ...deps, streamChunkBytes }))
  const streams = streamService({
    ...deps,
    streamChunkBytes,
    subscriberBufferPoints: options.subscriberBufferPoints,
  })
  server.addService(streamServiceDefinition(headers, encoded, registry), streams.handlers)
  server.addService(
    checkedService(ClusterServiceService, registry),
    clusterServiceHandlers({ ...deps, identity: () => identity }),
  )
  server.addService(checkedService(AdminServiceService, registry), adminServiceHandlers(deps))
  const health = addIntrospection(
    server,
    [
      'v3storage.v1.WriteService',
      'v3storage.v1.QueryService',
      'v3storage.v1.StreamService',
      'v3storage.v1.ClusterService',
      'v3storage.v1.AdminService',
    ],
    { definition, registry },
    deps,
  )

  const port = await bind(server, listen, creds)
  reclaimer?.start()
  identity.address = `${host}:${port}`
  if (identity.id === '') identity.id = `${hostname()}:${port}`

  let closing: Promise<void> | undefined
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      reclaimer?.stop()
      health.setServing(false)
      // Ingest and Subscribe never end on their own: they end now, with UNAVAILABLE, so clients reconnect elsewhere.
      streams.shutdown()
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
