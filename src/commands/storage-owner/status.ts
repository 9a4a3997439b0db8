import { severalSessionsWarning, workersWithSeveralSessions } from "../../several-sessions.js";
import { inspectRoot, type RootReport } from "../../owner/inspect.js";
import { createCommand } from "../create-command.js";
import { fields, formatAge, formatDuration, table } from "./format.js";
import { resolveScope, scopeArgs } from "./scope.js";

export const statusCommand = createCommand({
  command: "status",
  metadata: {
    description: "Show the storage owner of a persist root and the dev sessions connected to it",
    examples: [
      ["wrangler storage-owner status", "The owner for this project's default .wrangler/state"],
      ["wrangler storage-owner status --persist-to ../shared-state --json", "As JSON, for scripts"],
      ["wrangler storage-owner status --all", "Every persist root with an owner on this machine"],
    ],
  },
  args: {
    ...scopeArgs,
    json: {
      type: "boolean",
      description: "Print one JSON document instead of a table",
      default: false,
    },
  },
  async handler(args) {
    const scope = resolveScope(args);
    const reports = scope.roots.map((root) => inspectRoot(root));
    if (args.json) {
      console.log(JSON.stringify(toJson(reports, scope.problems), null, 2));
      return 0;
    }
    console.log(render(reports, scope.problems, Boolean(args.all)));
    return 0;
  },
});

/** Workers with more than one live dev session on the root: their Durable Objects contend. */
function sameWorkerSessions(report: RootReport): { worker: string; pids: number[] }[] {
  return workersWithSeveralSessions(report.clients).map(({ worker, sessions }) => ({
    worker,
    pids: sessions.map((session) => session.pid),
  }));
}

export function toJson(reports: RootReport[], scopeProblems: string[]) {
  return {
    owners: reports.flatMap((r) =>
      r.owner ? [{ ...r.owner, sameWorkerSessions: sameWorkerSessions(r) }] : [],
    ),
    unowned: reports
      .filter((r) => !r.owner)
      .map((r) => ({
        persistRoot: r.persistRoot,
        clients: r.clients,
        sameWorkerSessions: sameWorkerSessions(r),
      })),
    problems: [...scopeProblems, ...reports.flatMap((r) => r.problems)],
  };
}

const STATE_NOTE = {
  running: "",
  stale: " (alive but not heartbeating: busy, stopped or hung)",
  dead: " (process gone, records left behind: run `wrangler storage-owner gc`)",
};

function describeStandby(report: RootReport): string {
  const standby = report.owner?.standby;
  if (!standby) return "none (a new owner takes ~1 s to start if this one dies)";
  if (!standby.alive) return `pid ${standby.pid} · dead (run \`wrangler storage-owner gc\`)`;
  if (standby.phase === "starting")
    return `pid ${standby.pid} · starting (takes over as soon as it is up if the owner dies)`;
  return `pid ${standby.pid} · ready at ${standby.debugAddress}, takes over at once if the owner dies`;
}

function render(reports: RootReport[], scopeProblems: string[], all: boolean): string {
  const out: string[] = [];
  if (reports.length === 0)
    out.push(all ? "No persist root on this machine has a storage owner." : "");
  for (const report of reports) {
    out.push(`Persist root ${report.persistRoot}`);
    const owner = report.owner;
    if (!owner) {
      out.push("  No storage owner is running for this persist root.");
    } else {
      const v = owner.versions;
      out.push(
        fields([
          [
            "owner",
            `pid ${owner.pid} · ${owner.state}${owner.phase !== "running" && owner.state !== "dead" ? ` (${owner.phase})` : ""}${STATE_NOTE[owner.state]}`,
          ],
          ["address", owner.debugAddress ?? "(not published yet)"],
          ["heartbeat", formatAge(owner.heartbeatAgeMs)],
          ["uptime", owner.uptimeMs === null ? "-" : formatDuration(owner.uptimeMs)],
          [
            "versions",
            `package ${v.package} · wrangler ${v.wrangler} · miniflare ${v.miniflare} · workerd ${v.workerd}`,
          ],
          ["standby", describeStandby(report)],
          ["log", owner.logFile],
        ]),
      );
    }
    if (report.clients.length === 0) {
      out.push("  clients    none");
    } else {
      out.push(
        `  clients    ${report.clients.length} (${report.clients.filter((c) => c.alive).length} alive)`,
      );
      out.push(
        table(
          ["PID", "WORKER", "COMMAND", "PORT", "STORAGE", "SINCE", "ALIVE"],
          report.clients.map((c) => [
            String(c.pid),
            c.worker,
            c.command,
            c.port === undefined ? "-" : String(c.port),
            c.storageRoute ?? "-",
            c.since,
            c.alive ? "yes" : c.liveness === "reused" ? "no (pid reused)" : "no",
          ]),
          "    ",
        ),
      );
    }
    if (report.spawnLock && !report.spawnLock.alive) {
      out.push(
        `  spawn lock held by a dead process${report.spawnLock.holderPid ? ` (pid ${report.spawnLock.holderPid})` : ""}: run gc`,
      );
    }
    for (const { worker, pids } of sameWorkerSessions(report)) {
      out.push(`  ⚠ ${severalSessionsWarning(worker, pids, report.persistRoot)}`);
    }
    for (const problem of report.problems) out.push(`  ⚠ ${problem}`);
    out.push("");
  }
  for (const problem of scopeProblems) out.push(`⚠ ${problem}`);
  return out.join("\n").trimEnd();
}
