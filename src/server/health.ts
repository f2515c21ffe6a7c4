/**
 * grpc.health.v1, from the .proto file grpc-health-check ships, as the contract loads it beside
 * ours (see loadContract). Served here rather than by the library's HealthImplementation so that
 * the requests go through the same checks as ours: a request that does not decode answers
 * INVALID_ARGUMENT, where the library's handlers would leave grpc-js to answer INTERNAL. The
 * library's module is not loaded: it parses the same file again as it loads (30-40 ms of a start).
 */

import type { FileRegistry } from '@bufbuild/protobuf'
import type { handleServerStreamingCall, Server, ServiceDefinition } from '@grpc/grpc-js'
import { NotFoundError } from '../model/errors.js'
import { toStatus } from './errors.js'
import { type Decoded, type HandlerDeps, unary, unwrap } from './handler-kit.js'
import { checkedService } from './request-check.js'

export type ServingStatus = 'SERVING' | 'NOT_SERVING'

/** HealthCheckRequest as the contract's definition decodes it (keepCase, no defaults: an empty name is absent). */
interface HealthCheckRequest {
  readonly service?: string
}

/** The status by its name, which the definition's serializer turns into the enum's number. */
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

  /** `definition`: grpc.health.v1.Health from the contract's package definition. */
  addToServer(server: Server, definition: ServiceDefinition, registry: FileRegistry, deps: HandlerDeps): void {
    const watch: handleServerStreamingCall<Decoded<HealthCheckRequest>, HealthCheckResponse> = (call) => {
      let service: string
      try {
        service = unwrap(call.request).service ?? ''
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

    server.addService(checkedService(definition, registry), {
      check: unary(deps, 'Health.Check', async (request: Decoded<HealthCheckRequest>): Promise<HealthCheckResponse> => {
        const service = unwrap(request).service ?? ''
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
