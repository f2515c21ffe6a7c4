import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Server } from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import { ReflectionService } from '@grpc/reflection'
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check'

const CONTRACT_DIR = join('proto', 'v3storage', 'v1')
const CONTRACT_FILES = [
  'common.proto',
  'write_service.proto',
  'query_service.proto',
  'stream_service.proto',
  'cluster_service.proto',
  'admin_service.proto',
]

/**
 * The package root: the nearest folder above this module that holds the contract. Found by walking
 * up because this module runs both from src/server (tsx) and from dist/src/server (built), and
 * the server may be started from any working directory.
 */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(join(dir, CONTRACT_DIR))) return dir
    const parent = dirname(dir)
    if (parent === dir) throw new Error(`cannot find ${CONTRACT_DIR} above ${fileURLToPath(import.meta.url)}`)
    dir = parent
  }
}

/** Health status per service, flipped to NOT_SERVING when the server starts to shut down. */
export interface HealthControl {
  setServing(serving: boolean): void
}

/**
 * Serves grpc.health.v1 (SERVING for "" and each of our services) and server reflection on both
 * grpc.reflection.v1 and v1alpha. Reflection describes the .proto files loaded at runtime, the
 * same files gen/ comes from, plus the health service.
 */
export function addIntrospection(server: Server, serviceNames: readonly string[]): HealthControl {
  const names = ['', ...serviceNames]
  const health = new HealthImplementation(Object.fromEntries(names.map((name) => [name, 'SERVING'])))
  health.addToServer(server)

  const healthIncludeDir = dirname(dirname(dirname(healthProtoPath)))
  const definition = loadSync(
    [...CONTRACT_FILES.map((f) => join('v3storage', 'v1', f)), join('health', 'v1', 'health.proto')],
    { includeDirs: [join(packageRoot(), 'proto'), healthIncludeDir] },
  )
  new ReflectionService(definition).addToServer(server)

  return {
    setServing(serving) {
      for (const name of names) health.setStatus(name, serving ? 'SERVING' : 'NOT_SERVING')
    },
  }
}
