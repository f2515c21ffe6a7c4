// makeDirs: mkdir -p without Node's recursive mkdir, which spins for ever under /proc.
import assert from 'node:assert/strict'
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { makeDirs } from '../../src/engine/make-dirs.js'

test('makeDirs creates the missing folders, takes one that exists, and fails on a file in the way or a folder that cannot be made', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'v3-make-dirs-'))
  try {
    const deep = join(dir, 'a', 'b', 'c')
    await makeDirs(deep)
    assert.ok((await stat(deep)).isDirectory())
    await makeDirs(deep)
    await makeDirs(join(dir, 'a', '..', 'a', 'b'))
    await writeFile(join(dir, 'file'), 'x')
    await assert.rejects(makeDirs(join(dir, 'file')), { code: 'EEXIST' })
    await assert.rejects(makeDirs(join(dir, 'file', 'sub')), { code: 'ENOTDIR' })
    // /proc takes no new folders: mkdir there fails with ENOENT, where Node's recursive mkdir retries for ever.
    await assert.rejects(makeDirs('/proc/v3-no-such-folder/data'), { code: 'ENOENT' })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
