import { collectGarbage, type GcReport } from "../../owner/garbage.js";
import { pointerPath } from "../../records.js";
import { createCommand } from "../create-command.js";
import { resolveScope, scopeArgs } from "./scope.js";

export const gcCommand = createCommand({
  command: "gc",
  metadata: {
    description:
      "Reclaim what crashed owners and sessions left: records, locks, registry entries, orphaned workerd",
    examples: [
      ["wrangler storage-owner gc --dry-run", "Show what would be reclaimed, change nothing"],
      ["wrangler storage-owner gc --all --json", "Reclaim for every persist root; report as JSON"],
    ],
    epilogue:
      "Live owners, live sessions, locks held by live processes and your data are never touched.",
  },
  args: {
    ...scopeArgs,
    "dry-run": {
      type: "boolean",
      description: "Report what would be reclaimed without changing anything",
      default: false,
    },
    json: {
      type: "boolean",
      description: "Print one JSON document instead of text",
      default: false,
    },
  },
  async handler(args) {
    const scope = resolveScope(args);
    const dryRun = Boolean(args["dry-run"]);
    const reports: GcReport[] = [];
    for (const root of scope.roots) {
      const pointers = scope.pointers.get(root) ?? [pointerPath(scope.registryPath, root)];
      reports.push(await collectGarbage(root, scope.registryPath, pointers, dryRun));
    }
    if (args.json) {
      console.log(JSON.stringify({ dryRun, roots: reports, problems: scope.problems }, null, 2));
      return 0;
    }
    const verb = dryRun ? "would remove" : "removed";
    const killVerb = dryRun ? "would kill" : "killed";
    for (const report of reports) {
      console.log(`Persist root ${report.persistRoot}`);
      if (report.removed.length + report.killed.length === 0) console.log("  nothing to reclaim");
      for (const a of report.killed) console.log(`  ${killVerb} ${a.what} pid ${a.pid}: ${a.why}`);
      for (const a of report.removed) console.log(`  ${verb} ${a.what} ${a.path}: ${a.why}`);
      for (const a of report.kept)
        console.log(`  kept ${a.what} ${a.path ?? ""}${a.pid ? ` (pid ${a.pid})` : ""}: ${a.why}`);
      for (const note of report.notes) console.log(`  note: ${note}`);
    }
    if (reports.length === 0) console.log("No persist root on this machine has owner records.");
    for (const problem of scope.problems) console.log(`⚠ ${problem}`);
    return 0;
  },
});
