#!/usr/bin/env -S node --max-semi-space-size=2
// The CLI entry; the compiled TypeScript lives in dist/ (built by `npm install`).
//
// Why the V8 flag: bodies the gateway streams arrive as buffers outside V8's
// heap, freed only when a scavenge runs. With the default 16 MiB semi-space a
// 50 MiB upload causes almost none, and RSS swells by the bytes in transit; a
// 2 MiB semi-space keeps it bounded (docs/performance.md has the figures).
import { main } from '../dist/src/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
