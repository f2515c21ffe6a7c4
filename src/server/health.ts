/**
 * grpc.health.v1 over the service definition that grpc-health-check ships. Served here rather than
 * by its HealthImplementation so that the requests go through the same checks as ours: a request
 * that does not decode answers INVALID_ARGUMENT, where the library's handlers would leave grpc-js
 * to answer INTERNAL.
 */

import type { FileRegistry } from '@bufbuild/protobuf'
import type { handleServerStreamingCall, Server } from '@grpc/grpc-js'
import { service as healthService } from 'grpc-health-check'
import { NotFoundError } from '../model/errors.js'
import { toStatus } from './errors.js'
import { type Decoded, type HandlerDeps, unary, unwrap } from './handler-kit.js'
import { checkedService } from './request-check.js'

export type ServingStatus = 'SERVING' | 'NOT_SERVING'

/** HealthCheckRequest as grpc-health-check's definition decodes it (keepCase, enums as strings). */
interface HealthCheckRequest {
  readonly service: string
}

interface HealthCheckResponse {
  readonly status: ServingStatus | 'SERVICE_UNKNOWN'
}

export class Health {
  private readonly statuses = new Map<string, ServingStatus>()
  private readonly watchers = new Map<string, Set<(status: ServingStatus) => void>>()

  constructor(names: readonly string[]) {
    for (const name of names) this.statuses.set(name, 'SERVING')
  }

  setStatus(name: string, status: ServingStatus): void {
    this.statuses.set(name, status)
    for (const watcher of this.watchers.get(name) ?? []) watcher(status)
  }

  addToServer(server: Server, registry: FileRegistry, deps: HandlerDeps): void {
    const watch: handleServerStreamingCall<Decoded<HealthCheckRequest>, HealthCheckResponse> = (call) => {
      let service: string
      try {
        service = unwrap(call.request).service
      } catch (err) {
        call.emit('error', toStatus(err, deps.logger, 'Health.Watch'))
        return
      }
      const watcher = (status: ServingStatus): void => {
        call.write({ status })
      }
      let set = this.watchers.get(service)
      if (set === undefined) {
        set = new Set()
        this.watchers.set(service, set)
      }
      set.add(watcher)
      call.on('cancelled', () => {
        set.delete(watcher)
        if (set.size === 0) this.watchers.delete(service)
      })
      call.write({ status: this.statuses.get(service) ?? 'SERVICE_UNKNOWN' })
    }

    server.addService(checkedService(healthService, registry), {
      check: unary(deps, 'Health.Check', async (request: Decoded<HealthCheckRequest>): Promise<HealthCheckResponse> => {
        const { service } = unwrap(request)
        const status = this.statuses.get(service)
        if (status === undefined) throw new NotFoundError(`health status unknown for service ${service}`)
        return { status }
      }),
      watch,
      list: unary(deps, 'Health.List', async (request: Decoded<unknown>) => {
        unwrap(request)
        return { statuses: Object.fromEntries([...this.statuses].map(([name, status]) => [name, { status }])) }
      }),
    })
  }
}
