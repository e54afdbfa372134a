// A paced load for the status page: POSTs valid usages to URL/api/usages
// until killed. The rate swings between a fifth of LOAD_RATE_MAX and all of
// it over LOAD_PERIOD_S, so the page's ingest rate visibly moves (the test
// asserts it changes) and the sparkline has a shape. A bounded number of
// requests is in flight at once, so a slow server slows the load rather
// than queueing without limit.
//
// usage: node load.mjs http://127.0.0.1:PORT
import http from "node:http";

const base = new URL(process.argv[2] ?? "http://127.0.0.1:3000");
const RATE_MAX = Number(process.env.LOAD_RATE_MAX ?? 300);
const PERIOD_S = Number(process.env.LOAD_PERIOD_S ?? 8);
const BAD_EVERY = Number(process.env.LOAD_BAD_EVERY ?? 0);
const IN_FLIGHT_MAX = 8;
const TICK_MS = 50;
const USAGE = JSON.stringify({
  patientId: "100",
  timestamp: "Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)",
  medication: "Albuterol",
});

const agent = new http.Agent({ keepAlive: true, maxSockets: IN_FLIGHT_MAX });
const counts = new Map();
let sent = 0, inFlight = 0, owed = 0;
const started = Date.now();

function post() {
  sent++;
  inFlight++;
  const body = BAD_EVERY > 0 && sent % BAD_EVERY === 0 ? "{not json" : USAGE;
  const req = http.request(
    new URL("/api/usages", base),
    { method: "POST", agent, headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) } },
    (res) => {
      res.resume();
      res.on("end", () => { inFlight--; counts.set(res.statusCode, (counts.get(res.statusCode) ?? 0) + 1); });
    },
  );
  req.on("error", (e) => { inFlight--; counts.set(e.code ?? "error", (counts.get(e.code ?? "error") ?? 0) + 1); });
  req.end(body);
}

setInterval(() => {
  const t = (Date.now() - started) / 1000;
  const rate = RATE_MAX * (0.6 - 0.4 * Math.cos((2 * Math.PI * t) / PERIOD_S));
  const due = (rate * TICK_MS) / 1000;
  owed = Math.min(owed + due, 2 * due + 1); // after a stall, catch up by one tick at most
  while (owed >= 1 && inFlight < IN_FLIGHT_MAX) { owed--; post(); }
}, TICK_MS);

function report() {
  console.log(`load: sent ${sent}; responses ${JSON.stringify(Object.fromEntries(counts))}`);
  process.exit(0);
}
process.on("SIGTERM", report);
process.on("SIGINT", report);
