/**
 * The client's TLS files, read and checked before grpc-js sees them: grpc-js reports a key given
 * as a certificate with OpenSSL's "PEM routines::no start line", naming neither the file nor the
 * setting, and takes a CA file that holds no certificate without a word until the handshake fails.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'

/** What messages call the TLS settings; the v3 command line calls them by its flags. */
export interface TlsSettingNames {
  readonly caFile: string
  readonly certFile: string
  readonly keyFile: string
}

export const TLS_OPTION_NAMES: TlsSettingNames = {
  caFile: 'tls.caFile',
  certFile: 'tls.certFile',
  keyFile: 'tls.keyFile',
}

export type TlsSetting = keyof TlsSettingNames

/** A TLS file that cannot be read or is not what its setting needs: "--tls-cert ca.key: not a PEM certificate". */
export class TlsFileError extends Error {
  readonly code = 'TLS_FILE'
  /** The setting that names the file. */
  readonly setting: TlsSetting
  readonly path: string

  constructor(message: string, setting: TlsSetting, path: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'TlsFileError'
    this.setting = setting
    this.path = path
  }
}

export interface TlsFiles {
  readonly ca: Buffer | null
  readonly key: Buffer | null
  readonly cert: Buffer | null
}

/** Header lines of the PEM blocks grpc-js (OpenSSL) takes as certificates. */
const PEM_CERTIFICATE = /-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----/

/**
 * The files of `tls`, each checked: the CA file and the certificate hold a PEM certificate, the key
 * is an unencrypted PEM private key, and it is the key of the certificate. Throws TlsFileError.
 */
export function readTlsFiles(
  tls: { readonly caFile?: string; readonly certFile?: string; readonly keyFile?: string },
  names: TlsSettingNames,
): TlsFiles {
  const fail = (setting: TlsSetting, path: string, problem: string, cause?: unknown): TlsFileError =>
    new TlsFileError(`${names[setting]} ${path}: ${problem}`, setting, path, cause === undefined ? {} : { cause })
  // Read synchronously because the client's constructor is; these are small files, read once per client.
  const read = (setting: TlsSetting, path: string): Buffer => {
    try {
      return readFileSync(path)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      const problem =
        code === 'ENOENT'
          ? 'no such file'
          : code === 'EISDIR'
            ? 'it is a folder, not a file'
            : `cannot read it: ${(err as Error).message}`
      throw fail(setting, path, problem, err)
    }
  }
  const certificate = (setting: TlsSetting, path: string): { bytes: Buffer; parsed: X509Certificate } => {
    const bytes = read(setting, path)
    try {
      if (!PEM_CERTIFICATE.test(bytes.toString('latin1'))) throw new Error('no PEM certificate block')
      return { bytes, parsed: new X509Certificate(bytes) }
    } catch (err) {
      throw fail(setting, path, 'not a PEM certificate', err)
    }
  }
  const privateKey = (path: string): { bytes: Buffer; parsed: KeyObject } => {
    const bytes = read('keyFile', path)
    try {
      return { bytes, parsed: createPrivateKey(bytes) }
    } catch (err) {
      const encrypted = (err as NodeJS.ErrnoException).code === 'ERR_MISSING_PASSPHRASE'
      throw fail(
        'keyFile',
        path,
        encrypted ? 'an encrypted private key; give it unencrypted' : 'not a PEM private key',
        err,
      )
    }
  }
  const ca = tls.caFile === undefined ? null : certificate('caFile', tls.caFile).bytes
  if (tls.certFile === undefined || tls.keyFile === undefined) return { ca, key: null, cert: null }
  const cert = certificate('certFile', tls.certFile)
  const key = privateKey(tls.keyFile)
  if (!cert.parsed.checkPrivateKey(key.parsed)) {
    throw fail('keyFile', tls.keyFile, `not the private key of ${names.certFile} ${tls.certFile}`)
  }
  return { ca, key: key.bytes, cert: cert.bytes }
}
