/**
 * Where import and migrate send points: a server (through WriteStream) or an open engine (a data
 * folder). Both take batches with flow control (send resolves when the sink can take more) and
 * report totals once everything is durable.
 */
import { type SeriesInput, tagsToList, type V3Client } from '../client/index.js'
import type { StorageEngine } from '../engine/storage-engine.js'
import type { ConsistencyLevel, WriteResult } from '../model/types.js'

export interface PointSink {
  /** Queues one batch; resolves once the sink can take the next. Rejects with the first failure. */
  send(batch: readonly SeriesInput[]): Promise<void>
  /** Resolves with the totals once every batch sent is durable; rejects with the first failure. */
  finish(): Promise<WriteResult>
}

/**
 * Sends through one WriteStream: flow control comes from gRPC (send waits while the transport has
 * no room), and the totals arrive when the stream ends, once everything is durable.
 */
export function serverSink(client: V3Client, options: { readonly consistency?: ConsistencyLevel } = {}): PointSink {
  const stream = client.writeStream({ consistency: options.consistency })
  return { send: (batch) => stream.write(batch), finish: () => stream.end() }
}

/**
 * Writes straight into an open engine, one batch at a time. The points are copies of stored ones
 * (migrate's), so they are stored as they are: NaN of any bits and ±Infinity too, which remote
 * write stores and the gRPC API refuses.
 */
export function engineSink(engine: StorageEngine): PointSink {
  let points = 0
  let series = 0
  return {
    async send(batch: readonly SeriesInput[]): Promise<void> {
      const r = await engine.write({
        series: batch.map((s) => ({
          metric: s.metric,
          tags: tagsToList(s.tags),
          timestamps: s.timestamps,
          values: s.values,
        })),
        acceptNaN: true,
      })
      points += r.pointsWritten
      series += r.seriesWritten
    },
    finish: async (): Promise<WriteResult> => ({ pointsWritten: points, seriesWritten: series }),
  }
}
