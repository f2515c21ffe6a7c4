// Regenerates gen/ from proto/ with buf and ts-proto, after linting the contract.
// Usage: node scripts/gen.mjs [outDir]   (outDir defaults to gen; the staleness test passes a temp dir)
import { spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const buf = join(root, 'node_modules', '.bin', 'buf')

function run(args) {
  // cwd is the package root because buf.yaml, buf.gen.yaml and the plugin path are relative to it.
  const result = spawnSync(buf, args, { cwd: root, stdio: 'inherit' })
  if (result.error) throw result.error
  if (result.status !== 0) throw new Error(`buf ${args[0]} failed with exit status ${result.status}`)
}

run(['lint'])
const outArg = process.argv[2]
if (outArg === undefined || resolve(outArg) === join(root, 'gen')) {
  run(['generate'])
} else {
  // buf writes under <base>/gen (the template's out); generating into a scratch base and copying
  // gives the caller exactly the directory it asked for, with nothing from an earlier run.
  const out = resolve(outArg)
  const base = mkdtempSync(join(tmpdir(), 'v3-gen-'))
  try {
    run(['generate', '--output', base])
    rmSync(out, { recursive: true, force: true })
    cpSync(join(base, 'gen'), out, { recursive: true })
  } finally {
    rmSync(base, { recursive: true, force: true })
  }
}
