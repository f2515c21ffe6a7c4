// Contract discipline: the contract in proto/ must stay wire- and source-compatible (buf's FILE
// rules) with the last released one, checked in as a buf image. A deliberately broken copy of
// the contract must fail the same check, so the check is known to bite.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const buf = join(root, 'node_modules', '.bin', 'buf')
const released = join(root, 'docs', 'contract', 'v3storage-v1.binpb')

function breaking(dir: string): { status: number | null; output: string } {
  const result = spawnSync(buf, ['breaking', '--against', released], { cwd: dir, encoding: 'utf8' })
  return { status: result.status, output: `${result.stdout}${result.stderr}` }
}

/** A copy of the module (buf.yaml and proto/) with `edit` applied to one file. */
function brokenCopy(file: string, edit: (text: string) => string): string {
  const dir = mkdtempSync(join(tmpdir(), 'v3-breaking-'))
  cpSync(join(root, 'buf.yaml'), join(dir, 'buf.yaml'))
  cpSync(join(root, 'proto'), join(dir, 'proto'), { recursive: true })
  const path = join(dir, 'proto', 'v3storage', 'v1', file)
  const before = readFileSync(path, 'utf8')
  const after = edit(before)
  assert.notEqual(after, before, `BUG: the edit of ${file} changed nothing`)
  writeFileSync(path, after)
  return dir
}

test('proto/ is compatible with the released contract', () => {
  const { status, output } = breaking(root)
  assert.equal(status, 0, `buf breaking found incompatible changes to v3storage.v1:\n${output}`)
})

const BREAKS = [
  {
    name: 'a field changing type',
    file: 'common.proto',
    edit: (t: string) => t.replace('repeated double values = 4;', 'repeated float values = 4;'),
    expect: /values.*type/is,
  },
  {
    name: 'a removed RPC',
    file: 'query_service.proto',
    edit: (t: string) => t.replace(/^\s*rpc Latest\(.*$/m, ''),
    expect: /Latest/,
  },
] as const

for (const b of BREAKS) {
  test(`buf breaking catches ${b.name}`, () => {
    const dir = brokenCopy(b.file, b.edit)
    try {
      const { status, output } = breaking(dir)
      assert.notEqual(status, 0, `buf breaking accepted ${b.name}`)
      assert.match(output, b.expect)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
}
