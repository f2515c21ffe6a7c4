import type { UntypedServiceImplementation } from '@grpc/grpc-js'
import {
  type DecommissionRequest,
  type DecommissionResponse,
  type ListNodesResponse,
  type LocateRequest,
  type LocateResponse,
  type Node,
  NodeLifecycle,
  NodeState,
  type RepairResponse,
} from '../../gen/v3storage/v1/cluster_service.js'
import type { ClusterNodeInfo, ClusterRepairReport } from '../engine/storage-engine.js'
import { ValidationError } from '../model/errors.js'
import { type Decoded, type HandlerDeps, unary, unwrap } from './handler-kit.js'

export interface ClusterHandlerDeps extends HandlerDeps {
  /** This node's id and the address clients reach it at; known only once the server is bound. */
  readonly identity: () => { readonly id: string; readonly address: string }
}

const LIFECYCLE: Readonly<Record<ClusterNodeInfo['lifecycle'], NodeLifecycle>> = {
  joining: NodeLifecycle.NODE_LIFECYCLE_JOINING,
  active: NodeLifecycle.NODE_LIFECYCLE_ACTIVE,
  leaving: NodeLifecycle.NODE_LIFECYCLE_LEAVING,
}

function nodeOf(info: ClusterNodeInfo): Node {
  return {
    id: info.id,
    address: info.address,
    peerAddress: info.peerAddress,
    state: info.healthy ? NodeState.NODE_STATE_HEALTHY : NodeState.NODE_STATE_DOWN,
    lifecycle: LIFECYCLE[info.lifecycle],
    ringShare: info.share,
    leader: info.leader,
    hintsPending: info.hintsPending,
    rangesToMove: info.move?.rangesTotal ?? 0,
    rangesMoved: info.move?.rangesDone ?? 0,
    pointsMoved: info.move?.pointsMoved ?? 0,
    movePhase: info.move?.phase ?? '',
  }
}

function repairToProto(report: ClusterRepairReport): RepairResponse {
  return {
    nodes: report.nodes.map((n) => ({
      nodeId: n.node,
      rangesCompared: n.rangesCompared,
      rangesRepaired: n.rangesRepaired,
      pointsSent: n.pointsSent,
      pointsReceived: n.pointsReceived,
      durationMs: n.durationMs,
    })),
    downNodes: [...report.downNodes],
    endMs: report.endMs,
    durationMs: report.durationMs,
  }
}

/**
 * ClusterService. On a cluster engine it describes the ring the engine routes with; on a single
 * node the cluster is this node: healthy (it answers), active, leader (there is no one else), and
 * the owner of every series, and Repair has no other copy to compare with: its pass moves nothing.
 */
export function clusterServiceHandlers(deps: ClusterHandlerDeps): UntypedServiceImplementation {
  const self = (): Node => ({
    ...deps.identity(),
    peerAddress: '',
    state: NodeState.NODE_STATE_HEALTHY,
    lifecycle: NodeLifecycle.NODE_LIFECYCLE_ACTIVE,
    ringShare: 1,
    leader: true,
    hintsPending: 0,
    rangesToMove: 0,
    rangesMoved: 0,
    pointsMoved: 0,
    movePhase: '',
  })
  const { engine } = deps
  return {
    listNodes: unary(
      deps,
      'ClusterService.ListNodes',
      async (request: Decoded<unknown>): Promise<ListNodesResponse> => {
        unwrap(request)
        if (engine.clusterInfo === undefined) return { nodes: [self()], ringVersion: 0, replicationFactor: 1 }
        const info = engine.clusterInfo()
        return {
          nodes: info.nodes.map(nodeOf),
          ringVersion: info.ringVersion,
          replicationFactor: info.replicationFactor,
        }
      },
    ),
    locate: unary(deps, 'ClusterService.Locate', async (request: Decoded<LocateRequest>): Promise<LocateResponse> => {
      const { metric, tags } = unwrap(request)
      if (metric === '') throw ValidationError.field('metric', 'is required')
      if (engine.locate === undefined) return { nodes: [self()] }
      return { nodes: engine.locate(metric, tags).map(nodeOf) }
    }),
    repair: unary(deps, 'ClusterService.Repair', async (request: Decoded<unknown>, ctx): Promise<RepairResponse> => {
      unwrap(request)
      if (engine.repair !== undefined) return repairToProto(await engine.repair(ctx))
      const now = Date.now()
      return repairToProto({
        nodes: [
          {
            node: deps.identity().id,
            rangesCompared: 0,
            rangesRepaired: 0,
            pointsSent: 0,
            pointsReceived: 0,
            durationMs: 0,
            peers: [],
          },
        ],
        downNodes: [],
        endMs: now,
        durationMs: 0,
      })
    }),
    decommission: unary(
      deps,
      'ClusterService.Decommission',
      async (request: Decoded<DecommissionRequest>, ctx): Promise<DecommissionResponse> => {
        const { nodeId } = unwrap(request)
        if (nodeId === '') throw ValidationError.field('node_id', 'is required')
        if (engine.decommission === undefined) {
          throw ValidationError.field('node_id', 'a single node has no other member to hand its data to')
        }
        const result = await engine.decommission(nodeId, ctx)
        return { nodeId: result.nodeId, ringVersion: result.ringVersion, durationMs: result.durationMs }
      },
    ),
  }
}
