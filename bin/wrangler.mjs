#!/usr/bin/env node
// Our `wrangler`: decides from argv alone whether a command is ours; all others run the real
// wrangler unchanged. Keep this file tiny: it runs on every command.
import { main } from "../dist/dispatch.js";

await main(process.argv.slice(2));
