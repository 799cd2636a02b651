/** A progress line on stderr: redrawn in place on a terminal, a line every few seconds otherwise. */

export class Progress {
  private done = 0;
  private tokens = 0;
  private readonly start = Date.now();
  private lastDraw = 0;
  private readonly tty = Boolean(process.stderr.isTTY);

  constructor(private readonly label: string, private readonly total: number, private readonly enabled = true) {}

  addTokens(n: number): void {
    this.tokens += n;
    this.draw(false);
  }

  complete(n = 1): void {
    this.done += n;
    this.draw(false);
  }

  finish(): void {
    this.draw(true);
    if (this.enabled && this.tty) process.stderr.write("\n");
  }

  private draw(force: boolean): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < (this.tty ? 100 : 10_000)) return;
    this.lastDraw = now;
    const secs = (now - this.start) / 1000;
    const frac = this.total > 0 ? this.done / this.total : 1;
    const width = 24;
    const bar = "#".repeat(Math.round(frac * width)).padEnd(width, ".");
    const line = `${this.label} [${bar}] ${this.done}/${this.total} samples, ${this.tokens} tokens, ${(this.tokens / Math.max(secs, 1e-9)).toFixed(1)} tok/s, ${secs.toFixed(1)}s`;
    process.stderr.write(this.tty ? `\r${line}\x1b[K` : `${line}\n`);
  }
}
