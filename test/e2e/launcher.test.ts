// bin/v3.js as users start it: an executable whose first line gives Node its options, which the
// scripts that start the server with `node bin/v3.js` (the bench, `npm run cluster`) read from there.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { test } from 'node:test'
import { serverNodeOptions } from '../../scripts/node-options.mjs'
import { refused } from '../fixtures/net.js'

const root = resolve(import.meta.dirname, '..', '..')

test('bin/v3.js runs as an executable through its first line', () => {
  const run = spawnSync(join(root, 'bin', 'v3.js'), [], { cwd: root, encoding: 'utf8' })
  // No command is a usage error: the usage goes to stderr; asked for, to stdout.
  assert.equal(run.status, 2)
  assert.equal(run.stdout, '')
  assert.match(run.stderr, /^Usage: v3 <command>/)
  const help = spawnSync(join(root, 'bin', 'v3.js'), ['--help'], { cwd: root, encoding: 'utf8' })
  assert.equal(help.status, 0)
  assert.equal(help.stderr, '')
  assert.match(help.stdout, /^Usage: v3 <command>/)
})

test('the Node options of its first line reach the server process and the scripts that start it', async () => {
  const options = serverNodeOptions()
  assert.ok(options.includes('--max-semi-space-size=16'), `got ${options.join(' ')}`)
  assert.ok(options.includes('--initial-old-space-size=128'), `got ${options.join(' ')}`)
  const dir = await mkdtemp(join(tmpdir(), 'v3-launcher-'))
  const child = spawn(
    join(root, 'bin', 'v3.js'),
    ['serve', '--data', dir, '--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0'],
    { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] },
  )
  try {
    await new Promise<void>((ok, fail) => {
      let out = ''
      child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
        out += chunk
        if (/listening on/.test(out)) ok()
      })
      child.once('exit', (code) => fail(new Error(`v3 serve exited with ${code}`)))
    })
    // env -S execs node in place: the pid is the server's, and its command line has the options.
    const argv = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0')
    for (const option of options) assert.ok(argv.includes(option), `server argv: ${argv.join(' ')}`)
  } finally {
    const exited = new Promise((ok) => child.once('exit', ok))
    child.kill('SIGTERM')
    await exited
    await rm(dir, { recursive: true, force: true })
  }
})

test('npm run cluster stops its nodes and the Consul emulator on SIGTERM, and removes its data folder', async () => {
  const env = { ...process.env }
  delete env.CONSUL_HTTP_ADDR
  const script = spawn(process.execPath, ['scripts/cluster.mjs'], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const exited = new Promise<number | null>((ok) => script.once('exit', (code) => ok(code)))
  let started: RegExpExecArray | undefined
  try {
    started = await new Promise<RegExpExecArray>((ok, fail) => {
      let out = ''
      script.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
        out += chunk
        const line = /^cluster of 3 nodes: (\S+) (\S+) (\S+) \(Consul (\S+)\); data in (\S+)$/m.exec(out)
        if (line) ok(line)
      })
      script.once('exit', (code) => fail(new Error(`scripts/cluster.mjs exited with ${code}`)))
    })
  } finally {
    script.kill('SIGTERM')
  }
  assert.equal(await exited, 0)
  const [, n1, n2, n3, consul, dataDir] = started
  assert.equal(existsSync(dataDir as string), false, `${dataDir} is left behind`)
  for (const address of [n1, n2, n3, new URL(consul as string).host]) {
    assert.equal(await refused(address as string), true, `${address} still accepts connections`)
  }
})
