// The status page (GET /) in real Chromium against a real busyapi under
// load, with MongoDB down. scripts/browser-test.sh starts both and sets
// BUSYAPI_URL. The tests run in order on one page: the last one breaks the
// polling on purpose, so it comes after the console-error check.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { launch, busyapiUrl } from "./chromium.mjs";

const origin = busyapiUrl();
const WAIT_MS = 15_000;
let browser, page;
const consoleErrors = [];
const foreignRequests = [];

/** The raw number behind a value on the page, and the text it shows. */
// Both read in one task of the page, so a poll landing in between cannot
// pair one update's value with another's text.
async function read(testid) {
  const [value, text] = await page
    .getByTestId(testid)
    .evaluate((el) => [el.getAttribute("data-value"), el.textContent]);
  return { value: Number(value), raw: value, text: text.trim() };
}

function waitFor(fn, arg) {
  return page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 });
}

before(async () => {
  browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(`uncaught: ${e}`));
  context.on("request", (r) => { if (new URL(r.url()).origin !== origin) foreignRequests.push(r.url()); });
  const res = await page.goto(origin + "/");
  assert.equal(res.status(), 200);
});

after(async () => { await browser?.close(); });

test("the page is titled and headed busyapi and shows the server running", async () => {
  assert.match(await page.title(), /busyapi/);
  assert.equal((await page.locator("h1").textContent()).trim(), "busyapi");
  await waitFor(() => document.querySelector('[data-testid="server-status"]').textContent === "running");
  const version = await read("version");
  assert.match(version.text, /^\d+\.\d+\.\d+/);
  assert.equal((await read("node-id")).text, "0");
  assert.ok((await read("uptime")).value > 0);
  assert.ok((await read("connections-open")).value >= 1, "the page's own connection is open");
});

test("the acknowledged total and the ingest rate change while the load runs", async (t) => {
  await waitFor(() => Number(document.querySelector('[data-testid="ingest-rate"]').dataset.value) > 0);
  const ack1 = await read("acknowledged");
  const rate1 = await read("ingest-rate");
  await sleep(3000);
  const ack2 = await read("acknowledged");
  let rate2 = await read("ingest-rate");
  // The load's rate swings, but two reads can still round alike; give it a few more polls.
  for (let i = 0; i < 20 && rate2.text === rate1.text; i++) {
    await sleep(500);
    rate2 = await read("ingest-rate");
  }
  t.diagnostic(`acknowledged ${ack1.text} -> ${ack2.text}; ingest rate ${rate1.text}/s -> ${rate2.text}/s`);
  assert.ok(ack2.value > ack1.value, `acknowledged grew: ${ack1.value} -> ${ack2.value}`);
  assert.equal(ack2.text.replaceAll(",", ""), ack2.raw, "the shown total is the raw total");
  assert.notEqual(rate2.text, rate1.text, "the ingest rate shown changed");
  assert.ok(rate2.value > 0, "the ingest rate is positive under load");
  const stats = await (await fetch(origin + "/api/stats", { cache: "no-store" })).json();
  assert.ok(stats.acknowledged >= ack2.value, "the page shows no more than the server counted");
});

test("MongoDB shows as down and the WAL keeps the backlog", async () => {
  const mongo = await read("mongo-status");
  assert.equal(mongo.text, "down");
  assert.equal(mongo.raw, "down");
  assert.match(await page.getByTestId("mongo-status").getAttribute("class"), /\bbad\b/);
  assert.equal((await read("flushed")).value, 0);
  assert.equal((await read("flush-rate")).value, 0);
  const records = await read("wal-backlog-records");
  assert.ok(records.value > 0, "undelivered records are counted");
  assert.match((await read("wal-backlog-bytes")).text, /^[\d.,]+ (B|KiB|MiB|GiB)$/);
  // Readiness does not depend on MongoDB: the WAL absorbs the outage.
  assert.equal((await read("readiness")).text, "ready");
  for (const id of ["client-errors", "server-errors", "mongo-errors"]) {
    assert.ok(Number.isInteger((await read(id)).value), `${id} is shown`);
  }
});

test("nothing overflows horizontally at phone widths", async () => {
  for (const [width, height] of [[390, 844], [320, 640]]) {
    await page.setViewportSize({ width, height });
    await sleep(1200); // one poll, so the widths are those of live numbers
    const { scroll, client } = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      client: document.documentElement.clientWidth,
    }));
    assert.ok(scroll <= client, `at ${width}px: scrollWidth ${scroll} > clientWidth ${client}`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });
});

test("behind a round-robin balancer each node's rate comes from its own counters", async (t) => {
  // The harness's node 1 takes no load. Every other poll is answered by it,
  // as a balancer in front of both would; the page itself still only asks
  // its own origin (the routing happens in this test process).
  const idle = process.env.BUSYAPI_URL_NODE1;
  assert.ok(idle, "BUSYAPI_URL_NODE1 is set by the harness");
  let polls = 0;
  await page.route("**/api/stats", async (route) => {
    const res = await fetch((polls++ % 2 === 0 ? origin : idle) + "/api/stats", { cache: "no-store" });
    await route.fulfill({ status: res.status, contentType: "application/json", body: await res.text() });
  });
  const seen = [];
  for (const until = Date.now() + 12_000; Date.now() < until; await sleep(200)) {
    // One task of the page: node id and rate of the same poll.
    seen.push(await page.evaluate(() => {
      const q = (id) => document.querySelector(`[data-testid="${id}"]`);
      return { node: q("node-id").textContent.trim(), rate: q("ingest-rate").dataset.value };
    }));
  }
  await page.unroute("**/api/stats");
  const rates = (node) => seen.filter((x) => x.node === node && x.rate !== "").map((x) => Number(x.rate));
  const loaded = rates("0"), idleRates = rates("1");
  t.diagnostic(`${polls} polls; node 0 rates ${[...new Set(loaded)].slice(0, 8)}; node 1 rates ${[...new Set(idleRates)]}`);
  assert.ok(loaded.length > 0 && idleRates.length > 0, "both nodes answered with a rate");
  assert.ok(idleRates.every((r) => r === 0), "the idle node shows 0/s, not the loaded node's rate");
  const peak = Number(process.env.LOAD_RATE_MAX ?? 300);
  assert.ok(loaded.some((r) => r > 0), "the loaded node shows its load");
  assert.ok(loaded.every((r) => r >= 0 && r <= peak * 1.5),
    `the loaded node's rate stays within its load (peak ${peak}/s), not a total divided by one poll`);
});

test("the page makes no request to any other origin", () => {
  assert.deepEqual(foreignRequests, []);
});

test("the page logs no console errors", () => {
  assert.deepEqual(consoleErrors, []);
});

test("a failed poll shows server unreachable and polling recovers", async () => {
  await page.route("**/api/stats", (route) => route.abort("connectionrefused"));
  await waitFor(() => document.querySelector('[data-testid="server-status"]').textContent === "server unreachable");
  await page.unroute("**/api/stats");
  await waitFor(() => document.querySelector('[data-testid="server-status"]').textContent === "running");
});
