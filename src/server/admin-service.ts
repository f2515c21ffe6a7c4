import type { UntypedServiceImplementation } from '@grpc/grpc-js'
import type {
  CompactResponse,
  DeleteSeriesRequest,
  DeleteSeriesResponse,
  GetStatsResponse,
} from '../../gen/v3storage/v1/admin_service.js'
import { compactToProto, deleteFromProto, statsToProto } from './convert.js'
import { type HandlerDeps, unary } from './handler-kit.js'

export function adminServiceHandlers(deps: HandlerDeps): UntypedServiceImplementation {
  return {
    getStats: unary(deps, 'AdminService.GetStats', async (): Promise<GetStatsResponse> => {
      return statsToProto(await deps.engine.stats())
    }),
    compact: unary(deps, 'AdminService.Compact', async (_request, ctx): Promise<CompactResponse> => {
      return compactToProto(await deps.engine.compact(ctx))
    }),
    deleteSeries: unary(
      deps,
      'AdminService.DeleteSeries',
      async (request: DeleteSeriesRequest, ctx): Promise<DeleteSeriesResponse> => {
        const result = await deps.engine.deleteSeries(deleteFromProto(request), ctx)
        return { seriesMatched: result.seriesMatched }
      },
    ),
  }
}
