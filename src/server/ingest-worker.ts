// An ingest worker: decodes the bodies the HTTP listener hands it (see ingest-decode.ts) and answers
// with their points, handing the typed arrays back without copying them.
import { parentPort } from 'node:worker_threads'
import { answerOf, IngestDecoder, type IngestJob, transferList } from './ingest-decode.js'

const decoder = new IngestDecoder()

parentPort?.on('message', (job: IngestJob) => {
  const answer = answerOf(job.id, decoder.decode(job))
  parentPort?.postMessage(answer, transferList(answer))
})
