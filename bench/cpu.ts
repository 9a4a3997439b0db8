// CPU time of the processes a bench figure is made of, by role (`session workerd`, `owner node`,
// ...): what the remaining cost of a row is, measured. /proc only (the bench runs on Linux).
import { cpuTimeNs, processGroupMembers, processName } from "../src/process-info.js";

/** CPU time of a process in ns; 0 where it cannot be read (the process gone). */
const cpuNs = (pid: number): number => cpuTimeNs(pid) ?? 0;

export const comm = (pid: number): string => processName(pid) ?? "?";

/** Every process of these roles (process groups), labelled `role comm` (`#2` for a second one). */
export function processesOf(groups: Record<string, number | undefined>): Map<number, string> {
  const found = new Map<number, string>();
  for (const [role, pgid] of Object.entries(groups)) {
    if (pgid === undefined) continue;
    for (const pid of processGroupMembers(pgid)) {
      const label = `${role} ${comm(pid)}`;
      const taken = [...found.values()].filter((l) => l.split("#")[0] === label).length;
      found.set(pid, taken ? `${label}#${taken + 1}` : label);
    }
  }
  return found;
}

/** CPU-ms per label spent while `work` ran. */
export async function cpuDuring(
  processes: Map<number, string>,
  work: () => Promise<void>,
): Promise<Record<string, number>> {
  const before = new Map([...processes.keys()].map((pid) => [pid, cpuNs(pid)]));
  await work();
  const spent: Record<string, number> = {};
  for (const [pid, label] of processes)
    spent[label] = (spent[label] ?? 0) + (cpuNs(pid) - before.get(pid)!) / 1e6;
  return spent;
}
