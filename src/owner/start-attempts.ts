// How many owners one election may start, for the first election (`Election.untilServedSync`,
// src/owner/succession.ts) and a session's failover recovery (src/dev/failover.ts) alike. An
// owner that dies during startup leaves a dead `starting` record, and the election starts
// another: once three started owners have died, the election ends (naming the owner log) rather
// than start a fourth or wait until the timeout. The third owner gets its chance to serve.

/** Owner starts one election may make. */
export const OWNER_STARTS_PER_ELECTION = 3;

/**
 * Why an election that started `starts` owners may start no other (asked only when the last of
 * them died: the election would replace it); undefined while it may.
 */
export function tooManyOwnerStarts(starts: number): string | undefined {
  return starts >= OWNER_STARTS_PER_ELECTION
    ? `the storage owner exited during startup ${starts} times`
    : undefined;
}
