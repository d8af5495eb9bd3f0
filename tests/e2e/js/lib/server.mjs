// Starts the `conformance` example server (path from $CONFORMANCE_BIN,
// relative paths resolved from the repository root) on a free port.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");
const READY = /^listening on http:\/\/127\.0\.0\.1:(\d+)$/;

export function conformanceBin() {
  const raw = process.env.CONFORMANCE_BIN ?? "target/debug/examples/conformance";
  return path.isAbsolute(raw) ? raw : path.join(REPO_ROOT, raw);
}

export async function startServer(args = []) {
  const bin = conformanceBin();
  if (!existsSync(bin)) {
    throw new Error(`conformance binary not found at ${bin} (build it or set CONFORMANCE_BIN)`);
  }
  const child = spawn(bin, ["--host", "127.0.0.1", "--port", "0", ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("conformance did not print its ready line")), 20000);
    child.once("exit", (code) => reject(new Error(`conformance exited early (${code})`)));
    child.once("error", reject);
    lines.once("line", (line) => {
      clearTimeout(timer);
      const m = READY.exec(line.trim());
      if (m) resolve(Number(m[1]));
      else reject(new Error(`unexpected first line from conformance: ${JSON.stringify(line)}`));
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
