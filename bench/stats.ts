// The few statistics both benches print.
export const percentile = (values: number[], p: number): number => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
};
export const median = (values: number[]): number => percentile(values, 50);
export const round = (n: number, digits = 0): number => Math.round(n * 10 ** digits) / 10 ** digits;
