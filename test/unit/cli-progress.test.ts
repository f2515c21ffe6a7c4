import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Progress } from '../../src/cli/progress.js'

test('off a terminal, a progress line comes every 5 s from the start, even while the input stalls', (t) => {
  if (process.stderr.isTTY === true) {
    t.skip('stderr is a terminal here')
    return
  }
  t.mock.timers.enable({ apis: ['setInterval'] })
  const lines: string[] = []
  t.mock.method(process.stderr, 'write', (chunk: string) => {
    lines.push(chunk)
    return true
  })
  const progress = new Progress('import', 2 * 1024 * 1024, false)
  progress.addBytes(1024 * 1024)
  progress.addRow(2048)
  t.mock.timers.tick(4999)
  assert.deepEqual(lines, [])
  t.mock.timers.tick(1)
  assert.equal(lines.length, 1)
  assert.match(lines[0]!, /^import: 1\.0 MiB\/2\.0 MiB, 2048 rows, \d+ rows\/s, ETA \d+s\n$/)
  // Nothing arrives: the lines go on.
  t.mock.timers.tick(10_000)
  assert.equal(lines.length, 3)
  progress.done()
  t.mock.timers.tick(10_000)
  assert.equal(lines.length, 3)

  const quiet = new Progress('import', undefined, true)
  t.mock.timers.tick(10_000)
  quiet.done()
  assert.equal(lines.length, 3)
})
