// The owner program: a detached, headless Miniflare that alone opens the KV, R2 and D1 files of
// one persist root (owner.ts), or, with --standby, a pre-started successor for the running owner
// (standby.ts). Sessions reach whichever serves through the root's storage candidate
// (storage-candidate.ts) and find it through our owner record (records.ts).
import { enableCompileCache } from "node:module";
import { parseArgs } from "node:util";
import { setFlagsFromString } from "node:v8";
import { openLifeline } from "../lifeline.js";
import { readOwner, readStandby, removeFile } from "../records.js";
import { runOwner } from "./owner.js";
import { OwnerProcess } from "./process.js";
import { runStandby } from "./standby.js";

// Owners start on every failover: let Node cache miniflare's compiled code on disk.
enableCompileCache();
// V8's memory reducer runs full GCs over the heap (miniflare's bundle, the config) once we go
// idle: measured, 2/3 of an idle owner's CPU in its first 30 s (155 → 54 CPU-ms) for ~+14 MiB of
// RSS. Set at run time: a V8 without the flag logs one line instead of refusing to start.
setFlagsFromString("--no-memory-reducer");
// miniflare prefers CLOUDFLARE_DEV_REGISTRY_PATH over any registry it is given; our instances
// register only in private registries (see instance.ts), and the real one comes as --registry.
delete process.env.CLOUDFLARE_DEV_REGISTRY_PATH;

const { values } = parseArgs({
  options: {
    "persist-root": { type: "string" },
    registry: { type: "string" },
    standby: { type: "boolean", default: false },
  },
});
if (!values["persist-root"] || !values.registry) {
  console.error("usage: owner --persist-root DIR --registry DIR [--standby]");
  process.exit(2);
}
const proc = new OwnerProcess(
  values["persist-root"],
  values.registry,
  values.standby ? "standby" : "owner",
);

for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
  process.on(signal, () => void proc.exit(signal, true));
}
process.on("unhandledRejection", (error) => {
  proc.log(`unexpected error: ${error instanceof Error ? error.message : String(error)}`);
});
process.on("uncaughtException", (error) => {
  proc.log(`unexpected error: ${error.message}; exiting`);
  void proc.exit("unexpected error", false, 1);
});

// Open before anything is recorded: a standby's too, so that the record it publishes when it
// takes over names its lifeline from the first write.
try {
  proc.lifelinePort = await openLifeline({
    pid: proc.identity.pid,
    token: proc.token,
    // `storage-owner stop` where no signal can be proven ours (no /proc, no ps; Windows).
    onStopRequest: () => void proc.exit("stop requested", true),
  });
} catch (error) {
  proc.log(`no lifeline for sessions (${String(error)}); they will check our lease by polling`);
}

(proc.role === "standby" ? runStandby(proc) : runOwner(proc)).catch((error: unknown) => {
  // One line: sessions show the end of this log in their error message.
  proc.log(`failed to start: ${error instanceof Error ? error.message : String(error)}`);
  // Withdraw our records at once, so that sessions elect again instead of waiting for us.
  const owner = readOwner(proc.paths);
  if (owner?.ok && owner.value.pid === proc.identity.pid) removeFile(proc.paths.ownerRecord);
  const standby = readStandby(proc.paths);
  if (standby?.ok && standby.value.pid === proc.identity.pid) removeFile(proc.paths.standbyRecord);
  void proc.exit("failed to start", false, 1);
});
