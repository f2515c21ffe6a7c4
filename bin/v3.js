#!/usr/bin/env -S node --max-semi-space-size=32 --initial-old-space-size=128
// Runs the built CLI; `npm ci` builds dist/ through the prepare script.
//
// The first Node option above gives V8 a young generation of two 32 MiB semi-spaces instead of
// Node's two of 16 MiB. A server allocates short-lived objects per request (decoded series,
// validation's arrays, answers); with the larger semi-spaces far fewer of them survive a scavenge
// into the old generation, and the collector's own threads worked about a third as much on a
// remote-write load.
//
// The second keeps V8's limit for the old generation at 128 MiB or more. V8 starts marking the
// old generation once the room left under that limit is smaller than the young generation could
// promote; on a small heap (a cluster node holding a third of the data kept 22-31 MiB) the limit
// it computes left less room than two 32 MiB semi-spaces, so it marked and compacted the whole
// heap every few hundred milliseconds (10 full collections in 4.5 s of queries on one node) and
// its helper threads ran all along. With the floor, ingest through a node of three at replication
// factor 1 cost 0.876-0.907 s of CPU per million points against 0.954-0.986 s without it (three
// alternating pairs, the helper threads 1.9-2.0 s against 2.4-2.6 s), with the same peak RSS in
// the single-node bench (388 MiB both). A larger heap never marked this way, and gained nothing.
//
// Tools that start the server (`npm start`, `npm run cluster`, the bench) read the options from
// this line, so that they have one home. V8 reads them only at startup: they cannot be set from
// inside the process.
import '../dist/src/cli/main.js'
