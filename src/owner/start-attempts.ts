// How many owners one election may start, for the first election (`Election.untilServedSync`,
// src/owner/succession.ts) and a session's failover recovery (src/dev/failover.ts) alike. An
// owner that dies during startup leaves a dead `starting` record, and the election starts
// another: the third start ends the election (naming the owner log) rather than starting owners
// until the timeout.

/** Owner starts one election may make; the one after them ends it. */
export const OWNER_STARTS_PER_ELECTION = 2;

/** Why an election ends at its `starts`-th owner start; undefined while it may go on. */
export function tooManyOwnerStarts(starts: number): string | undefined {
  return starts > OWNER_STARTS_PER_ELECTION
    ? `the storage owner exited during startup ${starts} times`
    : undefined;
}
