// Owner and standby records for tests: a well-formed record for pure tests (never written where a
// real owner looks), and the waits of real-process tests for the records to say something.
import { type StandbyStatus, inspectRoot } from "../../src/owner/inspect.js";
import { type OwnerRecord, SCHEMA_VERSION } from "../../src/records.js";
import { type Sandbox, waitFor } from "./sandbox.js";

export function ownerRecordFixture(over: Partial<OwnerRecord> = {}): OwnerRecord {
  return {
    schema: SCHEMA_VERSION,
    phase: "running",
    pid: 4242,
    startTime: "100",
    persistRoot: "/p/v3",
    registryPath: "/r",
    versions: { package: "1", wrangler: "2", miniflare: "3", workerd: "4" },
    startedAt: new Date(0).toISOString(),
    heartbeatAt: new Date(10_000).toISOString(),
    logFile: "/p/v3/.x-shared-storage/owner.log",
    ...over,
  };
}

/** The sandbox's owner record, once `holds` is true of it (`what` names that in a timeout). */
export function waitForOwner(
  sandbox: Sandbox,
  what: string,
  holds: (owner: OwnerRecord) => boolean,
  timeoutMs = 30_000,
  intervalMs = 100,
): Promise<OwnerRecord> {
  return waitFor(
    what,
    () => {
      const owner = sandbox.owner();
      return owner && holds(owner) ? owner : undefined;
    },
    timeoutMs,
    intervalMs,
  );
}

/** An owner other than `previous` that serves: its successor. */
export const succeeds =
  (previous: number) =>
  (owner: OwnerRecord): boolean =>
    owner.pid !== previous && owner.phase === "running";

/** The standby as `storage-owner status` reports it, once alive, ready and backing owner `backs`. */
export function readyStandby(
  sandbox: Sandbox,
  backs: number,
  timeoutMs = 30_000,
  what = "the standby to be ready",
): Promise<StandbyStatus> {
  return waitFor(
    what,
    () => {
      const standby = inspectRoot(sandbox.persistRoot).standby;
      return standby?.alive && standby.phase === "ready" && standby.backs === backs
        ? standby
        : undefined;
    },
    timeoutMs,
  );
}
