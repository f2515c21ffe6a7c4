import { UsageError } from './args.js'
import { serve } from './serve.js'

const USAGE = `Usage: v3 <command> [options]

Commands:
  serve    run a node (v3 serve --help for its options)
`

/** The entry point of the `v3` command; the only module that runs on import. */
async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'serve':
      await serve(rest)
      return 0
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE)
      return command === undefined ? 2 : 0
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`)
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // serve returns once it is listening; the process then lives on until a signal stops it.
    if (code !== 0) process.exitCode = code
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      console.error(`v3: ${err.message}\n\n${USAGE}`.trimEnd())
      process.exit(2)
    }
    console.error('v3: cannot start:', err)
    // Exit rather than wait: a half-opened engine may hold timers or handles that keep Node alive.
    process.exit(1)
  },
)
