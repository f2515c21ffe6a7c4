/**
 * The key of a cluster's node-to-node traffic: one CurveZMQ secret key that every node of the
 * cluster holds (`--peer-key <file>`). With it each node's ZeroMQ sockets encrypt every message,
 * and a node serves only connections that prove they hold the same key (zap-handler.ts).
 *
 * A key is a Curve25519 secret key in Z85 (ZeroMQ's text encoding: 40 characters for 32 bytes); its
 * public key is derived from it (X25519, as libsodium derives it), so the file holds one line.
 */
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto'
import { ValidationError } from '../model/errors.js'

/** The cluster's key pair, both halves in Z85, and the public key's bytes for the ZAP handler. */
export interface PeerKey {
  readonly publicKey: string
  readonly secretKey: string
  readonly publicBytes: Buffer
}

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#'
const KEY_BYTES = 32
const KEY_CHARS = 40
/** The DER (PKCS #8) prefix of a raw X25519 private key: what node:crypto reads the secret key as. */
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex')

function z85Encode(bytes: Buffer): string {
  let text = ''
  for (let i = 0; i < bytes.length; i += 4) {
    let value = bytes.readUInt32BE(i)
    const chunk: string[] = []
    for (let j = 0; j < 5; j++) {
      chunk.unshift(Z85[value % 85] as string)
      value = Math.floor(value / 85)
    }
    text += chunk.join('')
  }
  return text
}

/** The 32 bytes of a Z85 key; undefined when the text is not one. */
function z85Decode(text: string): Buffer | undefined {
  if (text.length !== KEY_CHARS) return undefined
  const bytes = Buffer.alloc(KEY_BYTES)
  let value = 0
  for (let i = 0; i < text.length; i++) {
    const digit = Z85.indexOf(text[i] as string)
    if (digit < 0) return undefined
    value = value * 85 + digit
    if (i % 5 === 4) {
      if (value > 0xffffffff) return undefined
      bytes.writeUInt32BE(value, (i - 4) * 0.8)
      value = 0
    }
  }
  return bytes
}

function keyOf(secret: Buffer): PeerKey {
  const privateKey = createPrivateKey({
    key: Buffer.concat([X25519_PKCS8_PREFIX, secret]),
    format: 'der',
    type: 'pkcs8',
  })
  const publicBytes = Buffer.from(
    createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(-KEY_BYTES),
  )
  return { publicKey: z85Encode(publicBytes), secretKey: z85Encode(secret), publicBytes }
}

/** A new random key, for `v3 cluster peer-key`. */
export function newPeerKey(): PeerKey {
  return keyOf(randomBytes(KEY_BYTES))
}

/** The key a `--peer-key` file holds: its Z85 secret key, alone on its line. */
export function parsePeerKey(text: string): PeerKey {
  const secret = z85Decode(text.trim())
  if (secret === undefined) {
    throw ValidationError.field(
      'peer-key',
      `must hold a CurveZMQ secret key: ${KEY_CHARS} characters of Z85, as \`v3 cluster peer-key\` writes`,
    )
  }
  return keyOf(secret)
}
