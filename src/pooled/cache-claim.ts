// The root's Cache route: whether the owner's workerd serves every session's Cache (`pooled`), or
// each session's own workerd does (plain wrangler's way). Two processes writing the cache files
// lose entries, so the two routes never mix while any session of the root lives. The route is the
// root's, not one owner's: `cache-route.json` beside the owner record outlives a failover (a
// successor, and a session that starts while one starts, find it) and goes only when no session
// is left (the owner's idle exit, under the election lock; gc).
//
// Taken without a lock (an owner's check runs inside its record write, under the election lock
// during a standby's promotion; a session's inside miniflare's config assembly): each side writes
// before it reads. A session notes `deciding` in its presence, then reads the route (`decideCacheRoute`);
// an owner writes an `intent` route, then reads the notes (`claimCache`), and makes the route
// `pooled` only if none is `deciding` or `session`. So a session that read no route is seen by
// that owner, which then withdraws; an owner that read no blocking note is seen by the session as
// an intent, which it follows (`follows-owner` blocks nothing) until the route is `pooled`, or the
// intent gone: withdrawn, its owner dead, or followed for `staleMs`.
import { randomUUID } from "node:crypto";
import { isAlive, type ProcessIdentity } from "../process-info.js";
import {
  type CacheDecision,
  type CacheRouteRecord,
  listClients,
  type Parsed,
  readCacheRoute,
  removeFile,
  type RootPaths,
  SCHEMA_VERSION,
  writeRecordAtomic,
} from "../records.js";
import { sleep, sleepSync } from "../wait.js";

export const CACHE_CLAIM = {
  /** The owner waits this long for `deciding` notes to become decisions, then withdraws. */
  waitMs: 250,
  /**
   * The owner makes its intent `pooled` only within this of writing it (its own clock, read
   * right before that write): far inside `staleMs`, so an intent a session stopped following is
   * never made `pooled`, unless its owner is held still between that read and the write.
   */
  intentMs: 500,
  /** A session follows one intent of a live owner at most this long (from its first read of it). */
  staleMs: 10_000,
  pollMs: 10,
};

export type RootCacheRoute = "pooled" | "session";

/** A live session's pid and its cache note. */
type Note = [number, CacheDecision];

/** Live sessions' cache notes, one read of each (a dead pid's note holds nothing back). */
function liveDecisions(paths: RootPaths): Note[] {
  return listClients(paths).flatMap(({ record }) =>
    record.ok && record.value.cacheDecision !== undefined && isAlive(record.value)
      ? [[record.value.pid, record.value.cacheDecision] as [number, CacheDecision]]
      : [],
  );
}

/**
 * Whether the owner's Cache stands: a `pooled` route whose writer lives, or any live session on
 * the owner's Cache (its note says `pooled` for its life), whatever the route file now says
 * (torn, another version's, lost to two owners' writes). A session notes `pooled` only once it
 * read the owner's Cache standing twice, the second time noted `joining` (which holds owners back
 * as `deciding` does). A route left by processes all gone (a reboot, a crash of everything) does
 * not stand: the next owner, which may not offer the cache socket, decides afresh.
 */
function ownersCacheStands(route: Parsed<CacheRouteRecord> | undefined, notes: Note[]): boolean {
  if (route?.ok && route.value.state === "pooled" && isAlive(route.value)) return true;
  return notes.some(([, decision]) => decision === "pooled");
}

/** An intent some other live owner may still be checking (one named by a reused pid goes stale). */
function otherOwnersIntent(
  route: Parsed<CacheRouteRecord> | undefined,
  owner: ProcessIdentity,
  timings: typeof CACHE_CLAIM,
): boolean {
  if (!route?.ok || route.value.state !== "intent" || route.value.pid === owner.pid) return false;
  // An unreadable time, or one ahead of ours (a clock stepped back), counts as stale too.
  const age = Date.now() - Date.parse(route.value.at);
  return isAlive(route.value) && age >= 0 && age <= timings.staleMs;
}

/**
 * The owner's side, at each record write while its workerd offers the cache socket; true: it
 * notes `pooledCache` in its record, for status. True at once where the owner's Cache stands
 * (sessions already send their cache calls to the root's socket), the route then rewritten to
 * stand on us where it does not read so (a successor; a torn route repaired). Else, while no
 * other live owner's intent stands and no live session runs its own Cache: writes an intent,
 * reads the notes until none is `deciding` (at most `waitMs`, blocking the thread; a few ms
 * where a session is mid-decision), then makes it `pooled`, or withdraws it for the next try.
 */
export function claimCache(
  paths: RootPaths,
  owner: ProcessIdentity,
  timings = CACHE_CLAIM,
  memory: ClaimMemory = {},
): boolean {
  const current = readCacheRoute(paths);
  // Ours, and we live: the usual heartbeat, one read (no process table looked at, no ps spawned).
  if (current?.ok && current.value.state === "pooled" && isUs(current.value, owner)) return true;
  // One read of the notes for every check before our intent (nothing of ours is written yet).
  const before = liveDecisions(paths);
  if (ownersCacheStands(current, before)) {
    writeRoute(paths, owner, "pooled", current?.ok ? current.value.nonce : randomUUID());
    return true;
  }
  // Another owner (one superseded, still finishing its check) decides this turn.
  if (otherOwnersIntent(current, owner, timings)) return false;
  // A live session runs its own Cache (it started while no owner offered the socket, e.g. while
  // an earlier version's data waited to move): sessions that start meanwhile keep theirs too.
  if (before.some(([, decision]) => decision === "session")) return false;
  // The same notes held our last claim back for its whole wait (a session stopped mid-decision):
  // not waited for again until one of them changes.
  if (memory.heldBy !== undefined && holdingNotes(before) === memory.heldBy) return false;
  memory.heldBy = undefined;
  const nonce = randomUUID();
  const start = performance.now();
  writeRoute(paths, owner, "intent", nonce);
  for (;;) {
    // One read of each note: a `deciding` one read again could have become `session` meanwhile.
    const notes = liveDecisions(paths);
    const decisions = notes.map(([, decision]) => decision);
    if (decisions.includes("session")) return withdraw(paths, nonce);
    if (!decisions.includes("deciding") && !decisions.includes("joining")) {
      if (performance.now() - start > timings.intentMs) return withdraw(paths, nonce);
      writeRoute(paths, owner, "pooled", nonce);
      return true;
    }
    if (performance.now() - start > timings.waitMs) {
      memory.heldBy = holdingNotes(notes);
      return withdraw(paths, nonce);
    }
    sleepSync(timings.pollMs);
  }
}

/** What an owner keeps between its claims: the notes that held the last one back (`claimCache`). */
export interface ClaimMemory {
  heldBy?: string;
}

/** The live notes a claim waits for (`deciding`, `joining`), as one comparable string. */
function holdingNotes(notes: Note[]): string {
  return notes
    .filter(([, decision]) => decision === "deciding" || decision === "joining")
    .map(([pid, decision]) => `${pid}:${decision}`)
    .sort()
    .join(",");
}

function isUs(writer: ProcessIdentity, owner: ProcessIdentity): boolean {
  return (
    writer.pid === owner.pid &&
    writer.startTime === owner.startTime &&
    writer.started === owner.started
  );
}

function writeRoute(
  paths: RootPaths,
  owner: ProcessIdentity,
  state: CacheRouteRecord["state"],
  nonce: string,
): void {
  const { pid, startTime, started } = owner;
  const record: CacheRouteRecord = {
    schema: SCHEMA_VERSION,
    pid,
    ...(startTime === undefined ? {} : { startTime }),
    ...(started === undefined ? {} : { started }),
    state,
    nonce,
    at: new Date().toISOString(),
  };
  writeRecordAtomic(paths.cacheRoute, record);
}

/** Removes our intent, and only ours: another owner's route, or our own once `pooled`, stays. */
function withdraw(paths: RootPaths, nonce: string): false {
  const current = readCacheRoute(paths);
  if (current?.ok && current.value.state === "intent" && current.value.nonce === nonce)
    removeFile(paths.cacheRoute);
  return false;
}

/**
 * The owner's idle exit, under the election lock, once it counted no live session after writing
 * `stopping`: a session that starts from here on waits for the next owner, and decides afresh
 * (that owner's workerd may not offer the cache socket).
 */
export function retireCacheRoute(paths: RootPaths): void {
  removeFile(paths.cacheRoute);
}

/**
 * A session's side, once per root for its life: notes each step through `note` (its presence).
 * `pooled` where it read a standing route, then (noted `joining`) read it standing again;
 * `session` where it read no route (or one left by processes all gone), or only an intent gone, while
 * noted `deciding` (an owner that writes its intent after that read sees the note and withdraws).
 * While a live owner's intent stands: `follows-owner`, until it is `pooled` or gone; then it
 * notes `deciding` and reads again. Usually a few ms; at most `staleMs` per intent.
 */
export async function decideCacheRoute(
  paths: RootPaths,
  note: (decision: CacheDecision) => void,
  timings = CACHE_CLAIM,
): Promise<RootCacheRoute> {
  let noted: CacheDecision = "deciding";
  note(noted);
  /** When each intent was first read (a corrupt route counts as one intent). */
  const firstRead = new Map<string, number>();
  for (;;) {
    const now = performance.now();
    const route = readCacheRoute(paths);
    // Read after the route: a session that was `joining` when it was read is seen below.
    const notes = liveDecisions(paths);
    if (ownersCacheStands(route, notes)) {
      // Read standing again while noted `joining` (which holds owners back): ours. The processes
      // it stood on may have gone before that note, and a session deciding then found none.
      if (noted === "joining") return "pooled";
      note((noted = "joining"));
      continue;
    }
    if (route !== undefined && !(route.ok && route.value.state === "pooled")) {
      // Unreadable, it may have said `pooled`: followed (an owner writes over it) as an intent is.
      const key = route.ok ? route.value.nonce : "unreadable";
      if (!firstRead.has(key)) firstRead.set(key, now);
      const live = !route.ok || isAlive(route.value);
      if (live && now - firstRead.get(key)! < timings.staleMs) {
        if (noted !== "follows-owner") note((noted = "follows-owner"));
        await sleep(timings.pollMs);
        continue;
      }
    }
    // Another session between its second read and its `pooled` note (`joining`) may be about to
    // stand on a route whose writer died since: our own Cache now could end beside it. Followed as
    // an intent is (`joining` itself stands on nothing: two would confirm each other).
    const joiner = notes.find(([pid, decision]) => decision === "joining" && pid !== process.pid);
    if (joiner !== undefined) {
      const key = `joining:${joiner[0]}`;
      if (!firstRead.has(key)) firstRead.set(key, now);
      if (now - firstRead.get(key)! < timings.staleMs) {
        if (noted !== "follows-owner") note((noted = "follows-owner"));
        await sleep(timings.pollMs);
        continue;
      }
    }
    if (noted === "deciding") return "session";
    note((noted = "deciding"));
  }
}
