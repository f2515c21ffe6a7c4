// The Node options of bin/v3.js's first line (`#!/usr/bin/env -S node <options>`): scripts that
// start the server with `node bin/v3.js` pass them too, so that it runs as `v3` and `npm start` run it.
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'

export function serverNodeOptions() {
  const first = readFileSync(resolve(import.meta.dirname, '..', 'bin', 'v3.js'), 'utf8').split('\n', 1)[0] ?? ''
  const m = /^#!\/usr\/bin\/env -S node(?: (.*))?$/.exec(first)
  if (m === null) throw new Error(`bin/v3.js does not start with "#!/usr/bin/env -S node": ${first}`)
  return (m[1] ?? '').split(' ').filter(Boolean)
}
