import type { UntypedServiceImplementation } from '@grpc/grpc-js'
import {
  type ListNodesResponse,
  type LocateRequest,
  type LocateResponse,
  type Node,
  NodeState,
} from '../../gen/v3storage/v1/cluster_service.js'
import { ValidationError } from '../model/errors.js'
import { type Decoded, type HandlerDeps, unary, unwrap } from './handler-kit.js'

export interface ClusterHandlerDeps extends HandlerDeps {
  /** This node's id and the address clients reach it at; known only once the server is bound. */
  readonly identity: () => { readonly id: string; readonly address: string }
}

/**
 * ClusterService of a single node: the cluster is this node, healthy (it answers), leader (there is
 * no one else), and the owner of every series.
 */
export function clusterServiceHandlers(deps: ClusterHandlerDeps): UntypedServiceImplementation {
  const self = (): Node => ({ ...deps.identity(), state: NodeState.NODE_STATE_HEALTHY, leader: true })
  return {
    listNodes: unary(
      deps,
      'ClusterService.ListNodes',
      async (request: Decoded<unknown>): Promise<ListNodesResponse> => {
        unwrap(request)
        return { nodes: [self()] }
      },
    ),
    locate: unary(deps, 'ClusterService.Locate', async (request: Decoded<LocateRequest>): Promise<LocateResponse> => {
      if (unwrap(request).metric === '') throw ValidationError.field('metric', 'is required')
      return { nodes: [self()] }
    }),
  }
}
