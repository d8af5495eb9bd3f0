// Starts the `conformance` example server (path from $CONFORMANCE_BIN) or the
// `chatwire` server (path from $CHATWIRE_BIN) on a free port; relative paths
// are resolved from the repository root.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");
const READY = /^listening on http:\/\/127\.0\.0\.1:(\d+)$/;

function binFrom(variable, fallback) {
  const raw = process.env[variable] ?? fallback;
  return path.isAbsolute(raw) ? raw : path.join(REPO_ROOT, raw);
}

export function conformanceBin() {
  return binFrom("CONFORMANCE_BIN", "target/debug/examples/conformance");
}

export function chatwireBin() {
  return binFrom("CHATWIRE_BIN", "target/debug/chatwire");
}

// `bin` defaults to the conformance example; `env` is added to the
// environment (an `undefined` value removes the variable).
export async function startServer(args = [], { bin = conformanceBin(), env = {} } = {}) {
  const name = path.basename(bin);
  if (!existsSync(bin)) {
    throw new Error(`${name} binary not found at ${bin} (build it or set CONFORMANCE_BIN / CHATWIRE_BIN)`);
  }
  const childEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(childEnv)) if (v === undefined) delete childEnv[k];
  const child = spawn(bin, ["--host", "127.0.0.1", "--port", "0", ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: childEnv,
  });
  const lines = createInterface({ input: child.stdout });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not print its ready line`)), 20000);
    child.once("exit", (code) => reject(new Error(`${name} exited early (${code})`)));
    child.once("error", reject);
    lines.once("line", (line) => {
      clearTimeout(timer);
      const m = READY.exec(line.trim());
      if (m) resolve(Number(m[1]));
      else reject(new Error(`unexpected first line from ${name}: ${JSON.stringify(line)}`));
    });
  }).catch((err) => {
    child.kill();
    throw err;
  });
  // keep draining stdout so that the server never blocks on a full pipe
  lines.on("line", () => {});
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    child,
    alive: () => child.exitCode === null && child.signalCode === null,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
