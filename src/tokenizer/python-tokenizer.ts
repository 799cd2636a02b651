/**
 * Chat templates, tokenisation and detokenisation through pythonia into the project's Python
 * environment (`python/specactor/text.py`). Off the hot path: loaded only when a prompt is text, and
 * called once per batch of prompts or outputs. `prompt_ids` input never starts Python.
 */
import * as path from "node:path";
import * as fs from "node:fs";
import { missingPython, pythonBin, pythonPath } from "../paths";

type PythonFn = { (...args: unknown[]): Promise<{ valueOf(): Promise<unknown> }> };
type Pythonia = { python: ((mod: string) => Promise<Record<string, PythonFn>>) & { exit(): void } };

export class PythonTokenizer {
  private constructor(
    private readonly bridge: Pythonia,
    private readonly mod: Record<string, PythonFn>,
    private readonly hfDir: string,
  ) {}

  static async load(modelDir: string): Promise<PythonTokenizer> {
    const py = pythonBin();
    if (py.includes(path.sep) && !fs.existsSync(py)) throw new Error(missingPython(py, "text prompts"));
    process.env.PYTHON_BIN = py;
    const pythonpath = pythonPath();
    if (pythonpath !== undefined) process.env.PYTHONPATH = pythonpath;
    // required lazily: pythonia starts a Python process as soon as it is loaded
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const bridge = require("pythonia") as Pythonia;
    const mod = await bridge.python("specactor.text");
    return new PythonTokenizer(bridge, mod, path.join(modelDir, "hf"));
  }

  async encodeChat(prompts: string[]): Promise<number[][]> {
    return (await (await this.mod.encode_chat(this.hfDir, prompts)).valueOf()) as number[][];
  }

  async decode(tokenIds: number[][]): Promise<string[]> {
    return (await (await this.mod.decode(this.hfDir, tokenIds)).valueOf()) as string[];
  }

  close(): void {
    this.bridge.python.exit();
  }
}
