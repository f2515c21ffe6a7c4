/**
 * The on-disk schema in one place: column families, key prefixes, key widths and the encoding
 * byte that starts every stored value. docs/format/ has a page per format with its byte layout.
 * A change here is a format change: bump SCHEMA_VERSION, and list the old version in
 * READ_AS_IS_SCHEMA_VERSIONS when this build reads its values unchanged; otherwise `v3 migrate`
 * re-encodes an old folder into a new one.
 */

/**
 * Stored under META_SCHEMA_KEY in the meta family. 2: cold runs may pack their timestamps
 * (encoding 0x22, or a mode bit of a scaled run; docs/format/run.md), and scaled ones carry their
 * summary as scaled integers (docs/format/cold-value.md). A folder of a version in
 * READ_AS_IS_SCHEMA_VERSIONS opens as it is and is marked SCHEMA_VERSION, since later runs may be
 * written in the new forms; any other is refused.
 */
export const SCHEMA_VERSION = 2
/** Older versions whose every value this build reads unchanged. */
export const READ_AS_IS_SCHEMA_VERSIONS: readonly number[] = [1]

/** Column families, fixed when the database opens (one per role, never one per day). */
export const CF_DEFAULT = 'default'
/** Engine metadata: schema version, tier watermarks. */
export const CF_META = 'meta'
/** Series definitions and the inverted tag index. */
export const CF_INDEX = 'index'
/** Write-ahead buffer: the points of acknowledged writes not yet sealed into blocks. */
export const CF_BUFFER = 'buffer'
/** Recent 30-second blocks, tuned for writes and cached reads. */
export const CF_HOT = 'hot'
/** Old data re-packed into long runs, heavier compression. */
export const CF_COLD = 'cold'
/**
 * Write versions of recent sealed points (cluster nodes only), keyed block first so that dropping
 * the versions of old blocks is one range delete (docs/format/versions.md). A data folder written
 * before it existed opens with it empty: RocksDB creates missing families.
 */
export const CF_VERSIONS = 'versions'

export const COLUMN_FAMILIES = [CF_DEFAULT, CF_META, CF_INDEX, CF_BUFFER, CF_HOT, CF_COLD, CF_VERSIONS] as const

/** Width of the fixed-length block every point belongs to. */
export const BLOCK_MS = 30_000
/** Blocks per cold run: one hour of 30-second blocks in one value. Runs start at multiples of this. */
export const RUN_BLOCKS = 120

/** Series ids are 8 bytes, derived from the canonical series key, the same on every node. */
export const SERIES_ID_BYTES = 8
/** Block numbers are stored as uint32 big-endian with this bias, so negative timestamps sort first. */
export const BLOCK_NUMBER_BIAS = 0x8000_0000
/** Row key: series id 8 | biased block number 4. */
export const ROW_KEY_BYTES = SERIES_ID_BYTES + 4

/** Index family key prefixes (one byte each). */
export const INDEX_PREFIX_SERIES = 0x53 // 'S' series id 8 -> series definition
/**
 * Retired posting records: 'M' metric 0x00 series id 8 -> empty, and 'T' metric 0x00 key 0x00
 * value 0x00 series id 8 -> empty. They were written, never read; the index opens by removing any
 * left in an older data folder, and the prefixes stay reserved.
 */
export const INDEX_PREFIX_METRIC_RETIRED = 0x4d
export const INDEX_PREFIX_TAG_RETIRED = 0x54

/**
 * A key RocksStore.flushWal puts and deletes in one batch in every family, to fill a memtable so
 * RocksDB flushes it; no reader sees it, and only its tombstone reaches the table files. One byte,
 * shorter than any key of any family, so that it never equals one.
 */
export const FLUSH_FILLER_KEY = '\x00'

/** Meta family keys. */
export const META_SCHEMA_KEY = 'schema_version'
export const META_COLD_MAX_BLOCK_KEY = 'cold_max_block'

/** Encoding bytes: the first byte of every stored value. */
export const ENCODING_SERIES_DEF = 0x01
export const ENCODING_BUFFER_V1 = 0x02
/** A write-buffer record whose series may carry write versions (docs/format/buffer.md). */
export const ENCODING_BUFFER_V2 = 0x03
/** A 30-second block: Gorilla delta-of-delta timestamps and XOR floats. */
export const ENCODING_BLOCK_GORILLA = 0x10
/** A cold run with Gorilla XOR values. */
export const ENCODING_RUN_GORILLA = 0x20
/** A cold run with Gorilla XOR values and packed timestamps (schema 2; docs/format/run.md). */
export const ENCODING_RUN_GORILLA_PACKED = 0x22
/** A cold run whose values are decimals scaled to integers and delta-encoded. */
export const ENCODING_RUN_SCALED = 0x21
/**
 * A cold-family value: a per-run summary (sum, min, max, first and last value) in front of the run,
 * so that aggregations over buckets covering whole runs skip decoding (docs/format/cold-value.md).
 */
export const ENCODING_COLD_SUMMARY = 0x30
/** The same in front of a scaled run: min, max and last as varints of its scaled integers (schema 2). */
export const ENCODING_COLD_SUMMARY_SCALED = 0x31
/** The write versions of one series' points in one block: runs of equal versions (docs/format/versions.md). */
export const ENCODING_VERSIONS_RUNS = 0x40
