// Fails when gen/ is stale: regenerates from proto/ into a temp dir and compares file by file.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))
    .sort()
}

test('gen/ matches what npm run gen produces from proto/', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'v3-gen-fresh-'))
  try {
    const out = join(scratch, 'gen')
    const result = spawnSync(process.execPath, [join(root, 'scripts', 'gen.mjs'), out], { encoding: 'utf8' })
    assert.equal(result.status, 0, `gen failed:\n${result.stdout}${result.stderr}`)
    const committed = listFiles(join(root, 'gen'))
    const fresh = listFiles(out)
    assert.deepEqual(committed, fresh, 'gen/ has extra or missing files; run npm run gen')
    for (const file of fresh) {
      const want = readFileSync(join(out, file), 'utf8')
      const have = readFileSync(join(root, 'gen', file), 'utf8')
      assert.ok(have === want, `gen/${file} is stale; run npm run gen`)
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
})
