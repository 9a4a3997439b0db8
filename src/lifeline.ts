// The owner's lifeline to its sessions: a loopback TCP connection from each session that the
// kernel closes the instant the owner dies, so a session notices a death at once and sleeps
// while nothing happens (no fast polling). A hint, never an authority: a closed lifeline only
// makes the session check the owner's lease (pid + start time) now, and a SIGSTOPped owner keeps
// its lifelines open and its lease. Sessions still check the lease every few seconds, for an
// owner that recorded no lifeline or one that could not be reached.
import net from "node:net";

/** Owner side: accept lifelines on an ephemeral loopback port; never keeps the process alive. */
export function openLifeline(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      socket.on("error", () => {}); // a session that went away
      socket.unref();
    });
    server.on("error", reject);
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      server.unref();
      resolve((server.address() as net.AddressInfo).port);
    });
  });
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
  socket.on("data", () => {}); // the owner never writes; drain whatever arrives
  socket.on("error", () => {}); // followed by "close"
  socket.once("close", () => {
    if (!dropped) onLost();
  });
  return () => {
    dropped = true;
    socket.destroy();
  };
}
