import { mkdir, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'

/**
 * Creates a folder and the missing folders above it, as `mkdir -p` does. Not Node's
 * `mkdir(path, { recursive: true })`: where mkdir fails with ENOENT although the parent exists
 * (under /proc, for one), that retries for ever at full CPU. Here a folder that cannot be made
 * fails with its own error. A folder that already exists is fine; a file in the way is EEXIST.
 */
export async function makeDirs(path: string): Promise<void> {
  const target = resolve(path)
  if (await made(target)) return
  const parent = dirname(target)
  if (parent !== target) await makeDirs(parent)
  // The parent is there now: an error this time is the folder's own.
  if (!(await made(target))) await mkdir(target)
}

/** mkdir of one folder: true once it is there, false when its parent is missing. */
async function made(path: string): Promise<boolean> {
  try {
    await mkdir(path)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return false
    if (code === 'EEXIST' && (await stat(path)).isDirectory()) return true
    throw err
  }
}
