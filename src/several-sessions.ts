// Several live `dev` sessions of one worker on one persist root: what miniflare cannot share
// (Durable Objects, Cache, Workflows) is then opened by each session's workerd, as with plain
// wrangler, and they contend. Found from the root's presence records; said by the session when it
// starts (src/dev/preload.ts) and by `storage-owner status`.
import path from "node:path";
import { liveness } from "./process-info.js";
import { listClients, type RootPaths } from "./records.js";

export interface SessionLike {
  pid: number;
  worker: string;
  command: string;
  alive: boolean;
}

/** Live `dev` sessions, grouped by worker name, for every worker that has more than one. */
export function workersWithSeveralSessions<T extends SessionLike>(
  sessions: T[],
): { worker: string; sessions: T[] }[] {
  const byWorker = new Map<string, T[]>();
  for (const session of sessions) {
    if (!session.alive || session.command !== "dev") continue;
    byWorker.set(session.worker, [...(byWorker.get(session.worker) ?? []), session]);
  }
  return [...byWorker]
    .filter(([, list]) => list.length > 1)
    .map(([worker, list]) => ({ worker, sessions: list.sort((a, b) => a.pid - b.pid) }));
}

/** The live dev sessions of `worker` on this root (this one included) when there are several. */
export function severalSessionsOf(paths: RootPaths, worker: string): SessionLike[] {
  const sessions = listClients(paths).flatMap(({ record }) =>
    record.ok ? [{ ...record.value, alive: liveness(record.value) === "alive" }] : [],
  );
  return (
    workersWithSeveralSessions(sessions).find((group) => group.worker === worker)?.sessions ?? []
  );
}

/** Why two sessions of one worker on one root is a problem, for the session and for `status`. */
export function severalSessionsWarning(
  worker: string,
  pids: number[],
  persistRoot: string,
): string {
  return (
    `${pids.length} dev sessions of worker "${worker}" (pids ${pids.join(", ")}) use ${persistRoot}: ` +
    `Durable Objects, Cache and Workflows are not shared through the owner, so each session's ` +
    `workerd opens the same files under ${path.join(persistRoot, "do")} and they contend ` +
    `(as with plain wrangler). Run one session per worker.`
  );
}
