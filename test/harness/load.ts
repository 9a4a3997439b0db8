// Steady D1 write (or Cache API) load from several sessions, and a sampler of which processes hold
// the database (or cache) files: the two instruments of the fault tests and the bench.
import {
  isDatabaseFile,
  post,
  processesWithOpen,
  type Session,
  sleep,
  waitFor,
} from "./sandbox.js";

/** Waits (bounded) until one D1 insert through each session, sent together, all succeed. */
export function waitUntilAllWrite(
  sessions: Session[],
  who: string,
  timeoutMs: number,
  what = "every session to write again",
): Promise<boolean> {
  return waitFor(
    what,
    async () =>
      (await Promise.all(sessions.map((s) => post(s.url(`/d1/insert?who=${who}`))))).every(
        (r) => r.ok,
      ),
    timeoutMs,
  );
}

export interface RequestResult {
  at: number;
  ok: boolean;
  worker: string;
  body: string;
}

export interface Load {
  results: RequestResult[];
  stop: () => Promise<void>;
}

/** One storage call of a steady load: what it answered. */
export type LoadCall = (session: Session, who: string) => Promise<{ ok: boolean; body: string }>;

/** A D1 insert (the default load). */
export const d1Insert: LoadCall = (session, who) => post(session.url(`/d1/insert?who=${who}`));

let cacheRounds = 0;
/** A Cache API round through the example API: a put of a new key, then its match (same body). */
export const cachePutMatch: LoadCall = async (session, who) => {
  const key = `${who}-${session.worker}-${cacheRounds++}`;
  try {
    const put = await fetch(session.url(`/cache/${key}`), { method: "PUT", body: key });
    const putBody = await put.text();
    if (!put.ok) return { ok: false, body: `put ${put.status} ${putBody}` };
    const match = await fetch(session.url(`/cache/${key}`));
    const body = await match.text();
    return { ok: match.ok && body === key, body: `match ${match.status} ${body}` };
  } catch (error) {
    return { ok: false, body: String(error) };
  }
};

export function steadyLoad(
  sessions: Session[],
  who: string,
  loopsPerSession = 2,
  pauseMs = 5,
  call: LoadCall = d1Insert,
): Load {
  const results: RequestResult[] = [];
  let running = true;
  const loops = sessions.flatMap((session) =>
    Array.from({ length: loopsPerSession }, async () => {
      while (running) {
        const r = await call(session, who);
        results.push({
          at: Date.now(),
          ok: r.ok,
          worker: session.worker,
          body: r.body.slice(0, 200),
        });
        await sleep(pauseMs);
      }
    }),
  );
  return {
    results,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

/**
 * Waits (bounded) until every request of the last `windowMs` succeeded, at least `minMs` after
 * `since`. `minRequests` only proves traffic flowed: a loaded machine (5 busy loops on 2 cores)
 * serves 4 loops fewer than 20 requests per 2 s, and a window asking for 20 never came clean.
 */
export async function waitForCleanTraffic(
  load: Load,
  since: number,
  { windowMs = 2000, minMs = 2500, minRequests = 5, timeoutMs = 60_000 } = {},
): Promise<void> {
  const recentResults = () => load.results.filter((r) => r.at > Date.now() - windowMs);
  const lastFailure = () => {
    const failed = load.results.filter((r) => !r.ok);
    const last = failed[failed.length - 1];
    return last
      ? `; last failure ${Date.now() - last.at} ms ago from ${last.worker}: ${last.body.slice(0, 160)}`
      : "; none failed";
  };
  await waitFor(
    () =>
      `${windowMs} ms of at least ${minRequests} requests without failure ` +
      `(${recentResults().length} in the last ${windowMs} ms${lastFailure()})`,
    () => {
      const recent = recentResults();
      return (
        Date.now() - since > minMs && recent.length >= minRequests && recent.every((r) => r.ok)
      );
    },
    timeoutMs,
    100,
  );
}

/** The window in which requests failed after `from`: first failure to last failure. */
export function failedWindow(results: RequestResult[], from: number) {
  const after = results.filter((r) => r.at >= from);
  const failures = after.filter((r) => !r.ok);
  const firstFailure = failures[0]?.at;
  const lastFailure = failures[failures.length - 1]?.at;
  return {
    failures: failures.length,
    successes: after.filter((r) => r.ok).length,
    windowMs: firstFailure === undefined ? 0 : lastFailure! - firstFailure,
    recoveredAfterMs: lastFailure === undefined ? 0 : lastFailure - from,
    sample: failures[0]?.body,
  };
}

export interface Sampler {
  samples: { at: number; holders: number[] }[];
  stop: () => Promise<void>;
}

/** Which processes hold the root's files every `intervalMs` (the D1/KV/R2 databases by default). */
export function sampleHolders(
  persistRoot: string,
  intervalMs = 50,
  match: (file: string) => boolean = isDatabaseFile(persistRoot),
): Sampler {
  const samples: { at: number; holders: number[] }[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      samples.push({ at: Date.now(), holders: processesWithOpen(match) });
      await sleep(intervalMs);
    }
  })();
  return {
    samples,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

export function maxGap(samples: { at: number }[]): number {
  let gap = 0;
  for (let i = 1; i < samples.length; i++) gap = Math.max(gap, samples[i]!.at - samples[i - 1]!.at);
  return gap;
}
