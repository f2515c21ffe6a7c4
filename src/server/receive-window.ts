/**
 * The HTTP/2 receive windows of the gRPC server. grpc-js (1.14) leaves them at Node's 65,535 bytes
 * for each call and for each connection: its `grpc-node.flow_control_window` option is read by its
 * client only (grpc/grpc-node#3058). A client then sends 64 KiB of a request and waits for a
 * WINDOW_UPDATE, which the server sends only when its event loop reads the bytes; a server busy
 * storing the previous message stalls the next one. With 50,000-point Ingest messages, the
 * batching writer's ingest rose by about half with an 8 MiB window (README, Performance).
 */
import type { Http2SecureServer, Http2Server, ServerHttp2Session } from 'node:http2'
import type { Server, ServerCredentials } from '@grpc/grpc-js'

/** HTTP/2 allows a window of at most 2^31 - 1 bytes. */
export const MAX_RECEIVE_WINDOW_BYTES = 2 ** 31 - 1

type AnyHttp2Server = Http2Server | Http2SecureServer

/** The grpc-js method that makes the HTTP/2 server of each bound address (not in its public types). */
interface Http2ServerFactory {
  createHttp2Server?: (credentials: ServerCredentials) => AnyHttp2Server
}

/**
 * Gives every HTTP/2 server that `server` binds from now on a receive window of `bytes`: the
 * initial window of each call (SETTINGS_INITIAL_WINDOW_SIZE) and the window of each connection.
 * Returns false, changing nothing, when this grpc-js has no such factory to wrap.
 */
export function raiseReceiveWindow(server: Server, bytes: number): boolean {
  const factory = server as unknown as Http2ServerFactory
  const create = factory.createHttp2Server
  if (typeof create !== 'function') return false
  factory.createHttp2Server = (credentials) => {
    const http2Server = create.call(server, credentials)
    http2Server.updateSettings({ initialWindowSize: bytes })
    http2Server.on('session', (session: ServerHttp2Session) => session.setLocalWindowSize(bytes))
    return http2Server
  }
  return true
}
