import type { handleBidiStreamingCall, handleServerStreamingCall, UntypedServiceImplementation } from '@grpc/grpc-js'
import type {
  IngestRequest,
  IngestResponse,
  SubscribeRequest,
  SubscribeResponse,
} from '../../gen/v3storage/v1/stream_service.js'
import { unimplemented } from './errors.js'

/** StreamService belongs to a later issue; until then both RPCs answer UNIMPLEMENTED at once. */
export function streamServiceHandlers(): UntypedServiceImplementation {
  const ingest: handleBidiStreamingCall<IngestRequest, IngestResponse> = (call) => {
    call.emit('error', unimplemented('StreamService.Ingest'))
  }
  const subscribe: handleServerStreamingCall<SubscribeRequest, SubscribeResponse> = (call) => {
    call.emit('error', unimplemented('StreamService.Subscribe'))
  }
  return { ingest, subscribe }
}
