/** The speculation options `rollout` and `serve` share, and their checks. */
import { DEFAULT_HISTORY_MAX_NODES, DEFAULT_HISTORY_MAX_PROMPTS } from "../drafters/history-store";
import { DRAFTERS } from "../drafters/registry";
import { MODES, POLICIES, SPECACTOR_DRAFTERS } from "../rollout/modes";
import { type OptSpec, type Parsed, UsageError } from "./args";

export const SPECULATION_OPTIONS: OptSpec[] = [
  {
    name: "mode",
    type: "string",
    default: "plain",
    metavar: MODES.join("|"),
    help: "plain decoding; vanilla speculation (one --drafter, fixed draft length, drafter and verifier take turns); decoupled (the model drafter runs ahead on cores of its own); specactor (--drafters merged per request, the cost-model policy decides every step how much to verify)",
  },
  { name: "drafter", type: "string", metavar: DRAFTERS.join("|"), help: "the drafter of --mode vanilla (decoupled: model)" },
  { name: "drafters", type: "string", metavar: "LIST", help: `--mode specactor: the drafters merged per request (default ${SPECACTOR_DRAFTERS.join(",")})` },
  { name: "policy", type: "string", default: "cost", metavar: POLICIES.join("|"), help: "--mode specactor: cost (the measured cost model) or an ablation: const-price (a row at 0.05 of a step), fixed (--draft-len nodes always), batch-table (draft length by batch size)" },
  { name: "no-makespan", type: "flag", help: "--mode specactor: weigh every request's drafts alike (default: by predicted remaining length)" },
  { name: "draft-len", type: "int", default: 4, metavar: "K", help: "draft depth per verify step (vanilla, decoupled; specactor's fixed and batch-table ablations)" },
  { name: "history-max-prompts", type: "int", default: DEFAULT_HISTORY_MAX_PROMPTS, metavar: "N", help: "suffix drafter: prompts whose responses the history store keeps (least recently used evicted)" },
  { name: "history-max-nodes", type: "int", default: DEFAULT_HISTORY_MAX_NODES, metavar: "N", help: "suffix drafter: trie nodes the history store keeps over all prompts (~40 bytes each)" },
];

export function historyBounds(a: Parsed): { historyMaxPrompts: number; historyMaxNodes: number } {
  for (const k of ["history-max-prompts", "history-max-nodes"]) if ((a[k] as number) < 1) throw new UsageError(`--${k} must be >= 1, got ${a[k]}`);
  return { historyMaxPrompts: a["history-max-prompts"] as number, historyMaxNodes: a["history-max-nodes"] as number };
}
