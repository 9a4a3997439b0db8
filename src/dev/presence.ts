// A session's presence under the root it uses (`clients/<pid>.json`): written before it routes
// anything, so that an owner counting its clients never idles out under it, and removed on exit.
import { versions } from "../environment.js";
import { currentIdentity } from "../process-info.js";
import { clientRecordPath, type RootPaths, SCHEMA_VERSION, writeRecordAtomic } from "../records.js";

export interface ClientSession {
  worker: string;
  command: string;
  port?: number;
}

export function writePresence(
  paths: RootPaths,
  registryPath: string,
  session: ClientSession,
): string {
  const file = clientRecordPath(paths, process.pid);
  writeRecordAtomic(file, {
    schema: SCHEMA_VERSION,
    ...currentIdentity(),
    registryPath,
    worker: session.worker,
    command: session.command,
    ...(session.port === undefined ? {} : { port: session.port }),
    since: new Date().toISOString(),
    cwd: process.cwd(),
    versions: versions(),
  });
  return file;
}
