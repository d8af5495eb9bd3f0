// Debian's Chromium, headless, as the browser suites start it: flags that
// keep it from reaching for the network on its own (this machine's network
// is closed), and `host` resolved to this machine, so that a page is served
// under a host name that is not localhost.
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

export function launchChromium(host) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--host-resolver-rules=MAP ${host} 127.0.0.1`,
    ],
  });
}
