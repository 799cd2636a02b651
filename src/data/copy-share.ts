/**
 * How much of a response is copied from its prompt, the statistic behind "share of edit response
 * tokens copied from the prompt" in the benchmark report.
 *
 * Definition: a response token is *copied* when it lies inside some window of `n` consecutive
 * response tokens that also occurs contiguously (as the same `n` token ids, in order) somewhere in
 * the prompt. The share is (copied response tokens) / (response tokens). A response shorter than
 * `n` has no window and so a share of 0; an empty response has a share of 0.
 *
 * With n = 4 a token is not counted for an isolated coincidence (a common single token or pair), only
 * for runs of at least four tokens reproduced from the prompt, which is what prompt-lookup and
 * suffix drafters can propose. Cost: O(len(prompt) + len(response)) set operations, n fixed.
 */

function gramKey(ids: readonly number[], start: number, n: number): string {
  let key = String(ids[start]);
  for (let k = 1; k < n; k++) key += "," + ids[start + k];
  return key;
}

export function copiedShare(promptIds: readonly number[], outputIds: readonly number[], n = 4): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a positive integer, got ${n}`);
  if (outputIds.length === 0) return 0;
  const grams = new Set<string>();
  for (let i = 0; i + n <= promptIds.length; i++) grams.add(gramKey(promptIds, i, n));
  let copied = 0;
  let coveredUntil = 0; // response positions below this are already counted
  for (let j = 0; j + n <= outputIds.length; j++) {
    if (!grams.has(gramKey(outputIds, j, n))) continue;
    copied += j + n - Math.max(j, coveredUntil);
    coveredUntil = j + n;
  }
  return copied / outputIds.length;
}
