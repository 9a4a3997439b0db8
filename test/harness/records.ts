// A well-formed owner record for pure tests (never written where a real owner looks).
import { type OwnerRecord, SCHEMA_VERSION } from "../../src/records.js";

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
