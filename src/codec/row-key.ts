/**
 * The time grid and the row keys of the hot and cold families (docs/format/row-key.md).
 *
 * A key is the series id followed by the biased block number, big-endian, so RocksDB's bytewise
 * order is (series, time) order, negative times included, and one series' range scan is one seek.
 */

import { MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS } from '../model/timestamps.js'
import { CorruptDataError } from './errors.js'
import { BLOCK_MS, BLOCK_NUMBER_BIAS, ROW_KEY_BYTES, RUN_BLOCKS, SERIES_ID_BYTES } from './schema.js'

/** Milliseconds in one cold run. Runs start at multiples of this since the epoch. */
export const RUN_MS = RUN_BLOCKS * BLOCK_MS

/**
 * The lowest and highest block numbers a key may hold: those of the storable time range, which
 * the model narrows to whole runs inside the uint32 field, so that every block's run start and
 * every exclusive upper bound (MAX_BLOCK + 1) is itself encodable.
 */
export const MIN_BLOCK = MIN_TIMESTAMP_MS / BLOCK_MS
export const MAX_BLOCK = (MAX_TIMESTAMP_MS + 1) / BLOCK_MS - 1
if (MIN_BLOCK % RUN_BLOCKS !== 0 || (MAX_BLOCK + 1) % RUN_BLOCKS !== 0 || MIN_BLOCK + BLOCK_NUMBER_BIAS < 0) {
  throw new Error('BUG: the storable time range is not whole runs inside the block field')
}

export { MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS }

/** The biased block field of the first key past every key of a series; no stored key has it. */
const SERIES_END_FIELD = 0xffff_ffff

/** Bounds for a RocksDB iterator or range delete: gte inclusive, lt exclusive. */
export interface KeyRange {
  readonly gte: Buffer
  readonly lt: Buffer
}

export interface DecodedRowKey {
  /** A copy of the 8-byte series id. */
  readonly seriesId: Buffer
  readonly block: number
}

/** The 30-second block holding tsMs (integer milliseconds since the epoch). */
export function blockNumberOf(tsMs: number): number {
  // Adding 0 turns the -0 that Math.floor returns for -0 into 0, so block numbers compare with Object.is.
  return Math.floor(tsMs / BLOCK_MS) + 0
}

/** The first millisecond of a block. */
export function blockStartMs(block: number): number {
  return block * BLOCK_MS
}

/** The first block of the run holding block: floored, so negative blocks round down too. */
export function runStartBlock(block: number): number {
  return Math.floor(block / RUN_BLOCKS) * RUN_BLOCKS + 0
}

/** The row key of a block: series id 8 | uint32 BE (block + BLOCK_NUMBER_BIAS). */
export function encodeRowKey(seriesId: Buffer, block: number): Buffer {
  checkSeriesId(seriesId)
  if (!Number.isInteger(block) || block < MIN_BLOCK || block > MAX_BLOCK) {
    throw new RangeError(`block ${block} is outside [${MIN_BLOCK}, ${MAX_BLOCK}]`)
  }
  return keyOf(seriesId, block + BLOCK_NUMBER_BIAS)
}

/** The block number in a row key, read in place. */
export function blockOfKey(key: Buffer): number {
  return key.readUInt32BE(8) - BLOCK_NUMBER_BIAS
}

/** Splits a row key; throws CorruptDataError when it is not one. */
export function decodeRowKey(key: Uint8Array): DecodedRowKey {
  if (key.length !== ROW_KEY_BYTES) {
    throw new CorruptDataError('row key', `length ${key.length} is not ${ROW_KEY_BYTES}`, 0)
  }
  const at = SERIES_ID_BYTES
  const biased = ((key[at]! << 24) | (key[at + 1]! << 16) | (key[at + 2]! << 8) | key[at + 3]!) >>> 0
  const block = biased - BLOCK_NUMBER_BIAS
  if (block < MIN_BLOCK || block > MAX_BLOCK) {
    throw new CorruptDataError('row key', `block ${block} out of range at byte ${at}`, at)
  }
  return { seriesId: Buffer.from(key.subarray(0, SERIES_ID_BYTES)), block }
}

/**
 * Keys of blocks fromBlock (inclusive) to toBlock (exclusive) of one series. Both lie in
 * [MIN_BLOCK, MAX_BLOCK + 1]; an empty range gives gte equal to lt.
 */
export function blockKeyRange(seriesId: Buffer, fromBlock: number, toBlock: number): KeyRange {
  checkSeriesId(seriesId)
  checkBound(fromBlock)
  checkBound(toBlock)
  const to = Math.max(fromBlock, toBlock)
  return { gte: keyOf(seriesId, fromBlock + BLOCK_NUMBER_BIAS), lt: keyOf(seriesId, to + BLOCK_NUMBER_BIAS) }
}

/**
 * Keys of the blocks that hold points of [startMs, endMs), clamped to the storable range, or null
 * when no block can hold one. Cold runs are keyed by their first block: widen fromBlock with
 * runStartBlock before scanning the cold family.
 */
export function timeKeyRange(seriesId: Buffer, startMs: number, endMs: number): KeyRange | null {
  const start = Math.max(startMs, MIN_TIMESTAMP_MS)
  const end = Math.min(endMs, MAX_TIMESTAMP_MS + 1)
  if (!(start < end)) return null
  return blockKeyRange(seriesId, blockNumberOf(start), blockNumberOf(end - 1) + 1)
}

/** Keys of every block of a series, for a scan or a range delete of the whole series. */
export function seriesKeyRange(seriesId: Buffer): KeyRange {
  checkSeriesId(seriesId)
  return { gte: keyOf(seriesId, 0), lt: keyOf(seriesId, SERIES_END_FIELD) }
}

function keyOf(seriesId: Buffer, biased: number): Buffer {
  const key = Buffer.allocUnsafe(ROW_KEY_BYTES)
  seriesId.copy(key, 0, 0, SERIES_ID_BYTES)
  key.writeUInt32BE(biased, SERIES_ID_BYTES)
  return key
}

function checkSeriesId(seriesId: Buffer): void {
  if (seriesId.length !== SERIES_ID_BYTES) {
    throw new RangeError(`series id has ${seriesId.length} bytes, not ${SERIES_ID_BYTES}`)
  }
}

function checkBound(block: number): void {
  if (!Number.isInteger(block) || block < MIN_BLOCK || block > MAX_BLOCK + 1) {
    throw new RangeError(`block bound ${block} is outside [${MIN_BLOCK}, ${MAX_BLOCK + 1}]`)
  }
}
