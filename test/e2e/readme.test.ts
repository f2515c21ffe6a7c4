// Runs the client example of README.md against a real server, so the README shows code that works.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { removeDataDir, startServerProcess } from './server-process.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

test('the README client example runs and gets the answers it describes', async () => {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
  const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1]
  assert.ok(example, 'README has a ts example')
  const server = await startServerProcess()
  const dir = await mkdtemp(join(ROOT, '.tmp-readme-'))
  try {
    const script = example
      .replace("'./src/client/index.js'", `'${join(ROOT, 'src', 'client', 'index.js')}'`)
      .replace("'127.0.0.1:50051'", `'${server.address}'`)
      .concat('\nconsole.log(JSON.stringify({ raw, perMinute, last, series }))\n')
    const file = join(dir, 'example.ts')
    await writeFile(file, script)
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', file], { cwd: ROOT })
    const out = JSON.parse(stdout) as {
      raw: Array<{ tags: Array<{ key: string; value: string }>; values: Record<string, number> }>
      perMinute: Array<{ tags: Array<{ key: string; value: string }>; values: Record<string, number> }>
      last: unknown[]
      series: unknown[]
    }
    assert.equal(out.raw.length, 1)
    assert.deepEqual(Object.values(out.raw[0]?.values ?? {}), [12.5, 13])
    assert.deepEqual(
      out.perMinute.map((s) => [s.tags.map((t) => `${t.key}=${t.value}`).join(','), Object.values(s.values)]),
      [
        ['host=a', [13]],
        ['host=b', [40]],
      ],
    )
    assert.equal(out.last.length, 2)
    assert.equal(out.series.length, 2)
  } finally {
    await rm(dir, { recursive: true, force: true })
    await server.stop()
    await removeDataDir(server.dataDir)
  }
})
