// The owner's lifeline to its sessions: a loopback TCP connection from each session that the
// kernel closes the instant the owner dies, so a session notices a death at once and sleeps
// while nothing happens (no fast polling). A hint, never an authority: a closed lifeline only
// makes the session check the owner's lease (pid + start time) now, and a SIGSTOPped owner keeps
// its lifelines open and its lease. Sessions still check the lease every few seconds, for an
// owner that recorded no lifeline or one that could not be reached.
//
// It is also the identity proof that needs no process table (Windows, no /proc, no ps): on every
// connection the owner (or standby) first writes one line, `x-shared-storage <pid> <proof>`, the
// proof a hash of the random token of its record; a client that sends `stop <token>` asks it to
// exit as on SIGTERM. The token itself is never sent: whoever connects (any local user) learns
// only the hash, which stops nothing.
import { errnoCode } from "./errors.js";
import { createHash } from "node:crypto";
import net from "node:net";

/** What the hello carries for `token`: proves the token's holder without revealing it. */
function proofOf(token: string): string {
  return createHash("sha256").update(`x-shared-storage lifeline ${token}`).digest("hex");
}

export interface LifelineOwner {
  pid: number;
  token: string;
  /** A client sent `stop <token>`: exit gracefully. */
  onStopRequest: () => void;
}

/** Owner side: accept lifelines on an ephemeral loopback port; never keeps the process alive. */
export function openLifeline(owner: LifelineOwner): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      socket.on("error", () => {}); // a session that went away
      socket.unref();
      socket.write(`x-shared-storage ${owner.pid} ${proofOf(owner.token)}\n`);
      let received = "";
      socket.on("data", (chunk) => {
        received = (received + String(chunk)).slice(-200);
        if (received.split("\n").includes(`stop ${owner.token}`)) owner.onStopRequest();
      });
    });
    server.on("error", reject);
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      server.unref();
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

/** Parses the owner's first line; undefined if it is not one. */
export function parseHello(line: string): { pid: number; token: string } | undefined {
  const m = /^x-shared-storage (\d+) ([0-9a-f]+)$/.exec(line.trim());
  return m ? { pid: Number(m[1]), token: m[2]! } : undefined;
}

/**
 * Client side: connects to `port` and resolves true once the process there proved to be `pid`
 * with `token` (and, with `stop`, after sending it the stop request); false when refused, when
 * something else answers, or when nothing answers within `timeoutMs` (a stopped owner).
 */
export function askLifeline(
  port: number,
  expected: { pid: number; token: string },
  options: { stop?: boolean; timeoutMs?: number } = {},
): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    let received = "";
    const done = (answer: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done(false), options.timeoutMs ?? 1000);
    socket.on("error", () => done(false));
    socket.on("data", (chunk) => {
      received += String(chunk);
      const newline = received.indexOf("\n");
      if (newline < 0) return;
      const hello = parseHello(received.slice(0, newline));
      if (hello?.pid !== expected.pid || hello.token !== proofOf(expected.token))
        return done(false);
      if (!options.stop) return done(true);
      socket.end(`stop ${expected.token}\n`, () => done(true));
    });
  });
}

/**
 * One look at a loopback `host:port`: "open" (it accepted), "silent" (no answer in `timeoutMs`:
 * no proof of anything), "refused" (nothing listens: the kernel closes a dead process's sockets at
 * once), or "error" (any other failure).
 */
export function probePort(
  address: string,
  timeoutMs = 300,
): Promise<"open" | "silent" | "refused" | "error"> {
  const colon = address.lastIndexOf(":");
  return new Promise((resolve) => {
    const socket = net.connect({
      host: address.slice(0, colon),
      port: Number(address.slice(colon + 1)),
    });
    const done = (answer: "open" | "silent" | "refused" | "error") => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(timeoutMs, () => done("silent"));
    socket.once("connect", () => done("open"));
    socket.once("error", (error) =>
      done(errnoCode(error) === "ECONNREFUSED" ? "refused" : "error"),
    );
  });
}

/** Nothing listens at `address` any more (a dead workerd's debug port, before init reaps it). */
export async function refuses(address: string, timeoutMs = 300): Promise<boolean> {
  return (await probePort(address, timeoutMs)) === "refused";
}

/**
 * Session side: hold a lifeline to `port`; `onLost` runs once when it closes for any reason
 * (owner gone, refused, reset). Never keeps the process alive. Returns a function that drops it
 * without calling `onLost`.
 */
export function holdLifeline(port: number, onLost: () => void): () => void {
  let dropped = false;
  const socket = net.connect({ host: "127.0.0.1", port });
  socket.unref();
  socket.on("data", () => {}); // the owner's hello; drain whatever arrives
  socket.on("error", () => {}); // followed by "close"
  socket.once("close", () => {
    if (!dropped) onLost();
  });
  return () => {
    dropped = true;
    socket.destroy();
  };
}
