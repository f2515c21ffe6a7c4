/** Server TLS credentials from PEM files, with optional client-certificate checking (mutual TLS). */

import { readFile } from 'node:fs/promises'
import { ServerCredentials } from '@grpc/grpc-js'

export interface TlsOptions {
  /** PEM certificate chain the server presents, leaf first. */
  readonly certFile: string
  /** PEM private key of that certificate. */
  readonly keyFile: string
  /**
   * PEM CA certificates that sign client certificates. When set, every client must present a
   * certificate signed by one of them (mutual TLS); absent: clients need no certificate.
   */
  readonly clientCaFile?: string
}

async function readPem(what: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    throw new Error(`cannot read TLS ${what} ${path}: ${reason}`, { cause: err })
  }
}

/**
 * Reads the files once, at start. A bad certificate or key is reported by grpc-js when the port is
 * bound, which startServer turns into "cannot listen on …" with the cause.
 */
export async function tlsCredentials(tls: TlsOptions): Promise<ServerCredentials> {
  const { cert, key, clientCa } = await readTlsFiles(tls)
  return ServerCredentials.createSsl(clientCa, [{ cert_chain: cert, private_key: key }], clientCa !== null)
}

/**
 * The PEM files of the options, read once; the HTTP listener serves the same certificate as gRPC.
 * One after the other, so that when several are missing the error always names the first of
 * certificate, key and client CA (read in parallel, whichever read failed first was named).
 */
export async function readTlsFiles(tls: TlsOptions): Promise<{ cert: Buffer; key: Buffer; clientCa: Buffer | null }> {
  const cert = await readPem('certificate', tls.certFile)
  const key = await readPem('key', tls.keyFile)
  const clientCa = tls.clientCaFile === undefined ? null : await readPem('client CA', tls.clientCaFile)
  return { cert, key, clientCa }
}
