/**
 * Peer transport benchmark: round trips per second and write-payload throughput of
 * ZmqPeerTransport between two processes on loopback. The serving process decodes each write
 * payload (decodePeerSeriesList: validation and the copy into aligned arrays) and answers a
 * PeerWriteResponse, as a node does before it hands the points to its engine, which is not
 * measured here. Each case runs twice, each time against a new serving process: plain ZeroMQ, and
 * with a peer key (--peer-key: CurveZMQ encryption, the ZAP handler checking the client's key),
 * and the table gives both and their ratio.
 *   npm run bench -- --peer
 *   node --import tsx bench/peer-bench.ts [--serve [<Z85 secret key>]]
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { PeerKind, PeerWriteResponse } from '../gen/v3storage/internal/v1/peer.js'
import { decodePeerSeriesList, encodePeerWrite } from '../src/cluster/peer-codec.js'
import { newPeerKey, type PeerKey, parsePeerKey } from '../src/cluster/peer-key.js'
import type { PeerEndpoint } from '../src/cluster/peer-transport.js'
import { ZmqPeerTransport } from '../src/cluster/zmq-peer-transport.js'
import type { SeriesPoints } from '../src/model/types.js'

const SERVER_ID = 'bench-server'

/** The serving side, with the key when given: prints its bound address on stdout, then serves until stdin closes. */
async function serve(key: PeerKey | undefined): Promise<void> {
  const transport = new ZmqPeerTransport({ nodeId: SERVER_ID, listen: '127.0.0.1:0', ...(key ? { key } : {}) })
  const address = await transport.listen(async (_from, kind, body) => {
    if (kind !== PeerKind.PEER_KIND_WRITE) return new Uint8Array(0)
    const series = decodePeerSeriesList(body)
    let points = 0
    for (const s of series) points += s.timestamps.length
    return PeerWriteResponse.encode({ pointsWritten: points, seriesWritten: series.length }).finish()
  })
  console.log(address)
  process.stdin.resume()
  await once(process.stdin, 'end')
  await transport.close()
}

/** One write payload: `seriesCount` series of `points` points each, full-precision values. */
function payload(seriesCount: number, points: number): Uint8Array {
  const series: SeriesPoints[] = []
  for (let s = 0; s < seriesCount; s++) {
    const timestamps = new Float64Array(points)
    const values = new Float64Array(points)
    for (let i = 0; i < points; i++) {
      timestamps[i] = 1_700_000_000_000 + i * 10_000
      values[i] = Math.sin(i + s) * 100
    }
    series.push({ metric: 'cpu.usage_user', tags: [{ key: 'host', value: `host_${s}` }], timestamps, values })
  }
  return encodePeerWrite(series)
}

interface PeerBenchRow {
  readonly name: string
  readonly roundTripsPerSecond: number
  readonly megabytesPerSecond: number
  readonly pointsPerSecond: number
  readonly medianMs: number
}

/** Sends `total` requests with `concurrency` in flight; timings of each round trip. */
async function measure(
  client: ZmqPeerTransport,
  peer: PeerEndpoint,
  name: string,
  kind: PeerKind,
  body: Uint8Array,
  pointsPerRequest: number,
  total: number,
  concurrency: number,
): Promise<PeerBenchRow> {
  const times: number[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < total) {
      next++
      const t = performance.now()
      await client.request(peer, { kind, body, ringVersion: 1, timeoutMs: 30_000 })
      times.push(performance.now() - t)
    }
  }
  const start = performance.now()
  await Promise.all(Array.from({ length: concurrency }, worker))
  const seconds = (performance.now() - start) / 1000
  times.sort((a, b) => a - b)
  return {
    name,
    roundTripsPerSecond: total / seconds,
    megabytesPerSecond: (total * body.byteLength) / seconds / 2 ** 20,
    pointsPerSecond: (total * pointsPerRequest) / seconds,
    medianMs: times[Math.floor(times.length / 2)] ?? 0,
  }
}

/** Every case against a serving child process, with the key when given. */
async function runCases(key: PeerKey | undefined): Promise<PeerBenchRow[]> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve', ...(key ? [key.secretKey] : [])],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  const [address] = (await once(createInterface({ input: child.stdout }), 'line')) as [string]
  const peer: PeerEndpoint = { id: SERVER_ID, address }
  const client = new ZmqPeerTransport({ nodeId: 'bench-client', ...(key ? { key } : {}) })
  const rows: PeerBenchRow[] = []
  try {
    const ping = new Uint8Array(0)
    // Warm-up: the connection, the JIT and the serving process's first decode.
    await measure(client, peer, 'warm-up', PeerKind.PEER_KIND_WRITE, payload(10, 1000), 10_000, 200, 8)
    rows.push(await measure(client, peer, 'ping, 1 in flight', PeerKind.PEER_KIND_PING, ping, 0, 5000, 1))
    rows.push(await measure(client, peer, 'ping, 64 in flight', PeerKind.PEER_KIND_PING, ping, 0, 50_000, 64))
    for (const [seriesCount, points, total] of [
      [1, 100, 20_000],
      [10, 1000, 2000],
      [10, 10_000, 300],
      [1, 1_000_000, 20],
    ] as const) {
      const body = payload(seriesCount, points)
      const label = `write ${(seriesCount * points).toLocaleString('en')} points (${(body.byteLength / 2 ** 10).toFixed(0)} KiB)`
      for (const concurrency of [1, 8]) {
        rows.push(
          await measure(
            client,
            peer,
            `${label}, ${concurrency} in flight`,
            PeerKind.PEER_KIND_WRITE,
            body,
            seriesCount * points,
            total,
            concurrency,
          ),
        )
      }
    }
  } finally {
    await client.close()
    child.stdin?.end()
    await once(child, 'exit')
  }
  return rows
}

/** Runs the benchmark plain and with a peer key, and prints a Markdown table of both. */
export async function runPeerBench(): Promise<{ plain: PeerBenchRow[]; keyed: PeerBenchRow[] }> {
  const plain = await runCases(undefined)
  const keyed = await runCases(newPeerKey())
  const fmt = (n: number): string => Math.round(n).toLocaleString('en')
  console.log(
    [
      '| peer transport, loopback, two processes | round trips/s plain | with a peer key | ratio | MB/s plain | with a key | median ms plain | with a key |',
      '|---|---|---|---|---|---|---|---|',
      ...plain.map((p, i) => {
        const k = keyed[i] as PeerBenchRow
        return `| ${p.name} | ${fmt(p.roundTripsPerSecond)} | ${fmt(k.roundTripsPerSecond)} | ${(k.roundTripsPerSecond / p.roundTripsPerSecond).toFixed(2)}x | ${p.megabytesPerSecond.toFixed(1)} | ${k.megabytesPerSecond.toFixed(1)} | ${p.medianMs.toFixed(3)} | ${k.medianMs.toFixed(3)} |`
      }),
    ].join('\n'),
  )
  return { plain, keyed }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const at = process.argv.indexOf('--serve')
  if (at < 0) await runPeerBench()
  else {
    const secret = process.argv[at + 1]
    await serve(secret === undefined ? undefined : parsePeerKey(secret))
  }
}
