// Saves the status page as PNGs, desktop and phone size, once the page has
// polled long enough for its rates and sparkline to fill in.
// usage: BUSYAPI_URL=http://127.0.0.1:PORT node screenshot.mjs DESKTOP.png PHONE.png
import { setTimeout as sleep } from "node:timers/promises";
import { launch, busyapiUrl } from "./chromium.mjs";

const [desktopPath, phonePath] = process.argv.slice(2);
if (!desktopPath || !phonePath) throw new Error("usage: node screenshot.mjs DESKTOP.png PHONE.png");
const SETTLE_MS = Number(process.env.SCREENSHOT_SETTLE_MS ?? 12_000);
const colorScheme = process.env.SCREENSHOT_COLOR_SCHEME ?? "light"; // or "dark"
const origin = busyapiUrl();

const browser = await launch();
try {
  const desktop = await (await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme })).newPage();
  const phone = await (await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme,
  })).newPage();
  for (const page of [desktop, phone]) {
    await page.goto(origin + "/");
    await page.getByTestId("server-status").filter({ hasText: "running" }).waitFor();
  }
  await sleep(SETTLE_MS);
  await desktop.screenshot({ path: desktopPath, fullPage: true });
  await phone.screenshot({ path: phonePath, fullPage: true });
  console.log(`saved ${desktopPath} and ${phonePath}`);
} finally {
  await browser.close();
}
