/**
 * Certificates for the TLS tests, made at test time with openssl so that no private key is ever
 * committed: a CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, all
 * signed by the CA, plus a second CA that signs nothing the server trusts.
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface TestCertificates {
  readonly dir: string
  readonly caFile: string
  readonly serverCert: string
  readonly serverKey: string
  readonly clientCert: string
  readonly clientKey: string
  /** A client certificate signed by a CA the server does not trust. */
  readonly strangerCert: string
  readonly strangerKey: string
  remove(): Promise<void>
}

/** Why TLS tests are skipped, or false when openssl is there to make their certificates. */
export function opensslMissing(): string | false {
  const result = spawnSync('openssl', ['version'], { stdio: 'ignore' })
  return result.status === 0 ? false : 'needs openssl to make test certificates: apt-get install openssl'
}

function openssl(dir: string, args: readonly string[]): void {
  const result = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`openssl ${args.join(' ')} failed:\n${result.stderr}`)
}

/** P-256 keys: much faster to make than RSA, and every TLS stack here accepts them. */
const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

function makeCa(dir: string, name: string): void {
  openssl(dir, [
    'req',
    '-x509',
    ...NEW_KEY,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  ])
}

async function makeLeaf(dir: string, name: string, ca: string, extensions: string): Promise<void> {
  await writeFile(join(dir, `${name}.ext`), extensions)
  openssl(dir, ['req', ...NEW_KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`])
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.pem`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-out',
    `${name}.pem`,
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
  ])
}

export async function makeTestCertificates(): Promise<TestCertificates> {
  const dir = await mkdtemp(join(tmpdir(), 'v3-certs-'))
  makeCa(dir, 'ca')
  makeCa(dir, 'stranger-ca')
  await makeLeaf(dir, 'server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n')
  await makeLeaf(dir, 'client', 'ca', 'extendedKeyUsage=clientAuth\n')
  await makeLeaf(dir, 'stranger', 'stranger-ca', 'extendedKeyUsage=clientAuth\n')
  const file = (name: string): string => join(dir, name)
  return {
    dir,
    caFile: file('ca.pem'),
    serverCert: file('server.pem'),
    serverKey: file('server.key'),
    clientCert: file('client.pem'),
    clientKey: file('client.key'),
    strangerCert: file('stranger.pem'),
    strangerKey: file('stranger.key'),
    remove: () => rm(dir, { recursive: true, force: true }),
  }
}
