// Waiting, the two ways this package needs it: on the event loop, and blocking the thread for the
// sync paths (the preload's election runs before wrangler builds its first Miniflare).

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

/** Blocks the thread for `ms`: only where nothing else may run meanwhile. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
