import type { UntypedServiceImplementation } from '@grpc/grpc-js'
import type {
  CompactResponse,
  DeleteSeriesRequest,
  DeleteSeriesResponse,
  GetStatsResponse,
} from '../../gen/v3storage/v1/admin_service.js'
import { compactToProto, deleteFromProto, statsToProto } from './convert.js'
import { type Decoded, type HandlerDeps, unary, unwrap } from './handler-kit.js'

export function adminServiceHandlers(deps: HandlerDeps): UntypedServiceImplementation {
  return {
    getStats: unary(deps, 'AdminService.GetStats', async (request: Decoded<unknown>): Promise<GetStatsResponse> => {
      unwrap(request)
      return statsToProto(await deps.engine.stats())
    }),
    compact: unary(deps, 'AdminService.Compact', async (request: Decoded<unknown>, ctx): Promise<CompactResponse> => {
      unwrap(request)
      return compactToProto(await deps.engine.compact(ctx))
    }),
    deleteSeries: unary(
      deps,
      'AdminService.DeleteSeries',
      async (request: Decoded<DeleteSeriesRequest>, ctx): Promise<DeleteSeriesResponse> => {
        const result = await deps.engine.deleteSeries(deleteFromProto(unwrap(request)), ctx)
        return { seriesMatched: result.seriesMatched }
      },
    ),
  }
}
