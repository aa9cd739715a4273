// Checks tsc cannot make (no dependencies): the library uses nothing Node-only (it runs
// in browsers too), no `any`, no stray console output; tests have no `.only` and no
// skip without a reason, and they test the compiled library (../../dist), not src/.
// Exit 1 with one line per finding.
import { readFileSync, readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

function files(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

const rules = {
  src: [
    [/from\s+["'](node:[^"']+|fs|path|os|http|https|zlib|crypto|buffer|events|stream|child_process|url|util)["']/, "imports a Node module (the library must run in browsers)"],
    [/\bprocess\./, "uses process (Node-only)"],
    [/\bBuffer\b/, "uses Buffer (Node-only)"],
    [/\brequire\(/, "uses require (ESM only)"],
    [/\bsetImmediate\b|__dirname|__filename/, "uses a Node-only global"],
    [/:\s*any\b|\bas any\b|<any>/, "uses any"],
    [/console\.(log|info|debug)\(/, "writes to the console (use the logger)"],
  ],
  test: [
    [/\b(test|it|describe)\.only\(|\bonly:\s*true/, "has .only"],
    [/\bskip:\s*true\b|\.skip\(\s*\)/, "skips without a reason"],
    [/from\s+["'][./]*\/src\//, "imports src/ (tests run against dist/)"],
    [/:\s*any\b|\bas any\b/, "uses any"],
  ],
};

const findings = [];
for (const [dir, checks] of Object.entries(rules)) {
  for (const file of files(join(root, dir))) {
    const lines = readFileSync(file, "utf8").split("\n");
    lines.forEach((line, i) => {
      if (/^\s*\/\//.test(line)) return;
      for (const [pattern, what] of checks) {
        if (pattern.test(line)) findings.push(`${relative(root, file)}:${i + 1}: ${what}: ${line.trim()}`);
      }
    });
  }
}
for (const f of findings) console.log(f);
console.log(`lint: ${findings.length} findings`);
process.exit(findings.length === 0 ? 0 : 1);
