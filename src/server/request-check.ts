/**
 * Checks a request's bytes against its message descriptor before ts-proto decodes it, so that every
 * malformed request answers INVALID_ARGUMENT naming the field. The generated decoders cannot do it:
 * they replace invalid UTF-8 with U+FFFD without a word, and throw a bare Error on an int64 beyond
 * 2^53, which grpc-js would answer with INTERNAL "Error deserializing request".
 */

import {
  create,
  createFileRegistry,
  type DescField,
  type DescMessage,
  type FileRegistry,
  fromBinary,
  ScalarType,
} from '@bufbuild/protobuf'
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire'
import {
  type DescriptorProto,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from '@bufbuild/protobuf/wkt'
import type { PackageDefinition } from '@grpc/proto-loader'
import { ValidationError } from '../model/errors.js'
import { type Decoded, decodeSafely } from './handler-kit.js'

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)

/** The wire type a scalar arrives with when it is not packed. */
function scalarWireType(scalar: ScalarType): WireType {
  switch (scalar) {
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return WireType.LengthDelimited
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return WireType.Bit64
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return WireType.Bit32
    default:
      return WireType.Varint
  }
}

/**
 * Reads one scalar and checks what JavaScript cannot hold: invalid UTF-8 in a string, and a 64-bit
 * integer beyond ±(2^53−1), which ts-proto's number fields cannot represent.
 */
function checkScalar(reader: BinaryReader, scalar: ScalarType, field: string): void {
  let wide: bigint | undefined
  switch (scalar) {
    case ScalarType.STRING: {
      const bytes = reader.bytes()
      if (!isAscii(bytes)) {
        try {
          strictUtf8.decode(bytes)
        } catch {
          throw ValidationError.field(field, 'is not valid UTF-8')
        }
      }
      return
    }
    case ScalarType.INT64:
      wide = BigInt(reader.int64())
      break
    case ScalarType.SINT64:
      wide = BigInt(reader.sint64())
      break
    case ScalarType.SFIXED64:
      wide = BigInt(reader.sfixed64())
      break
    case ScalarType.UINT64:
      wide = BigInt(reader.uint64())
      break
    case ScalarType.FIXED64:
      wide = BigInt(reader.fixed64())
      break
    default:
      reader.skip(scalarWireType(scalar))
      return
  }
  if (wide > MAX_SAFE || wide < -MAX_SAFE) {
    throw ValidationError.field(field, `must be within ±(2^53−1) (${Number.MAX_SAFE_INTEGER}), got ${wide}`)
  }
}

function isAscii(bytes: Uint8Array): boolean {
  for (const b of bytes) if (b >= 0x80) return false
  return true
}

/** The field a value belongs to, as the request spells it: `selector.matchers[1].value`. */
function fieldPath(parent: string, name: string, index?: number): string {
  const named = parent === '' ? name : `${parent}.${name}`
  return index === undefined ? named : `${named}[${index}]`
}

/** Counts the elements of repeated fields as they arrive, to name them by index. */
class Occurrences {
  private readonly seen = new Map<number, number>()
  next(field: DescField): number {
    const index = this.seen.get(field.number) ?? 0
    this.seen.set(field.number, index + 1)
    return index
  }
}

function checkMessage(desc: DescMessage, bytes: Uint8Array, path: string): void {
  const reader = new BinaryReader(bytes)
  const occurrences = new Occurrences()
  try {
    while (reader.pos < reader.len) {
      const [number, wireType] = reader.tag()
      const field = desc.fields.find((f) => f.number === number)
      if (field === undefined) reader.skip(wireType, number)
      else checkField(field, wireType, reader, path, occurrences)
    }
  } catch (err) {
    if (err instanceof ValidationError) throw err
    const reason = err instanceof Error ? err.message : String(err)
    throw ValidationError.field(path === '' ? 'request' : path, `is not a valid ${desc.typeName}: ${reason}`)
  }
}

/**
 * Checks one field's value. A value whose wire type does not fit the field is skipped, as the
 * generated decoders skip it; a map field is skipped too, since no request message has one.
 */
function checkField(
  field: DescField,
  wireType: WireType,
  reader: BinaryReader,
  parent: string,
  occurrences: Occurrences,
): void {
  switch (field.fieldKind) {
    case 'scalar':
      if (wireType !== scalarWireType(field.scalar)) reader.skip(wireType, field.number)
      else checkScalar(reader, field.scalar, fieldPath(parent, field.name))
      return
    case 'message':
      if (wireType !== WireType.LengthDelimited) reader.skip(wireType, field.number)
      else checkMessage(field.message, reader.bytes(), fieldPath(parent, field.name))
      return
    case 'list':
      if (field.listKind === 'message') {
        const path = fieldPath(parent, field.name, occurrences.next(field))
        if (wireType !== WireType.LengthDelimited) reader.skip(wireType, field.number)
        else checkMessage(field.message, reader.bytes(), path)
      } else if (field.listKind === 'scalar') {
        checkListScalar(field.scalar, wireType, reader, fieldPath(parent, field.name), field, occurrences)
      } else {
        reader.skip(wireType, field.number)
      }
      return
    default:
      reader.skip(wireType, field.number)
  }
}

/** One element of a repeated scalar, or a packed run of them. */
function checkListScalar(
  scalar: ScalarType,
  wireType: WireType,
  reader: BinaryReader,
  path: string,
  field: DescField,
  occurrences: Occurrences,
): void {
  const elementWireType = scalarWireType(scalar)
  if (wireType === elementWireType) {
    checkScalar(reader, scalar, `${path}[${occurrences.next(field)}]`)
  } else if (wireType === WireType.LengthDelimited) {
    const packed = new BinaryReader(reader.bytes())
    while (packed.pos < packed.len) checkScalar(packed, scalar, `${path}[${occurrences.next(field)}]`)
  } else {
    reader.skip(wireType, field.number)
  }
}

/** Every message and enum a file declares, by fully qualified name (`.v3storage.v1.Tag`). */
function declaredTypes(file: FileDescriptorProto, into: Set<string>): void {
  const walk = (scope: string, messages: readonly DescriptorProto[], enums: readonly { name: string }[]): void => {
    for (const e of enums) into.add(`${scope}.${e.name}`)
    for (const m of messages) {
      into.add(`${scope}.${m.name}`)
      walk(`${scope}.${m.name}`, m.nestedType, m.enumType)
    }
  }
  walk(file.package === '' ? '' : `.${file.package}`, file.messageType, file.enumType)
}

/**
 * Qualifies the type names of fields as protoc does. proto-loader leaves them as the .proto spells
 * them (`Tag` for `.v3storage.v1.Tag`), which a registry cannot resolve; a name is looked up from
 * the innermost scope out, as protobuf's scoping rules say.
 */
function qualifyTypeNames(file: FileDescriptorProto, known: ReadonlySet<string>): void {
  const walk = (scope: string, messages: readonly DescriptorProto[]): void => {
    for (const m of messages) {
      const inner = `${scope}.${m.name}`
      for (const field of m.field) {
        if (field.typeName === '' || field.typeName.startsWith('.')) continue
        for (let s = inner; ; s = s.slice(0, Math.max(0, s.lastIndexOf('.')))) {
          if (known.has(`${s}.${field.typeName}`)) {
            field.typeName = `${s}.${field.typeName}`
            break
          }
          if (s === '') break
        }
      }
      walk(inner, m.nestedType)
    }
  }
  walk(file.package === '' ? '' : `.${file.package}`, file.messageType)
}

/** The message descriptors of the contract, from the .proto files loaded at runtime. */
export function contractRegistry(contract: PackageDefinition): FileRegistry {
  const files = new Map<string, FileDescriptorProto>()
  // Every message and enum definition carries the descriptors of its file and the files it
  // imports, the same buffers again and again: each is parsed once.
  const parsed = new Set<Uint8Array>()
  for (const value of Object.values(contract)) {
    const protos: unknown = 'fileDescriptorProtos' in value ? value.fileDescriptorProtos : undefined
    if (!Array.isArray(protos)) continue
    for (const bytes of protos) {
      if (!(bytes instanceof Uint8Array) || parsed.has(bytes)) continue
      parsed.add(bytes)
      const file = fromBinary(FileDescriptorProtoSchema, bytes)
      files.set(file.name, file)
    }
  }
  const known = new Set<string>()
  for (const file of files.values()) declaredTypes(file, known)
  for (const file of files.values()) qualifyTypeNames(file, known)
  return createFileRegistry(create(FileDescriptorSetSchema, { file: [...files.values()] }))
}

/** What checkedService needs of a method of a grpc-js service definition. */
interface MethodShape {
  readonly path: string
  readonly requestDeserialize: (bytes: Buffer) => unknown
}

/** A service definition whose handlers receive their requests as Decoded values. */
export type CheckedService<D> = {
  readonly [K in keyof D]: D[K] extends { readonly requestDeserialize: (bytes: Buffer) => infer Req }
    ? Omit<D[K], 'requestDeserialize'> & { readonly requestDeserialize: (bytes: Buffer) => Decoded<Req> }
    : D[K]
}

/**
 * Wraps the request decoder of every method of a grpc-js service definition: the bytes are checked
 * against the method's input message, then decoded, and any failure reaches the handler as a
 * ValidationError to rethrow (see unwrap), never as grpc-js's INTERNAL.
 */
export function checkedService<D extends { readonly [K in keyof D]: MethodShape }>(
  definition: D,
  registry: FileRegistry,
): CheckedService<D> {
  const methods = Object.entries<MethodShape>(definition).map(([key, method]) => {
    const [, serviceName = '', methodName = ''] = method.path.split('/')
    const input = registry.getService(serviceName)?.methods.find((m) => m.name === methodName)?.input
    if (input === undefined) throw new Error(`BUG: no descriptor for the input of ${method.path}`)
    const decode = method.requestDeserialize
    const requestDeserialize = decodeSafely((bytes: Buffer) => {
      checkMessage(input, bytes, '')
      try {
        return decode(bytes)
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err)
        throw new ValidationError([{ field: 'request', description: `cannot be decoded: ${reason}` }], { cause: err })
      }
    })
    return [key, { ...method, requestDeserialize }]
  })
  return Object.fromEntries(methods) as CheckedService<D>
}
