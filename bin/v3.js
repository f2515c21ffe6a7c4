#!/usr/bin/env -S node --max-semi-space-size=32
// Runs the built CLI; `npm ci` builds dist/ through the prepare script.
//
// The Node option above gives V8 a young generation of two 32 MiB semi-spaces instead of Node's
// two of 16 MiB. A server allocates short-lived objects per request (decoded series, validation's
// arrays, answers); with the larger semi-spaces far fewer of them survive a scavenge into the old
// generation, and the collector's own threads worked about a third as much on a remote-write load.
// Tools that start the server (`npm start`, `npm run cluster`, the bench) read it from this line,
// so that it has one home. V8 reads it only at startup: it cannot be set from inside the process.
import '../dist/src/cli/main.js'
