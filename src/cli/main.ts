import { PluginError } from '../engine/plugin-manager.js'
import { UsageError } from './args.js'

const USAGE = `Usage: v3 <command> [options]    (v3 <command> --help for its options)

Commands:
  serve     run a node
  import    load a CSV file (long or wide, gzip too) into a node
  export    write series as CSV, through QueryStream
  query     query with a PromQL-style selector: table, CSV or JSON
  series    list the series a selector matches
  stats     print a node's engine statistics
  migrate   copy series between data folders and nodes, verifying point counts
  cluster   cluster status: the members and their health; cluster repair: anti-entropy repair now;
            cluster decommission: move a member's ranges away and remove it from the ring
`

type Command = (args: readonly string[]) => Promise<number>

/**
 * Each command's module, loaded when the command runs: a start of `v3 serve` (a restart) then loads
 * none of the client commands' code.
 */
const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  import: async () => (await import('./import.js')).runImport,
  export: async () => (await import('./export.js')).runExport,
  query: async () => (await import('./query.js')).runQuery,
  series: async () => (await import('./query.js')).runSeries,
  stats: async () => (await import('./query.js')).runStats,
  migrate: async () => (await import('./migrate.js')).runMigrate,
  cluster: async () => (await import('./cluster.js')).runCluster,
}

/** The entry point of the `v3` command; the only module that runs on import. */
async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv
  if (command === 'serve') {
    const { serve } = await import('./serve.js')
    await serve(rest)
    return 0
  }
  if (command === undefined) {
    // No command is a usage error: its text goes where errors go.
    process.stderr.write(USAGE)
    return 2
  }
  if (command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(USAGE)
    return 0
  }
  const load = COMMANDS[command]
  if (load === undefined) throw new UsageError(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`)
  process.stdout.on('error', stdoutFailed)
  // Node's deprecation warnings speak to the authors of the code, not to a command's user: grpc-js
  // sets TLS's server name to the host it dials, and a node dialled over TLS by IP address drew a
  // DEP0123 warning on every run.
  process.noDeprecation = true
  return (await load())(rest)
}

/**
 * A client command's standard output failed. A reader that went away (`v3 export … | head`) ends
 * the command quietly with 141, the status of a Unix tool that SIGPIPE stopped, as `cat` and Go
 * programs give; anything else (a full disk) is one line naming it, exit 1.
 */
function stdoutFailed(err: NodeJS.ErrnoException): void {
  if (err.code === 'EPIPE') process.exit(141)
  console.error(`v3: cannot write standard output: ${err.message}`)
  process.exit(1)
}

main(process.argv.slice(2)).then(
  (code) => {
    // serve returns once it is listening; the process then lives on until a signal stops it.
    if (code !== 0) process.exitCode = code
  },
  (err: unknown) => {
    // A configuration mistake (a flag, a config key, a plugin) is the user's to fix: exit code 2.
    if (err instanceof UsageError || err instanceof PluginError) {
      console.error(`v3: ${err.message}`)
      process.exit(2)
    }
    // One line for what went wrong (a port in use, a locked data folder, a node that is down); a
    // stack trace only for what looks like a bug, where it is what the report needs.
    const bug = err instanceof TypeError || err instanceof ReferenceError || String(err).includes('BUG:')
    console.error(`v3: ${bug && err instanceof Error ? err.stack : err instanceof Error ? err.message : String(err)}`)
    // Exit rather than wait: a half-opened engine may hold timers or handles that keep Node alive.
    process.exit(1)
  },
)
