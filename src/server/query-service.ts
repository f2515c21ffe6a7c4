import { once } from 'node:events'
import type { FileRegistry } from '@bufbuild/protobuf'
import type { handleServerStreamingCall, ServerWritableStream, UntypedServiceImplementation } from '@grpc/grpc-js'
import type {
  LatestRequest,
  ListSeriesRequest,
  ListSeriesResponse,
  QueryRequest,
  QueryStreamRequest,
} from '../../gen/v3storage/v1/query_service.js'
import { QueryServiceService } from '../../gen/v3storage/v1/query_service.js'
import type { CallContext } from '../engine/storage-engine.js'
import type { SeriesPoints } from '../model/types.js'
import { type EncodedHeaderCache, encodeSeriesList } from '../wire/series-codec.js'
import { bindCallContext, withConsistency } from './call-context.js'
import { chunkSeries } from './chunking.js'
import { consistencyFromProto, queryFromProto, selectorFromProto, seriesRefToProto } from './convert.js'
import { type Decoded, failureStatus, type HandlerDeps, unary, unwrap } from './handler-kit.js'
import { checkedService } from './request-check.js'

/** QueryResponse, QueryStreamResponse and LatestResponse as the handlers produce them: model series. */
export interface SeriesListResponse {
  readonly series: readonly SeriesPoints[]
}

/**
 * QueryService with the point-carrying responses encoded by the hand-written codec, straight from
 * the engine's typed arrays, copying the encoded metric and tags of series it has sent before.
 */
export function queryServiceDefinition(headers: EncodedHeaderCache, registry: FileRegistry) {
  const serialize = (response: SeriesListResponse): Buffer => encodeSeriesList(response.series, headers)
  const checked = checkedService(QueryServiceService, registry)
  return {
    ...checked,
    query: { ...checked.query, responseSerialize: serialize },
    queryStream: { ...checked.queryStream, responseSerialize: serialize },
    latest: { ...checked.latest, responseSerialize: serialize },
  }
}

export interface QueryHandlerDeps extends HandlerDeps {
  /** Upper bound of the encoded size of one QueryStream message, in bytes. */
  readonly streamChunkBytes: number
}

/** Waits until the stream can take more, so a slow reader slows the sender and memory stays bounded. */
async function drained(
  call: ServerWritableStream<Decoded<QueryStreamRequest>, SeriesListResponse>,
  signal: AbortSignal,
) {
  await once(call, 'drain', { signal })
}

export function queryServiceHandlers(deps: QueryHandlerDeps): UntypedServiceImplementation {
  async function streamQuery(
    call: ServerWritableStream<Decoded<QueryStreamRequest>, SeriesListResponse>,
    ctx: CallContext & { readonly signal: AbortSignal },
  ): Promise<void> {
    const request = unwrap(call.request)
    const query = queryFromProto(request)
    const series = await deps.engine.query(query, withConsistency(ctx, consistencyFromProto(request.consistency)))
    for (const chunk of chunkSeries(series, deps.streamChunkBytes)) {
      ctx.signal.throwIfAborted()
      if (!call.write({ series: chunk })) await drained(call, ctx.signal)
    }
  }

  const queryStream: handleServerStreamingCall<Decoded<QueryStreamRequest>, SeriesListResponse> = (call) => {
    const bound = bindCallContext(call)
    streamQuery(call, bound.context).then(
      () => {
        bound.dispose()
        call.end()
      },
      (err: unknown) => {
        bound.dispose()
        // After a cancellation grpc-js has already closed the call and ignores this.
        call.emit('error', failureStatus(err, bound.context.signal, deps, 'QueryService.QueryStream'))
      },
    )
  }

  return {
    query: unary(
      deps,
      'QueryService.Query',
      async (decoded: Decoded<QueryRequest>, ctx): Promise<SeriesListResponse> => {
        const request = unwrap(decoded)
        const query = queryFromProto(request)
        return {
          series: await deps.engine.query(query, withConsistency(ctx, consistencyFromProto(request.consistency))),
        }
      },
    ),
    queryStream,
    latest: unary(
      deps,
      'QueryService.Latest',
      async (decoded: Decoded<LatestRequest>, ctx): Promise<SeriesListResponse> => {
        const request = unwrap(decoded)
        const selector = selectorFromProto(request.selector)
        return {
          series: await deps.engine.latest(selector, withConsistency(ctx, consistencyFromProto(request.consistency))),
        }
      },
    ),
    listSeries: unary(
      deps,
      'QueryService.ListSeries',
      async (decoded: Decoded<ListSeriesRequest>, ctx): Promise<ListSeriesResponse> => {
        const request = unwrap(decoded)
        const selector = selectorFromProto(request.selector)
        const refs = await deps.engine.listSeries(
          selector,
          withConsistency(ctx, consistencyFromProto(request.consistency)),
        )
        return { series: refs.map(seriesRefToProto) }
      },
    ),
  }
}
