import type { WriteLimits } from '../model/limits.js'
import { DEFAULT_WRITE_LIMITS } from '../model/limits.js'

/** When a write is fsynced. Every acknowledged write is in the write-ahead log whatever the policy. */
export type SyncPolicy = 'always' | 'group' | 'off'

/** Options of the basic engine; every field but dataDir is optional and has a documented default. */
export interface BasicEngineOptions {
  /** Folder of the RocksDB database; created when missing. */
  readonly dataDir: string
  /** Blocks newer than this (by block end) stay in the hot family. Default 2 hours. */
  readonly hotWindowMs?: number
  /** Data older than this is removed. 0 keeps data forever (the default). */
  readonly retentionMs?: number
  /**
   * How long the write versions of sealed points are kept, by block time: as long as writes of one
   * point may still arrive out of order (hints, repair). Older points compare as version 0, so a
   * write that carries a version beats them. Only writes with versions (a cluster node's) store any.
   * Default 5 hours: the default hint window (3 h) plus the default hot window (2 h).
   */
  readonly versionWindowMs?: number
  /**
   * always: fsync every write request before acknowledging it; group: requests that arrive together
   * share one fsync (the default); off: no fsync (an acknowledged write survives a crash of the
   * process, not a power loss).
   */
  readonly sync?: SyncPolicy
  /** A buffered block is sealed once its end has passed and it has not been written for this long. Default 2 s. */
  readonly sealIdleMs?: number
  /** When the write buffer holds more points than this, blocks are sealed early. Default 1,000,000. */
  readonly maxBufferedPoints?: number
  /** How often the sealer runs. Default 1 s. */
  readonly sealIntervalMs?: number
  /** How often blocks past the hot window move to the cold family. Default 60 s. */
  readonly moveIntervalMs?: number
  /** How often retention runs (when a retention is set). Default 5 minutes. */
  readonly retentionIntervalMs?: number
  /** A query that would return more points than this fails with RESOURCE_EXHAUSTED. Default 5,000,000. */
  readonly maxPointsPerQuery?: number
  /** Series read in parallel by one query. Default 16. */
  readonly queryConcurrency?: number
  /** RocksDB block cache of the hot family, bytes (the cold family has none). Default 64 MiB. */
  readonly blockCacheBytes?: number
  /** Worker threads that decode cold runs for large queries; 0 decodes on the event loop. Default 1. */
  readonly decodeWorkers?: number
  /** A series read of at least this many cold runs is decoded in a worker. Default 48 (two days). */
  readonly workerDecodeMinRuns?: number
  /** Points of recent query results kept for repeated queries; 0 disables. Default 1,000,000. */
  readonly resultCachePoints?: number
  /** Points of decoded blocks, runs and run summaries kept for repeated reads (see DecodedBlockCache); 0 disables. Default 4,000,000. */
  readonly decodedCachePoints?: number
  readonly limits?: Partial<WriteLimits>
}

export interface EngineConfig {
  readonly dataDir: string
  readonly hotWindowMs: number
  readonly retentionMs: number
  readonly versionWindowMs: number
  readonly sync: SyncPolicy
  readonly sealIdleMs: number
  readonly maxBufferedPoints: number
  readonly sealIntervalMs: number
  readonly moveIntervalMs: number
  readonly retentionIntervalMs: number
  readonly maxPointsPerQuery: number
  readonly queryConcurrency: number
  readonly blockCacheBytes: number
  readonly decodeWorkers: number
  readonly workerDecodeMinRuns: number
  readonly resultCachePoints: number
  readonly decodedCachePoints: number
  readonly limits: WriteLimits
}

export const ENGINE_DEFAULTS = {
  hotWindowMs: 2 * 60 * 60 * 1000,
  retentionMs: 0,
  versionWindowMs: 5 * 60 * 60 * 1000,
  sync: 'group',
  sealIdleMs: 2000,
  maxBufferedPoints: 1_000_000,
  sealIntervalMs: 1000,
  moveIntervalMs: 60_000,
  retentionIntervalMs: 5 * 60_000,
  maxPointsPerQuery: 5_000_000,
  queryConcurrency: 16,
  blockCacheBytes: 64 * 1024 * 1024,
  decodeWorkers: 1,
  workerDecodeMinRuns: 48,
  resultCachePoints: 1_000_000,
  decodedCachePoints: 4_000_000,
} as const satisfies Omit<EngineConfig, 'dataDir' | 'limits'>

function nonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0)
    throw new RangeError(`engine option ${name} must be a non-negative number, got ${value}`)
  return value
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0)
    throw new RangeError(`engine option ${name} must be a positive number, got ${value}`)
  return value
}

/** Whether writes under this configuration wait for their write-ahead log to be on disk. */
export function syncsWrites(config: EngineConfig): boolean {
  return config.sync !== 'off'
}

/** Applies defaults and validates; the result is frozen. */
export function resolveEngineConfig(options: BasicEngineOptions): EngineConfig {
  if (!options.dataDir) throw new RangeError('engine option dataDir is required')
  const sync = options.sync ?? ENGINE_DEFAULTS.sync
  if (sync !== 'always' && sync !== 'group' && sync !== 'off') {
    throw new RangeError(`engine option sync must be always, group or off, got ${String(sync)}`)
  }
  return Object.freeze({
    dataDir: options.dataDir,
    hotWindowMs: positive('hotWindowMs', options.hotWindowMs ?? ENGINE_DEFAULTS.hotWindowMs),
    retentionMs: nonNegative('retentionMs', options.retentionMs ?? ENGINE_DEFAULTS.retentionMs),
    versionWindowMs: positive('versionWindowMs', options.versionWindowMs ?? ENGINE_DEFAULTS.versionWindowMs),
    sync,
    sealIdleMs: nonNegative('sealIdleMs', options.sealIdleMs ?? ENGINE_DEFAULTS.sealIdleMs),
    maxBufferedPoints: positive('maxBufferedPoints', options.maxBufferedPoints ?? ENGINE_DEFAULTS.maxBufferedPoints),
    sealIntervalMs: positive('sealIntervalMs', options.sealIntervalMs ?? ENGINE_DEFAULTS.sealIntervalMs),
    moveIntervalMs: positive('moveIntervalMs', options.moveIntervalMs ?? ENGINE_DEFAULTS.moveIntervalMs),
    retentionIntervalMs: positive(
      'retentionIntervalMs',
      options.retentionIntervalMs ?? ENGINE_DEFAULTS.retentionIntervalMs,
    ),
    maxPointsPerQuery: positive('maxPointsPerQuery', options.maxPointsPerQuery ?? ENGINE_DEFAULTS.maxPointsPerQuery),
    queryConcurrency: positive('queryConcurrency', options.queryConcurrency ?? ENGINE_DEFAULTS.queryConcurrency),
    blockCacheBytes: nonNegative('blockCacheBytes', options.blockCacheBytes ?? ENGINE_DEFAULTS.blockCacheBytes),
    decodeWorkers: nonNegative('decodeWorkers', options.decodeWorkers ?? ENGINE_DEFAULTS.decodeWorkers),
    workerDecodeMinRuns: positive(
      'workerDecodeMinRuns',
      options.workerDecodeMinRuns ?? ENGINE_DEFAULTS.workerDecodeMinRuns,
    ),
    resultCachePoints: nonNegative('resultCachePoints', options.resultCachePoints ?? ENGINE_DEFAULTS.resultCachePoints),
    decodedCachePoints: nonNegative(
      'decodedCachePoints',
      options.decodedCachePoints ?? ENGINE_DEFAULTS.decodedCachePoints,
    ),
    limits: Object.freeze({ ...DEFAULT_WRITE_LIMITS, ...options.limits }),
  })
}

/** Time source; injected so sealing, tiering and retention are testable without sleeping. */
export interface Clock {
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }

/** The logging the engine needs; pino and console both fit. */
export interface Logger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

export const silentLogger: Logger = { info: () => {}, warn: () => {}, error: () => {} }

export interface EngineDeps {
  readonly clock?: Clock
  readonly logger?: Logger
}
