export { status } from '@grpc/grpc-js'
export type { ConsistencyLevel } from '../model/types.js'
export {
  BatchingWriter,
  type BatchingWriterOptions,
  type IngestRejection,
  type IngestRetry,
  type WriterSeries,
} from './batching-writer.js'
export { V3ClientError } from './errors.js'
export type { LiveSubscription, SubscribeOptions } from './subscribe.js'
export { TlsFileError, type TlsSettingNames } from './tls-files.js'
export * from './v3-client.js'
