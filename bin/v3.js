#!/usr/bin/env -S node --max-semi-space-size=16 --initial-old-space-size=128
// Runs the built CLI; `npm ci` builds dist/ through the prepare script.
//
// The first Node option above keeps V8's young generation at two semi-spaces of at most 16 MiB,
// Node 20's own default, written here so that it does not move with Node's. From 7e5fbc4 to
// 8658568 it was 32 MiB, so that fewer of a request's short-lived objects were promoted; in
// `npm run bench -- --protocols` at 8658568 the 16 MiB semi-spaces took 34 to 61 MiB off the peak
// RSS of both loads, with points/s within the spread between runs (README, Performance, "The young
// generation"), and the peak while ingesting is what issue 12 bounds.
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
