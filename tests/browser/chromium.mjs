// Starts Debian's Chromium through playwright-core, which downloads no
// browser of its own. The flags keep Chromium off the network it would
// otherwise try at every start (this machine's network is closed); Playwright
// gives each launch a fresh, empty profile directory of its own.
import { chromium } from "playwright-core";

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 60_000,
  });
}

/** The base URL busyapi listens on, from the harness (tests/browser/harness.sh). */
export function busyapiUrl() {
  const url = process.env.BUSYAPI_URL;
  if (!url) throw new Error("BUSYAPI_URL is not set: run scripts/browser-test.sh");
  return new URL(url).origin;
}
