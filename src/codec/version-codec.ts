/**
 * Keys and values of the versions family (docs/format/versions.md): the write versions of recent
 * sealed points of a cluster node.
 *
 * A key is the biased block number, big-endian, then the series id, so that the versions of every
 * series in blocks before some block are one key range: dropping old versions is one range delete.
 * A value lists the versions of the points of one series in one 30-second block as runs of equal
 * versions, each with its points' offsets in the block; points without a version are left out.
 */

import { readVarint, varintSize, writeVarint } from '../model/varint.js'
import { CorruptDataError } from './errors.js'
import { MAX_BLOCK, MIN_BLOCK } from './row-key.js'
import { BLOCK_MS, BLOCK_NUMBER_BIAS, ENCODING_VERSIONS_RUNS, SERIES_ID_BYTES } from './schema.js'

/** Key width: biased block number 4 | series id 8. */
export const VERSION_KEY_BYTES = 4 + SERIES_ID_BYTES

/** The versions of some points of one series in one block, sorted by timestamp. */
export interface BlockVersions {
  readonly ts: Float64Array
  readonly vers: Float64Array
}

function checkBlock(block: number, max: number): void {
  if (!Number.isInteger(block) || block < MIN_BLOCK || block > max) {
    throw new RangeError(`block ${block} is outside [${MIN_BLOCK}, ${max}]`)
  }
}

/** The key of one series' versions in one block: │ biased block u32be 4 │ series id 8 │. */
export function encodeVersionKey(block: number, seriesId: Buffer): Buffer {
  checkBlock(block, MAX_BLOCK)
  if (seriesId.length !== SERIES_ID_BYTES) throw new RangeError(`series id has ${seriesId.length} bytes`)
  const key = Buffer.allocUnsafe(VERSION_KEY_BYTES)
  key.writeUInt32BE(block + BLOCK_NUMBER_BIAS, 0)
  seriesId.copy(key, 4, 0, SERIES_ID_BYTES)
  return key
}

/**
 * A bound that sorts before every key of `block` and after every key of earlier blocks: the
 * exclusive end of a range delete of the blocks before it (MAX_BLOCK + 1 allowed).
 */
export function versionBlockBound(block: number): Buffer {
  checkBlock(block, MAX_BLOCK + 1)
  const key = Buffer.allocUnsafe(4)
  key.writeUInt32BE(block + BLOCK_NUMBER_BIAS, 0)
  return key
}

/** The block number of a versions key. */
export function versionKeyBlock(key: Uint8Array): number {
  if (key.length !== VERSION_KEY_BYTES) {
    throw new CorruptDataError('versions', `key length ${key.length} is not ${VERSION_KEY_BYTES}`, 0)
  }
  return (((key[0]! << 24) | (key[1]! << 16) | (key[2]! << 8) | key[3]!) >>> 0) - BLOCK_NUMBER_BIAS
}

/**
 * The value holding the versions of points `ts` (sorted, integer milliseconds inside the block that
 * starts at blockStartMs) paired with `vers`; points of version 0 are left out. Undefined when no
 * point has a version.
 *
 * │ encoding 1 │ run count varint │ runs… │, a run: │ version f64le 8 │ n varint │ offset deltas varint × n │
 */
export function encodeBlockVersions(
  blockStartMs: number,
  ts: ArrayLike<number>,
  vers: ArrayLike<number>,
): Buffer | undefined {
  // Two passes: the first sizes the value and counts the runs, the second writes it.
  let size = 0
  let runs = 0
  let runVersion = 0
  let runStart = 0
  let prev = 0
  const pending: number[] = []
  const closeRun = (end: number): void => {
    if (runVersion === 0) return
    runs++
    size += 8 + varintSize(end - runStart)
  }
  for (let i = 0; i < ts.length; i++) {
    const v = vers[i]!
    if (v !== runVersion) {
      closeRun(i)
      runVersion = v
      runStart = i
      prev = 0
      if (v !== 0) pending.push(i)
    }
    if (v === 0) continue
    const offset = ts[i]! - blockStartMs
    if (!(offset >= 0 && offset < BLOCK_MS && Number.isInteger(offset))) {
      throw new RangeError(`BUG: timestamp ${ts[i]} is not in the block starting at ${blockStartMs}`)
    }
    size += varintSize(offset - prev)
    prev = offset
  }
  closeRun(ts.length)
  if (runs === 0) return undefined
  size += 1 + varintSize(runs)
  const out = Buffer.allocUnsafe(size)
  out[0] = ENCODING_VERSIONS_RUNS
  let at = writeVarint(out, 1, runs)
  for (const start of pending) {
    const v = vers[start]!
    let end = start
    while (end < ts.length && vers[end] === v) end++
    out.writeDoubleLE(v, at)
    at = writeVarint(out, at + 8, end - start)
    let last = 0
    for (let i = start; i < end; i++) {
      const offset = ts[i]! - blockStartMs
      at = writeVarint(out, at, offset - last)
      last = offset
    }
  }
  if (at !== size) throw new Error(`BUG: encoded ${at} bytes of a ${size}-byte versions value`)
  return out
}

/** Decodes a value of encodeBlockVersions; throws CorruptDataError when it is not one. */
export function decodeBlockVersions(buf: Uint8Array, blockStartMs: number): BlockVersions {
  if (buf[0] !== ENCODING_VERSIONS_RUNS) throw new CorruptDataError('versions', `unknown encoding ${buf[0]}`, 0)
  const cursor = { at: 1 }
  const varint = (): number =>
    readVarint(buf, cursor, (what) => new CorruptDataError('versions', `${what} at byte ${cursor.at}`, cursor.at))
  const runs = varint()
  const ts: number[] = []
  const vers: number[] = []
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  for (let r = 0; r < runs; r++) {
    if (cursor.at + 8 > buf.length) throw new CorruptDataError('versions', `truncated at byte ${cursor.at}`, cursor.at)
    const v = view.getFloat64(cursor.at, true)
    cursor.at += 8
    const n = varint()
    let offset = 0
    for (let i = 0; i < n; i++) {
      offset += varint()
      if (offset >= BLOCK_MS)
        throw new CorruptDataError('versions', `offset ${offset} beyond the block at byte ${cursor.at}`, cursor.at)
      ts.push(blockStartMs + offset)
      vers.push(v)
    }
  }
  if (cursor.at !== buf.length)
    throw new CorruptDataError('versions', `${buf.length - cursor.at} trailing bytes`, cursor.at)
  return { ts: Float64Array.from(ts), vers: Float64Array.from(vers) }
}
