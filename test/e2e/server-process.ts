/**
 * Starts `v3 serve` as a real process on a free loopback port and hands back a client. Every test
 * that calls startServerProcess stops what it started (stop() or kill()), so no process outlives
 * its test file.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { V3Client, type V3ClientOptions } from '../../src/client/index.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const STARTUP_TIMEOUT_MS = 60_000
const LISTENING = /^v3 listening on (\S+)$/m
const METRICS = /^v3 metrics on (\S+)$/m

export interface ServerProcess {
  readonly address: string
  /** The /metrics URL, unless the process was started with --http-listen off. */
  readonly metricsUrl: string | undefined
  readonly dataDir: string
  readonly client: V3Client
  readonly child: ChildProcess
  /** Everything the process wrote to stderr so far. */
  stderr(): string
  /** SIGTERM, then waits for the exit; closes the client. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** SIGKILL, then waits for the exit; closes the client. */
  kill(): Promise<void>
}

export interface StartOptions {
  /** Reuse a data folder (to restart on it); default a new temporary folder. */
  readonly dataDir?: string
  /** Extra `v3 serve` flags. */
  readonly args?: readonly string[]
  readonly client?: V3ClientOptions
  /** Variables added to the process environment. */
  readonly env?: Readonly<Record<string, string>>
}

export async function makeDataDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'v3-e2e-'))
}

export async function removeDataDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
}

export async function startServerProcess(options: StartOptions = {}): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? (await makeDataDir())
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(ROOT, 'src', 'cli', 'main.ts'),
      'serve',
      '--data',
      dataDir,
      '--listen',
      '127.0.0.1:0',
      // Every test server takes a free HTTP port: the default 9464 would collide between processes.
      '--http-listen',
      '127.0.0.1:0',
      ...(options.args ?? []),
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } },
  )
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8')
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk
  })
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>

  const listening = new Promise<string>((resolveAddress, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`v3 serve did not start within ${STARTUP_TIMEOUT_MS} ms; stderr:\n${stderr}`))
    }, STARTUP_TIMEOUT_MS)
    child.stdout?.on('data', (chunk: string) => {
      stdout += chunk
      const match = LISTENING.exec(stdout)
      if (match?.[1] !== undefined) {
        clearTimeout(timer)
        resolveAddress(match[1])
      }
    })
    exited.then(([code, signal]) => {
      clearTimeout(timer)
      reject(new Error(`v3 serve exited (code ${code}, signal ${signal}) before listening; stderr:\n${stderr}`))
    }, reject)
  })
  let address: string
  try {
    address = await listening
  } catch (err) {
    // A server that never listened (a test of a refusal, most often) leaves no folder of ours behind.
    if (options.dataDir === undefined) {
      await exited.catch(() => undefined)
      await removeDataDir(dataDir)
    }
    throw err
  }

  const client = new V3Client(address, options.client)
  const waitExit = async (): Promise<{ code: number | null; signal: NodeJS.Signals | null }> => {
    const [code, signal] = await exited
    return { code, signal }
  }
  return {
    address,
    metricsUrl: METRICS.exec(stdout)?.[1],
    dataDir,
    client,
    child,
    stderr: () => stderr,
    async stop() {
      client.close()
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      return waitExit()
    },
    async kill() {
      client.close()
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await waitExit()
    },
  }
}
