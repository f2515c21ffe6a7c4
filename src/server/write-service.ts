import type { handleClientStreamingCall, UntypedServiceImplementation } from '@grpc/grpc-js'
import {
  type WriteResponse,
  WriteServiceService,
  type WriteStreamRequest,
  type WriteStreamResponse,
} from '../../gen/v3storage/v1/write_service.js'
import { decodeWriteRequest, type WireWriteRequest } from '../wire/series-codec.js'
import { writeBatchFromWire } from './convert.js'
import { unimplemented } from './errors.js'
import { type Decoded, decodeSafely, type HandlerDeps, unary, unwrap } from './handler-kit.js'

/**
 * WriteService with Write decoded by the hand-written codec: it keeps nanosecond timestamps beyond
 * 2^53 exact (as bigint) and reads points straight into typed arrays.
 */
export const writeServiceDefinition = {
  ...WriteServiceService,
  write: { ...WriteServiceService.write, requestDeserialize: decodeSafely(decodeWriteRequest) },
}

export function writeServiceHandlers(deps: HandlerDeps): UntypedServiceImplementation {
  const writeStream: handleClientStreamingCall<WriteStreamRequest, WriteStreamResponse> = (_call, callback) => {
    callback(unimplemented('WriteService.WriteStream'))
  }
  return {
    write: unary(
      deps,
      'WriteService.Write',
      async (request: Decoded<WireWriteRequest>, ctx): Promise<WriteResponse> => {
        const result = await deps.engine.write(writeBatchFromWire(unwrap(request)), ctx)
        return { pointsWritten: result.pointsWritten, seriesWritten: result.seriesWritten }
      },
    ),
    writeStream,
  }
}
