// Compile a solc standard-JSON input (stdin) with the pinned npm solc; print the output.
// Imports such as "@openzeppelin/..." resolve inside node_modules.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const root = path.resolve(__dirname, "..");
function findImports(name) {
  for (const base of [root, path.join(root, "node_modules")]) {
    const file = path.join(base, name);
    if (file.startsWith(base) && fs.existsSync(file)) {
      return { contents: fs.readFileSync(file, "utf8") };
    }
  }
  return { error: `import not found: ${name}` };
}

const input = fs.readFileSync(0, "utf8");
process.stdout.write(JSON.stringify({ version: solc.version(), output: JSON.parse(solc.compile(input, { import: findImports })) }));
