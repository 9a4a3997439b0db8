// What the owner program's two roles share: who this process is, where it logs, which sessions
// count, and how it exits. The roles themselves are owner.ts and standby.ts.
import { errnoCode } from "../errors.js";
import { randomBytes } from "node:crypto";
import { sameVersions, versions } from "../environment.js";
import { currentIdentity, isAlive, type ProcessIdentity } from "../process-info.js";
import { listClients, type RootPaths, rootPaths } from "../records.js";
import { type Instance, instanceDir, releaseStartupLocks } from "./instance.js";

export type Role = "owner" | "standby";

export class OwnerProcess {
  readonly paths: RootPaths;
  readonly identity: ProcessIdentity = currentIdentity();
  /** Recorded in our record and answered on our lifeline: proof of who we are without a process table. */
  readonly token = randomBytes(16).toString("hex");
  readonly startedAt = Date.now();
  role: Role;
  instance?: Instance;
  /** Where sessions hold their lifeline to us once we serve (src/lifeline.ts), if it opened. */
  lifelinePort?: number;
  private stopping = false;
  /**
   * What the current role does on the way out, before the instance is disposed. Before a role
   * takes over (an owner stopped while it starts), the reason is said all the same.
   */
  private beforeExit: (reason: string, graceful: boolean) => void = (reason) =>
    this.log(`stopping: ${reason}`);
  private afterDispose: () => void = () => {};

  constructor(
    readonly persistRoot: string,
    readonly registryPath: string,
    role: Role,
  ) {
    this.paths = rootPaths(persistRoot);
    this.role = role;
  }

  get shuttingDown(): boolean {
    return this.stopping;
  }

  log(message: string): void {
    console.log(`[${new Date().toISOString()}] ${this.role} ${this.identity.pid}: ${message}`);
  }

  /** Live sessions of our own versions: an owner never serves (nor stays up for) another version's. */
  liveClientCount(): number {
    const ours = versions();
    return listClients(this.paths).filter(
      (c) => c.record.ok && sameVersions(c.record.value.versions, ours) && isAlive(c.record.value),
    ).length;
  }

  onExit(
    beforeExit: (reason: string, graceful: boolean) => void,
    afterDispose: () => void = () => {},
  ): void {
    this.beforeExit = beforeExit;
    this.afterDispose = afterDispose;
  }

  /** Runs the role's exit steps, disposes the instance, exits. `graceful`: a signal or idle exit. */
  async exit(reason: string, graceful: boolean, code = 0): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.step("exit", () => this.beforeExit(reason, graceful));
    // Stopped while its workerd starts, miniflare leaves its startup lock behind (stale only after
    // 30 s, stalling the next owner), and a standby stopped while it boots does not get as far as
    // the end of dispose: the lock goes first, when it holds our token.
    this.step("exit", () =>
      releaseStartupLocks(this.paths, [instanceDir(this.paths, this.identity)]),
    );
    try {
      await this.instance?.dispose();
    } catch (error) {
      this.log(`dispose failed: ${String(error)}`);
    }
    this.step("exit", () => this.afterDispose());
    this.log("stopped");
    process.exit(code);
  }

  /** Runs one step of a timer or of the exit; a failure (ENOSPC, EACCES…) is one log line. */
  step(what: string, action: () => void): void {
    try {
      action();
    } catch (error) {
      const code = errnoCode(error);
      this.log(`${what} failed: ${code ? `${code} ` : ""}${(error as Error).message ?? error}`);
    }
  }
}
