import { LimitError } from '../model/errors.js'
import type { SeriesPoints } from '../model/types.js'
import { pointBytes, seriesOverheadBytes } from '../wire/series-codec.js'

/**
 * Cuts a result into messages of at most `budgetBytes` encoded bytes each, for QueryStream. Small
 * series share a message; a series too large for one continues in the next messages with the same
 * metric and tags. Slices share the result's memory, so chunking copies no points.
 *
 * The sizes are upper bounds (length prefixes are counted at their widest), so a message never
 * exceeds the budget. Throws LimitError when one series' metric, tags and a single point do not fit at all.
 */
export function chunkSeries(series: readonly SeriesPoints[], budgetBytes: number): SeriesPoints[][] {
  const messages: SeriesPoints[][] = []
  let current: SeriesPoints[] = []
  let used = 0
  const flush = (): void => {
    if (current.length > 0) messages.push(current)
    current = []
    used = 0
  }
  for (const s of series) {
    const overhead = seriesOverheadBytes(s)
    const n = s.timestamps.length
    let start = 0
    while (start < n) {
      if (used + overhead + pointBytes(s.timestamps[start]!) > budgetBytes) {
        if (current.length === 0) {
          throw new LimitError(
            'streamChunkBytes',
            budgetBytes,
            `cannot fit one point of series ${s.metric} into a stream message; its metric and tags take ${overhead} bytes`,
          )
        }
        flush()
        continue
      }
      let bytes = used + overhead
      let end = start
      while (end < n) {
        const next = bytes + pointBytes(s.timestamps[end]!)
        if (next > budgetBytes) break
        bytes = next
        end++
      }
      current.push({
        metric: s.metric,
        tags: s.tags,
        timestamps: s.timestamps.subarray(start, end),
        values: s.values.subarray(start, end),
      })
      used = bytes
      start = end
      if (start < n) flush()
    }
  }
  flush()
  return messages
}
