/**
 * A token trie hung below a sequence's last appended token. Nodes are stored flat in an order where
 * every parent precedes its children; `parents[i] = -1` attaches node i to the root (the last
 * appended token). Plain decoding is the empty trie: only the root is sampled.
 */
export interface Trie {
  tokens: number[];
  parents: number[];
  /**
   * A drafter's estimate, per node, of the chance that the verifier walks to the node and accepts it
   * (the product of the per-edge acceptance estimates along its path). Optional: the engine ignores
   * it; the scheduling policy calibrates it and prices the node with it.
   */
  scores?: number[];
}

export const EMPTY_TRIE: Trie = { tokens: [], parents: [] };

/** Depth of each node (root children have depth 1). Throws on a malformed trie. */
export function trieDepths(trie: Trie): number[] {
  const { tokens, parents } = trie;
  if (tokens.length !== parents.length) {
    throw new RangeError(`trie has ${tokens.length} tokens but ${parents.length} parents`);
  }
  const depth = new Array<number>(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const p = parents[i];
    if (!Number.isInteger(p) || p < -1 || p >= i) {
      throw new RangeError(`trie node ${i} has parent ${p}; parents must precede their children`);
    }
    depth[i] = p < 0 ? 1 : depth[p] + 1;
  }
  return depth;
}

/** children[i + 1] lists the children of node i; children[0] those of the root. */
export function trieChildren(trie: Trie): number[][] {
  const children: number[][] = Array.from({ length: trie.tokens.length + 1 }, () => []);
  trie.parents.forEach((p, i) => children[p + 1].push(i));
  return children;
}

/** Indices of node i and its ancestors, root-most first. */
export function triePath(trie: Trie, node: number): number[] {
  const path: number[] = [];
  for (let n = node; n >= 0; n = trie.parents[n]) path.push(n);
  return path.reverse();
}
