// A session's presence under the root it uses (`clients/<pid>.json`): written before it routes
// anything, so that an owner counting its clients never idles out under it, and removed on exit.
// `Presence` is the record's one writer: it writes it, then notes the session's routes in it.
import { readFileSync } from "node:fs";
import { versions } from "../environment.js";
import { currentIdentity } from "../process-info.js";
import {
  type ClientRecord,
  clientRecordPath,
  type RootPaths,
  SCHEMA_VERSION,
  writeRecordAtomic,
} from "../records.js";

export interface ClientSession {
  worker: string;
  command: string;
  port?: number;
}

/** What a session notes in its presence after writing it: its routes (session-routes.ts). */
export type PresenceNote = Partial<Pick<ClientRecord, "storageRoute" | "cacheDecision">>;

export class Presence {
  private constructor(readonly file: string) {}

  /** Writes this process's presence under the root (its routes are noted later). */
  static write(paths: RootPaths, registryPath: string, session: ClientSession): Presence {
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
    return new Presence(file);
  }

  /**
   * Adds `note` to the record (its other fields stay); readers see it once this returns. Not where
   * the record is gone (removed at exit: never written again) or not ours.
   */
  note(note: PresenceNote): void {
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(readFileSync(this.file, "utf8")) as Record<string, unknown>;
    } catch {
      return;
    }
    if (record.pid !== process.pid) return;
    writeRecordAtomic(this.file, { ...record, ...note });
  }
}
