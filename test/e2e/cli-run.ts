/** Runs `v3 <command>` as a real process and collects its output, exit code and peak RSS. */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const MAIN = join(ROOT, 'src', 'cli', 'main.ts')

export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  /** Peak resident set size of the process in bytes (VmHWM, sampled until it exited). */
  readonly peakRssBytes: number
}

/** The kernel's high-water mark of the process's RSS; 0 once the process is gone. */
function peakRss(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}

export interface RunOptions {
  readonly stdin?: Buffer
  readonly env?: Record<string, string>
  /** A file descriptor the command writes its standard output to, instead of a pipe read here. */
  readonly stdoutFd?: number
  /** Closes the reading end of the stdout pipe after the first chunk, as `| head -1` does. */
  readonly closeStdoutEarly?: boolean
}

export function runV3(args: readonly string[], options: RunOptions = {}) {
  return new Promise<CliResult>((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['pipe', options.stdoutFd ?? 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let peak = 0
    child.stdout?.setEncoding('utf8').on('data', (c: string) => {
      stdout += c
      if (options.closeStdoutEarly) child.stdout?.destroy()
    })
    child.stderr?.setEncoding('utf8').on('data', (c: string) => {
      stderr += c
    })
    // VmHWM only grows, so the last sample before the exit is within one interval of the peak.
    const timer = setInterval(() => {
      if (child.pid !== undefined) peak = Math.max(peak, peakRss(child.pid))
    }, 20)
    child.on('error', reject)
    child.on('close', (code) => {
      clearInterval(timer)
      resolvePromise({ code, stdout, stderr, peakRssBytes: peak })
    })
    child.stdin?.end(options.stdin)
  })
}
