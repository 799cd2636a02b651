/** Prompts for a command: token ids as given, or text through the model's chat template (Python). */
import type { PromptInput } from "../rollout/prompts";
import { PythonTokenizer } from "../tokenizer/python-tokenizer";

export async function loadPromptIds(prompts: PromptInput[], modelDir: string, wantTokenizer: boolean): Promise<{ promptIds: number[][]; tokenizer?: PythonTokenizer }> {
  const needsText = prompts.some((p) => "text" in p);
  const tokenizer = needsText || wantTokenizer ? await PythonTokenizer.load(modelDir) : undefined;
  try {
    const texts = prompts.flatMap((p) => ("text" in p ? [p.text] : []));
    const encoded = texts.length > 0 ? await tokenizer!.encodeChat(texts) : [];
    let t = 0;
    return { promptIds: prompts.map((p) => ("ids" in p ? p.ids : encoded[t++])), tokenizer };
  } catch (e) {
    tokenizer?.close();
    throw e;
  }
}
