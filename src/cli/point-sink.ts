/**
 * Where import and migrate send points: a server (through WriteStream) or an open engine (a data
 * folder). Both take batches with flow control (send resolves when the sink can take more) and
 * report totals once everything is durable.
 */
import { type SeriesInput, type V3Client, V3ClientError } from '../client/index.js'
import type { StorageEngine } from '../engine/storage-engine.js'
import type { WriteResult } from '../model/types.js'

export interface PointSink {
  /** Queues one batch; resolves once the sink can take the next. Rejects with the first failure. */
  send(batch: readonly SeriesInput[]): Promise<void>
  /** Resolves with the totals once every batch sent is durable; rejects with the first failure. */
  finish(): Promise<WriteResult>
  /** Batches that were durable before the failure, when the sink failed. */
  readonly acceptedBatches: number
}

/**
 * Sends through one WriteStream: flow control comes from gRPC (send waits while the transport has
 * no room), and the totals arrive when the stream ends, once everything is durable. When the
 * server rejects a batch, it names it as messages[i]: the i batches before it are written.
 */
export function serverSink(client: V3Client): PointSink {
  const stream = client.writeStream()
  let sent = 0
  const sink = {
    acceptedBatches: 0,
    async send(batch: readonly SeriesInput[]): Promise<void> {
      try {
        await stream.write(batch)
        sent++
      } catch (err) {
        sink.acceptedBatches = acceptedBefore(err, sent)
        throw err
      }
    },
    async finish(): Promise<WriteResult> {
      try {
        const result = await stream.end()
        sink.acceptedBatches = sent
        return result
      } catch (err) {
        sink.acceptedBatches = acceptedBefore(err, sent)
        throw err
      }
    },
  }
  return sink
}

/** How many batches were stored before a stream failed: the index the server names, else none known. */
function acceptedBefore(err: unknown, sent: number): number {
  const fields = err instanceof V3ClientError ? err.violations.map((v) => v.field) : []
  const m = /^messages\[(\d+)\]/.exec(fields[0] ?? (err instanceof V3ClientError ? err.details : ''))
  return m ? Math.min(Number(m[1]), sent) : 0
}

/** Writes straight into an open engine, one batch at a time. */
export function engineSink(engine: StorageEngine): PointSink {
  let points = 0
  let series = 0
  const sink = {
    acceptedBatches: 0,
    async send(batch: readonly SeriesInput[]): Promise<void> {
      const r = await engine.write({
        series: batch.map((s) => ({
          metric: s.metric,
          tags: Array.isArray(s.tags)
            ? s.tags
            : Object.entries(s.tags ?? {}).map(([key, value]) => ({ key, value: value as string })),
          timestamps: s.timestamps,
          values: s.values,
        })),
      })
      points += r.pointsWritten
      series += r.seriesWritten
      sink.acceptedBatches++
    },
    finish: async (): Promise<WriteResult> => ({ pointsWritten: points, seriesWritten: series }),
  }
  return sink
}
