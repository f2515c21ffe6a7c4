import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type FileRegistry, fromBinary, toBinary } from '@bufbuild/protobuf'
import { type DescriptorProto, FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt'
import type { Server, ServiceDefinition } from '@grpc/grpc-js'
import { loadSync, type PackageDefinition } from '@grpc/proto-loader'
import { ReflectionService } from '@grpc/reflection'
import type { HandlerDeps } from './handler-kit.js'
import { Health } from './health.js'

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

/** protoc's name for the entry message of a map field: `foo_bar` becomes `FooBarEntry`. */
function mapEntryName(field: string): string {
  return `${field.replace(/(?:^|_)([a-z])/g, (_, c: string) => c.toUpperCase()).replace(/_/g, '')}Entry`
}

/**
 * Renames map entry messages as protoc does. proto-loader's descriptors name the entry of
 * `map<…> statuses` `Statuses` instead of `StatusesEntry`, which descriptor validators (Go's
 * protodesc, used by buf curl and grpcurl) reject, and then nothing in that file resolves:
 * grpc.health.v1's List method has such a map, so `buf curl --list-methods` failed outright.
 */
function fixMapEntries(message: DescriptorProto, scope: string): void {
  const name = `${scope}.${message.name}`
  for (const nested of message.nestedType) {
    if (nested.options?.mapEntry !== true) continue
    const field = message.field.find((f) => f.typeName === nested.name || f.typeName === `${name}.${nested.name}`)
    if (field === undefined) continue
    nested.name = mapEntryName(field.name)
    field.typeName = `${name}.${nested.name}`
  }
  for (const nested of message.nestedType) fixMapEntries(nested, name)
}

function fixDescriptors(definition: PackageDefinition): PackageDefinition {
  const fixed = new Map<Buffer, Buffer>()
  const fix = (bytes: Buffer): Buffer => {
    let out = fixed.get(bytes)
    if (out === undefined) {
      const file = fromBinary(FileDescriptorProtoSchema, bytes)
      for (const message of file.messageType) fixMapEntries(message, file.package === '' ? '' : `.${file.package}`)
      out = Buffer.from(toBinary(FileDescriptorProtoSchema, file))
      fixed.set(bytes, out)
    }
    return out
  }
  // Message and enum definitions carry the descriptors of their file; service definitions do not.
  return Object.fromEntries(
    Object.entries(definition).map(([key, value]) => {
      const protos: unknown = 'fileDescriptorProtos' in value ? value.fileDescriptorProtos : undefined
      return Array.isArray(protos) ? [key, { ...value, fileDescriptorProtos: protos.map(fix) }] : [key, value]
    }),
  ) as PackageDefinition
}

/**
 * The contract's .proto files and the health service's, loaded at runtime: reflection describes
 * them, and request checks (request-check.ts) read their message descriptors.
 */
export function loadContract(): PackageDefinition {
  // grpc-health-check's .proto file, found without loading the library (see health.ts).
  const healthIncludeDir = join(
    dirname(createRequire(import.meta.url).resolve('grpc-health-check/package.json')),
    'proto',
  )
  const definition = loadSync(
    [...CONTRACT_FILES.map((f) => join('v3storage', 'v1', f)), join('health', 'v1', 'health.proto')],
    // keepCase: fields keep their .proto names (start_ms), as protoc's descriptors do; request
    // checks name fields by them, and reflection clients see the contract as it is written.
    { keepCase: true, includeDirs: [join(packageRoot(), 'proto'), healthIncludeDir] },
  )
  return fixDescriptors(definition)
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
export function addIntrospection(
  server: Server,
  serviceNames: readonly string[],
  contract: { readonly definition: PackageDefinition; readonly registry: FileRegistry },
  deps: HandlerDeps,
): HealthControl {
  const names = ['', ...serviceNames]
  const health = new Health(names)
  health.addToServer(server, contract.definition['grpc.health.v1.Health'] as ServiceDefinition, contract.registry, deps)
  new ReflectionService(contract.definition).addToServer(server)

  return {
    setServing(serving) {
      for (const name of names) health.setStatus(name, serving ? 'SERVING' : 'NOT_SERVING')
    },
  }
}
