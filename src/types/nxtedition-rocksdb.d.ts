// Types for the part of @nxtedition/rocksdb (an abstract-level store) that the engine uses; the
// package ships none. Column handles are opaque natives, passed back in options.
declare module '@nxtedition/rocksdb' {
  export type ColumnHandle = { readonly __column: unique symbol }

  export interface ColumnOptions {
    /** ZSTD for every level when true (the default); no compression when false. */
    compression?: boolean
    /** "level" or "universal": sets write buffer sizes and per-level compression from memtableMemoryBudget. */
    compaction?: 'level' | 'universal'
    memtableMemoryBudget?: number
    /** Block cache bytes for this family; 0 disables the cache. */
    cacheSize?: number
    blockSize?: number
    optimize?: 'point-lookup' | 'range-lookup'
    prefixExtractor?: string
    filterPolicy?: string
    cacheIndexAndFilterBlocks?: boolean
  }

  export interface OpenOptions extends ColumnOptions {
    createIfMissing?: boolean
    errorIfExists?: boolean
    parallelism?: number
    walCompression?: boolean
    infoLogLevel?: 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'header'
    columns?: Record<string, ColumnOptions>
  }

  export interface RangeOptions {
    gt?: Buffer
    gte?: Buffer
    lt?: Buffer
    lte?: Buffer
    reverse?: boolean
    limit?: number
    column?: ColumnHandle
  }

  export interface IteratorOptions extends RangeOptions {
    keys?: boolean
    values?: boolean
    fillCache?: boolean
    highWaterMarkBytes?: number
  }

  export interface Iterator {
    nextv(size: number): Promise<Array<[Buffer, Buffer]>>
    /** Moves to the first key at or after `target` within the iterator's range; synchronous. */
    seek(target: Buffer): void
    /**
     * The synchronous read behind nextv (undocumented): up to `size` entries from the position,
     * flat as key, value, key, value…; `finished` once the range is exhausted.
     */
    _nextvSync(size: number): { rows: Buffer[]; finished: boolean }
    close(): Promise<void>
  }

  /**
   * The engine writes batches through the binding's own `_put` and `_del` (abstract-level's
   * implementor API), not abstract-level's `put` and `del`: those check and re-encode each
   * operation and keep a copy of it in a list for their 'batch' event, 4-7 µs a put against
   * 0.5-1 µs for the binding's (150,000 puts, scratch), which a seal pays per block it writes.
   * A batch written or closed refuses both (the binding asserts its native batch).
   */
  export interface ChainedBatch {
    _put(key: Buffer, value: Buffer, options?: { column?: ColumnHandle }): void
    _del(key: Buffer, options?: { column?: ColumnHandle }): void
    readonly length: number
    write(options?: { sync?: boolean }): Promise<void>
    close(): Promise<void>
  }

  export class RocksLevel {
    constructor(location: string, options?: { keyEncoding?: 'buffer'; valueEncoding?: 'buffer' })
    readonly status: 'opening' | 'open' | 'closing' | 'closed'
    readonly columns: Record<string, ColumnHandle>
    /** The latest sequence number: it moves with every write. */
    readonly sequence: number
    open(options?: OpenOptions): Promise<void>
    close(): Promise<void>
    batch(): ChainedBatch
    getMany(
      keys: Buffer[],
      options?: { column?: ColumnHandle; fillCache?: boolean },
    ): Promise<Array<Buffer | undefined>>
    /**
     * The synchronous multi-get behind getMany (undocumented, no status check: call it only while
     * the database is open). Values as getMany gives them, undefined where a key is absent.
     */
    _getManySync(keys: Buffer[], options?: { column?: ColumnHandle }): Array<Buffer | undefined>
    iterator(options?: IteratorOptions): Iterator
    clear(options: RangeOptions): Promise<void>
    getProperty(name: string): string
  }
}
