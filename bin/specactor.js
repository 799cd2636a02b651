#!/usr/bin/env node
// Runs the compiled CLI (dist/), so no call pays a TypeScript compile; `make` (or `npm run build`) builds it.
const path = require("node:path");
const fs = require("node:fs");
const entry = path.join(__dirname, "..", "dist", "src", "cli", "main.js");
if (!fs.existsSync(entry)) {
  process.stderr.write("specactor: error: not built yet; run `make setup` (or `npm run build`) in " + path.dirname(__dirname) + "\n");
  process.exit(2);
}
require(entry).main();
