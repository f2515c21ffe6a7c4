#!/usr/bin/env -S node --max-semi-space-size=32 --initial-old-space-size=128
// Runs the built CLI; `npm ci` builds dist/ through the prepare script.
//
// The first Node option above gives V8 a young generation of two 32 MiB semi-spaces instead of
// Node's two of 16 MiB. A server allocates short-lived objects per request (decoded series,
// validation's arrays, answers); with the larger semi-spaces far fewer of them survive a scavenge
// into the old generation, and the collector's own threads worked about a third as much on a
// remote-write load.
//
// The second keeps V8's limit for the old generation at 128 MiB or more. On a small heap (a cluster
// node holding a third of the data kept 22-31 MiB) the limit V8 computed left less room than the
// young generation could promote, so it marked the whole heap again every few hundred
// milliseconds. The README (Performance, Cluster) has what the floor changed and what it did not.
//
// Tools that start the server (`npm start`, `npm run cluster`, the bench) read the options from
// this line, so that they have one home. V8 reads them only at startup: they cannot be set from
// inside the process.
import '../dist/src/cli/main.js'
