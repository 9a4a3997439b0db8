// Waiting, the two ways this package needs it: on the event loop, and blocking the thread for the
// sync paths (the preload's election runs before wrangler builds its first Miniflare); and the one
// bounded-retry loop (the election lock, the succession's critical section), in both ways.

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

/** Blocks the thread for `ms`: only where nothing else may run meanwhile. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Bounded retry: runs `attempt` until `done` says its result is final or `timeoutMs` has passed,
 * `intervalMs` apart, and returns the last result (at least one attempt, none after the deadline).
 */
export async function retryWithin<T>(
  attempt: () => T | Promise<T>,
  done: (result: T) => boolean,
  timeoutMs: number,
  intervalMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await attempt();
    if (done(result) || Date.now() > deadline) return result;
    await sleep(intervalMs);
  }
}

/** `retryWithin`, blocking the thread between attempts (see `sleepSync`). */
export function retryWithinSync<T>(
  attempt: () => T,
  done: (result: T) => boolean,
  timeoutMs: number,
  intervalMs: number,
): T {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = attempt();
    if (done(result) || Date.now() > deadline) return result;
    sleepSync(intervalMs);
  }
}
