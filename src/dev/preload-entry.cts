// The `node --require` entry for the preload. With `--import`, node would run wrangler's 10 MB
// CommonJS bundle through the ES module loader, which lexes it for exports: ~300 ms on every
// start. `--require` keeps the CommonJS path; Node >= 22.12 can require() our ES module.
import nodeModule = require("node:module");

// Node's on-disk code cache (os.tmpdir()/node-compile-cache): wrangler's bundle then compiles
// ~130 ms faster on every later start of a session.
nodeModule.enableCompileCache?.();
(require("./preload.js") as typeof import("./preload.js")).installForWrangler();
