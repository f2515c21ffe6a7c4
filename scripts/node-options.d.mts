/** The Node options of bin/v3.js's first line, to start the server as `v3` starts it. */
export function serverNodeOptions(): string[]
