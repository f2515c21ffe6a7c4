// Fails when gen/ or clients/python/gen is stale: regenerates from proto/ into a temp dir and
// compares file by file.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
// @ts-expect-error: a plain .mjs script without type declarations.
import { hasPythonTools } from '../../scripts/gen.mjs'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))
    .sort()
}

function assertSameTree(committedDir: string, freshDir: string, label: string): void {
  const committed = listFiles(committedDir).filter((f) => !f.includes('__pycache__'))
  const fresh = listFiles(freshDir)
  assert.deepEqual(committed, fresh, `${label} has extra or missing files; run npm run gen`)
  for (const file of fresh) {
    const want = readFileSync(join(freshDir, file), 'utf8')
    const have = readFileSync(join(committedDir, file), 'utf8')
    assert.ok(have === want, `${label}/${file} is stale; run npm run gen`)
  }
}

function generate(args: string[]): void {
  const result = spawnSync(process.execPath, [join(root, 'scripts', 'gen.mjs'), ...args], { encoding: 'utf8' })
  assert.equal(result.status, 0, `gen failed:\n${result.stdout}${result.stderr}`)
}

test('gen/ matches what npm run gen produces from proto/', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'v3-gen-fresh-'))
  try {
    const out = join(scratch, 'gen')
    generate([out])
    assertSameTree(join(root, 'gen'), out, 'gen')
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
})

const pythonSkip = hasPythonTools()
  ? false
  : 'needs /usr/bin/python3 with grpc_tools: apt-get install python3-grpcio python3-grpc-tools'

test('clients/python/gen matches what npm run gen produces from proto/', { skip: pythonSkip }, () => {
  const scratch = mkdtempSync(join(tmpdir(), 'v3-gen-fresh-py-'))
  try {
    const ts = join(scratch, 'ts')
    const py = join(scratch, 'py')
    generate([ts, py])
    assertSameTree(join(root, 'clients', 'python', 'gen'), py, 'clients/python/gen')
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
})
