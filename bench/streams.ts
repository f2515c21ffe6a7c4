// Streaming ingest of the cpu-only data set, for `npm run bench`: WriteStream (the pre-encoded
// messages the Write bench sends, on one call) and Ingest through the batching writer (one write()
// per point, in time order, as a collector hands them over). Each runs against a fresh `v3 serve`,
// whose peak RSS (VmHWM) is read when the ingest is done, under the health checks every ingest of
// the bench runs under (probeDuring), so that its rate compares with the others'.
import { Client, credentials, Metadata, type ServiceError } from '@grpc/grpc-js'
import { WriteServiceService, WriteStreamResponse } from '../gen/v3storage/v1/write_service.js'
import { BatchingWriter, type WriterSeries } from '../src/client/index.js'
import { METRICS, POINTS_PER_SERIES, timestampAt } from './dataset.js'
import { grpcHealthProbe, peakRssMiB, probeDuring, removeServer, startServer } from './harness.js'

export interface IngestResult {
  readonly pointsPerSecond: number
  readonly peakRssMiB: number
}

export async function benchWriteStream(messages: Buffer[], totalPoints: number): Promise<IngestResult> {
  const server = await startServer()
  const raw = new Client(server.address, credentials.createInsecure())
  const probe = grpcHealthProbe(server.address)
  try {
    const under = await probeDuring(probe.check, async () => {
      const res = await writeStream(raw, messages)
      if (res.pointsWritten !== totalPoints) throw new Error(`WriteStream wrote ${res.pointsWritten} points`)
    })
    return {
      pointsPerSecond: Math.round(totalPoints / under.seconds),
      peakRssMiB: await peakRssMiB(server.proc.pid as number),
    }
  } finally {
    probe.close()
    raw.close()
    await removeServer(server)
  }
}

/** Sends every message on one WriteStream call, as fast as gRPC flow control lets it. */
function writeStream(raw: Client, messages: Buffer[]): Promise<WriteStreamResponse> {
  return new Promise<WriteStreamResponse>((resolve, reject) => {
    const call = raw.makeClientStreamRequest(
      WriteServiceService.writeStream.path,
      (b: Buffer) => b,
      (b: Buffer) => WriteStreamResponse.decode(b),
      new Metadata(),
      {},
      (err: ServiceError | null, r?: WriteStreamResponse) => (err || !r ? reject(err) : resolve(r)),
    )
    let next = 0
    // Sends as fast as gRPC flow control lets it: the server reads only when it has room.
    const send = (): void => {
      while (next < messages.length) {
        if (!call.write(messages[next++] as Buffer)) {
          call.once('drain', send)
          return
        }
      }
      call.end()
    }
    send()
  })
}

/**
 * The batching writer on one Ingest stream into a fresh server, point by point in time order:
 * through write(metric, tags, …), or (`bound`) through a series bound once per series with
 * writer.series(metric, tags), as an application that keeps its series' handles writes.
 */
export async function benchIngest(
  tags: Array<Record<string, string>>,
  values: Float64Array[][],
  batchPoints: number,
  totalPoints: number,
  bound = false,
): Promise<IngestResult> {
  const server = await startServer()
  const writer = new BatchingWriter(server.address, { batchPoints })
  const probe = grpcHealthProbe(server.address)
  try {
    const under = await probeDuring(probe.check, async () => {
      // Bound when the load starts, as an application binds its series when it learns them.
      const handles = bound ? tags.map((t) => METRICS.map((m) => writer.series(m, t))) : []
      for (let i = 0; i < POINTS_PER_SERIES; i++) {
        const t = timestampAt(i)
        for (let h = 0; h < tags.length; h++) {
          const hostValues = values[h] as Float64Array[]
          const hostTags = tags[h] as Record<string, string>
          const hostSeries = handles[h]
          for (let m = 0; m < METRICS.length; m++) {
            const value = (hostValues[m] as Float64Array)[i] as number
            const writable =
              hostSeries === undefined
                ? writer.write(METRICS[m] as string, hostTags, t, value)
                : (hostSeries[m] as WriterSeries).write(t, value)
            if (!writable) await writer.whenWritable()
          }
        }
      }
      await writer.close()
    })
    return {
      pointsPerSecond: Math.round(totalPoints / under.seconds),
      peakRssMiB: await peakRssMiB(server.proc.pid as number),
    }
  } finally {
    probe.close()
    writer.abort()
    await removeServer(server)
  }
}
