import { askLifeline } from "../../lifeline.js";
import { inspectRoot } from "../../owner/inspect.js";
import { liveSessionCount, ownerLeftovers } from "../../owner/assessment.js";
import { acquireSpawnLock } from "../../owner/spawn-lock.js";
import { replaceDeadOwnerWithin } from "../../owner/succession.js";
import {
  killIdentities,
  liveness,
  type ProcessIdentity,
  signalIfAnswers,
  signalIfOurs,
} from "../../process-info.js";
import { type OwnerRecord, readOwner, readStandby, rootPaths } from "../../records.js";
import { sleep } from "../../wait.js";
import { createCommand, UserError } from "../create-command.js";
import { table } from "./format.js";
import { resolveScope, scopeArgs } from "./scope.js";

export const stopCommand = createCommand({
  command: "stop",
  metadata: {
    description:
      "Stop a storage owner cleanly (SIGTERM, then SIGKILL of it and its workerd after --timeout)",
    examples: [
      ["wrangler storage-owner stop", "Stop the owner for this project's default persist root"],
      [
        "wrangler storage-owner stop --force",
        "Stop it even with dev sessions connected; its standby takes over for them",
      ],
      ["wrangler storage-owner stop --all --timeout 5", "Stop every owner on this machine"],
    ],
  },
  args: {
    ...scopeArgs,
    force: {
      type: "boolean",
      description:
        "Stop even while dev sessions are connected: its standby takes over at once (without one, the sessions elect a new owner) and they keep working",
      default: false,
    },
    timeout: {
      type: "number",
      description: "Seconds to wait for a graceful exit before killing the owner and its workerd",
      default: 10,
    },
  },
  async handler(args) {
    if (!(args.timeout >= 0))
      throw new UserError(`--timeout must be a number of seconds, got ${args.timeout}.`);
    const scope = resolveScope(args);
    if (scope.roots.length === 0) {
      console.log("No persist root on this machine has a storage owner.");
      return 0;
    }
    let failed = false;
    for (const root of scope.roots) {
      failed =
        !(await stopOne(root, scope.registryPath, args.force, args.timeout * 1000)) || failed;
    }
    return failed ? 1 : 0;
  },
});

async function stopOne(
  root: string,
  registryPath: string,
  force: boolean,
  timeoutMs: number,
): Promise<boolean> {
  const report = inspectRoot(root);
  const owner = report.owner;
  if (!owner) {
    for (const problem of report.problems) console.error(`✘ ${problem}`);
    if (report.problems.length) {
      console.error("  Run `wrangler storage-owner gc` to reclaim unreadable records.");
      return false;
    }
    console.log(`No storage owner is running for ${root}.`);
    return true;
  }
  if (owner.state === "dead") {
    console.log(
      `Storage owner pid ${owner.pid} for ${root} is not running; its records were left behind. ` +
        "Run `wrangler storage-owner gc` to reclaim them.",
    );
    return true;
  }
  const alive = report.clients.filter((c) => c.alive);
  if (alive.length > 0 && !force) {
    console.error(
      `✘ Not stopping storage owner pid ${owner.pid} for ${root}: ${alive.length} dev session(s) use it.\n` +
        table(
          ["PID", "WORKER", "COMMAND", "SINCE"],
          alive.map((c) => [String(c.pid), c.worker, c.command, c.since]),
          "    ",
        ) +
        "\n  Stop those sessions first, or pass --force (the standby then takes over for them, or they elect a new owner, and they keep working).",
    );
    return false;
  }
  const paths = rootPaths(root);
  const record = readOwner(paths);
  if (!record?.ok) return false;
  const standbyRead = readStandby(paths);
  const standby =
    standbyRead?.ok &&
    standbyRead.value.backs === owner.pid &&
    liveness(standbyRead.value) === "alive"
      ? standbyRead.value
      : undefined;
  // A signal where the start time proves the pid ours; else a stop request over its lifeline,
  // which only the process holding the record's token obeys (no /proc and no ps; Windows).
  const sent = signalIfOurs(record.value, "SIGTERM");
  if (sent === "unproven" && !(await askToStop(record.value))) {
    console.error(
      `✘ Not stopping pid ${owner.pid}: the owner record ${paths.ownerRecord} does not prove that this pid is the ` +
        `storage owner (no start time that /proc or ps can check, and no lifeline answered with the recorded token). ` +
        `Stop it yourself if it is.`,
    );
    return false;
  }
  console.log(`Stopping storage owner pid ${owner.pid} for ${root}…`);
  const deadline = Date.now() + timeoutMs;
  const gone = (identity: ProcessIdentity) => liveness(identity) !== "alive";
  while (!gone(record.value) && Date.now() < deadline) await sleep(100);
  if (!gone(record.value)) {
    // Only what the record proves ours: the owner and the workerd it recorded.
    const killed = killIdentities([record.value, ...ownerLeftovers(record.value)]);
    const answered = () => answersAsOwner(record.value);
    if (
      !killed.includes(owner.pid) &&
      (await signalIfAnswers(owner.pid, answered, "SIGKILL")) === "signalled"
    )
      killed.push(owner.pid);
    const killDeadline = Date.now() + 5000;
    while (!gone(record.value) && Date.now() < killDeadline) await sleep(50);
    const reclaim = await reclaimUnderLock(paths, registryPath);
    console.log(
      `Storage owner pid ${owner.pid} did not exit within ${timeoutMs / 1000}s; killed it and its workerd (${killed.join(", ")}); ${reclaim}.`,
    );
  } else {
    console.log(`Stopped storage owner pid ${owner.pid}.`);
  }
  if (alive.length > 0) {
    const next = standby
      ? await waitForSuccessor(root, owner.pid, Math.max(deadline, Date.now() + 3000))
      : undefined;
    console.log(
      `${alive.length} dev session(s) are still running (${alive.map((c) => `${c.worker} pid ${c.pid}`).join(", ")}); ` +
        (next
          ? `standby pid ${next} took over as their owner.`
          : "they elect and start a new owner and keep working."),
    );
  } else if (standby) {
    // The owner stops its standby on the way out; make sure nothing of it is left, unless a
    // session arrived meanwhile and the standby now serves it as the owner.
    while (!gone(standby) && Date.now() < deadline + 5000) {
      if (ownerPid(paths) === standby.pid) break;
      await sleep(50);
    }
    // Decide under the election lock: a promotion holds it from its first step to its record.
    const lock = (await acquireSpawnLock(paths, 5000)).release;
    try {
      const current = readStandby(paths);
      const promoting =
        ownerPid(paths) === standby.pid || !(current?.ok && current.value.pid === standby.pid);
      if (promoting && !gone(standby)) {
        console.log(
          `Its standby pid ${standby.pid} took over for a session that arrived meanwhile.`,
        );
      } else {
        if (lock && !gone(standby)) killIdentities([standby, ...ownerLeftovers(standby)]);
        console.log(`Stopped its standby pid ${standby.pid}.`);
      }
    } finally {
      lock?.();
    }
  }
  return true;
}

function askToStop(record: OwnerRecord): Promise<boolean> {
  if (record.lifelinePort === undefined || record.token === undefined)
    return Promise.resolve(false);
  return askLifeline(record.lifelinePort, { pid: record.pid, token: record.token }, { stop: true });
}

function answersAsOwner(record: OwnerRecord): Promise<boolean> {
  if (record.lifelinePort === undefined || record.token === undefined)
    return Promise.resolve(false);
  return askLifeline(record.lifelinePort, { pid: record.pid, token: record.token });
}

function ownerPid(paths: ReturnType<typeof rootPaths>): number | undefined {
  const current = readOwner(paths);
  return current?.ok ? current.value.pid : undefined;
}

/**
 * Reclaims the killed owner as every succession does (owner/succession.ts), with counts taken
 * under the lock: a session may have arrived, or the standby taken over, while we waited. The
 * candidate goes only when no session is left. No successor starts: sessions elect one.
 */
async function reclaimUnderLock(
  paths: ReturnType<typeof rootPaths>,
  registryPath: string,
): Promise<string> {
  const outcome = await replaceDeadOwnerWithin(
    paths,
    registryPath,
    {
      withdrawCandidate: () => liveSessionCount(paths) === 0,
    },
    5000,
  );
  switch (outcome.kind) {
    case "replaced":
      return `reclaimed its records (${paths.ownerRecord})`;
    case "taken":
      return `owner pid ${outcome.owner.pid} took over meanwhile; its records were left to it`;
    case "busy":
      return `the election lock is held by ${outcome.heldBy}, whose election reclaims ${paths.ownerRecord}`;
    case "lingering":
      return `its workerd ${outcome.pids.join(", ")} has not exited yet, so ${paths.ownerRecord} was kept; run \`wrangler storage-owner gc\` shortly`;
  }
}

async function waitForSuccessor(
  root: string,
  oldPid: number,
  deadline: number,
): Promise<number | undefined> {
  while (Date.now() < deadline) {
    const current = readOwner(rootPaths(root));
    if (current?.ok && current.value.pid !== oldPid && current.value.phase === "running")
      return current.value.pid;
    await sleep(50);
  }
  return undefined;
}
