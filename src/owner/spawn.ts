// Starting the owner program (an owner, or a standby for the running one) as a detached process
// of its own, logging to the root's owner log. The owner writes its own record; the electing
// process waits for it under the election lock, so that no other election spawns a second one.
import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { errorCode } from "../errors.js";
import { versions } from "../environment.js";
import { identityOf, liveness, type ProcessIdentity } from "../process-info.js";
import { readOwner, type RootPaths, startingOwnerRecord, writeRecordAtomic } from "../records.js";
import { sleepSync } from "../wait.js";

export const OWNER_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), "main.js");

/** A spawned owner has this long to write its `starting` record before the election goes on. */
export const FIRST_RECORD_TIMEOUT_MS = 10_000;

export class OwnerStartError extends Error {}

/** WRANGLER_X_OWNER_WORKERD_PATH runs the owner (only) with another workerd, e.g. a debug build. */
function ownerEnv(): NodeJS.ProcessEnv {
  const workerd = process.env.WRANGLER_X_OWNER_WORKERD_PATH;
  return workerd ? { ...process.env, MINIFLARE_WORKERD_PATH: workerd } : process.env;
}

/** Starts an owner (or, with `standby`, a successor for the running one), detached, logging to the owner log. */
export function startOwnerProcess(
  paths: RootPaths,
  registryPath: string,
  options: { standby?: boolean } = {},
): number {
  mkdirSync(paths.stateDir, { recursive: true });
  let log: number;
  try {
    log = openSync(paths.ownerLog, "a");
  } catch (error) {
    throw new OwnerStartError(
      `cannot open the storage owner's log ${paths.ownerLog} (${errorCode(error)}); ` +
        `no owner was started. Check that ${paths.stateDir} is writable.`,
    );
  }
  try {
    const args = [OWNER_MAIN, "--persist-root", paths.persistRoot, "--registry", registryPath];
    if (options.standby) args.push("--standby");
    // A standby's stdin is its lifeline: a pipe from the owner that the kernel closes when it dies.
    const child = spawn(process.execPath, args, {
      detached: true,
      stdio: [options.standby ? "pipe" : "ignore", log, log],
      env: ownerEnv(),
      windowsHide: true,
    });
    if (child.pid === undefined)
      throw new OwnerStartError(`could not start the storage owner (${process.execPath})`);
    child.unref();
    return child.pid;
  } finally {
    closeSync(log);
  }
}

/**
 * Starts an owner and waits (bounded) until it has written its `starting` record, so that every
 * other election sees it and waits for it rather than start another. Called under the election
 * lock; the new owner takes a dead predecessor's candidate over in place.
 */
export function spawnOwner(paths: RootPaths, registryPath: string): number {
  const pid = startOwnerProcess(paths, registryPath);
  const identity = identityOf(pid);
  const deadline = Date.now() + FIRST_RECORD_TIMEOUT_MS;
  while (liveness(identity) === "alive") {
    const record = readOwner(paths);
    if (record?.ok && record.value.pid === pid) return pid;
    if (Date.now() >= deadline) {
      // Too slow to write it (a loaded machine): record it `starting` for it, still under the
      // lock, or the next election would find no record and start a second owner beside it.
      if (record === undefined) writeStartingRecord(paths, registryPath, identity);
      break;
    }
    sleepSync(10);
  }
  return pid;
}

/**
 * Starts an owner and records it `starting` at once, for it (it overwrites the record with its
 * own): every other election sees it and waits, and the caller does not wait for its node to
 * load. For the head start (src/dev/head-start.ts), which must not hold wrangler's own start back.
 */
export function startOwnerRecorded(paths: RootPaths, registryPath: string): ProcessIdentity {
  const identity = identityOf(startOwnerProcess(paths, registryPath));
  // Its own record first (never, in practice: its node takes ~100 ms to load): left as it is.
  const record = readOwner(paths);
  if (!(record?.ok && record.value.pid === identity.pid))
    writeStartingRecord(paths, registryPath, identity);
  return identity;
}

/** The record a spawned owner would write first (without its token); it overwrites it with its own. */
function writeStartingRecord(paths: RootPaths, registryPath: string, identity: ProcessIdentity) {
  writeRecordAtomic(
    paths.ownerRecord,
    startingOwnerRecord({
      paths,
      registryPath,
      identity,
      versions: versions(),
      spawnedBy: process.pid,
    }),
  );
}

export function tailOfLog(file: string, lines = 15): string {
  try {
    const text = readFileSync(file, "utf8").trimEnd().split("\n");
    return text.slice(-lines).join("\n");
  } catch {
    return "(no log written)";
  }
}
