export { status } from '@grpc/grpc-js'
export { V3ClientError } from './errors.js'
export * from './v3-client.js'
