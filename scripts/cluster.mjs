// `npm run cluster`: three local cluster nodes to try the integrated edition, against the Consul
// agent at $CONSUL_HTTP_ADDR when set, else against the Consul API emulator of the test tree. Data
// goes to a temporary folder; Ctrl-C (or SIGTERM) stops every process this started.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { serverNodeOptions } from './node-options.mjs'

const root = resolve(import.meta.dirname, '..')
const children = []
const dataRoot = mkdtempSync(join(tmpdir(), 'v3-cluster-'))

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer()
    server.once('error', fail)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => ok(port))
    })
  })
}

/** Starts a process and resolves with the first stdout line that matches `ready`. */
function start(name, args, ready) {
  const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  let out = ''
  return new Promise((ok, fail) => {
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      out += chunk
      const match = ready.exec(out)
      if (match) ok(match[1])
    })
    child.once('exit', (code) => fail(new Error(`${name} exited with ${code}`)))
  })
}

/** Nodes get this long to stop cleanly on SIGTERM (their --shutdown-timeout and a margin) before SIGKILL. */
const STOP_MS = 15_000
let stopping = false

/** Stops every process this started, waits until all have exited, then removes the data folder. */
async function stopAll() {
  if (stopping) return
  stopping = true
  const running = children.filter((child) => child.exitCode === null && child.signalCode === null)
  const exits = running.map((child) => new Promise((ok) => child.once('exit', ok)))
  for (const child of running) child.kill('SIGTERM')
  const kill = setTimeout(() => {
    for (const child of running) child.kill('SIGKILL')
  }, STOP_MS)
  await Promise.all(exits)
  clearTimeout(kill)
  rmSync(dataRoot, { recursive: true, force: true })
  process.exit(0)
}
process.on('SIGINT', stopAll)
process.on('SIGTERM', stopAll)

try {
  const consul =
    process.env.CONSUL_HTTP_ADDR ||
    (await start(
      'the Consul emulator',
      ['--import', 'tsx', 'test/fixtures/consul-emulator.ts'],
      /^consul emulator on (\S+)$/m,
    ))
  const addresses = []
  for (const id of ['n1', 'n2', 'n3']) {
    const port = await freePort()
    const peer = await freePort()
    const address = await start(
      id,
      [
        ...serverNodeOptions(),
        'bin/v3.js',
        'serve',
        '--cluster',
        '--node-id',
        id,
        '--consul',
        consul,
        '--listen',
        `127.0.0.1:${port}`,
        '--peer-listen',
        `127.0.0.1:${peer}`,
        '--http-listen',
        '127.0.0.1:0',
        '--data',
        join(dataRoot, id),
      ],
      /^v3 listening on (\S+)$/m,
    )
    addresses.push(address)
  }
  console.log(`cluster of 3 nodes: ${addresses.join(' ')} (Consul ${consul}); data in ${dataRoot}`)
  console.log(`try: npx v3 cluster status --server ${addresses[0]}`)
  console.log('Ctrl-C stops them.')
} catch (err) {
  console.error(`npm run cluster: ${err.message}`)
  await stopAll()
}
