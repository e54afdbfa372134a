// The classic Node/Express busyapi, reproduced as a benchmark baseline for
// scripts/bench.sh (mode `node`). It is deliberately faithful, warts and all:
//
// - every usage is pushed into an in-memory array, and the 201 carries the
//   array's length after the push as its "id" -- so ids repeat once the
//   array has been emptied by a flush;
// - once the array holds more than 1,000 records (the original tests
//   `length > 1000`, so a batch is 1,001 records and ids run 1..1001) they are
//   handed to insertMany without waiting for it, and the array is emptied;
// - nothing is durable: a crash loses whatever sits in the array, a failed
//   insertMany loses its batch, and the 201 is sent before anything is stored;
// - no validation beyond express.json()'s parsing;
// - the express-generator middleware stack the original app runs with:
//   morgan's 'dev' request log (on, since NODE_ENV defaults to development),
//   JSON and urlencoded body parsers, cookie-parser and express.static.
//
// Environment: PORT (default 3000), MONGODB_URI (default
// mongodb://127.0.0.1:27017), LOG_USAGES=0 to drop the original's
// console.log line per request (on by default, as in the original).
// Database "busyapi_node", collection "usages".
"use strict";

const path = require("path");
const express = require("express");
const logger = require("morgan");
const cookieParser = require("cookie-parser");
const { MongoClient } = require("mongodb");

const PORT = Number(process.env.PORT || 3000);
const MONGODB_URI = process.env.MONGODB_URI || "mongodb://127.0.0.1:27017";
const LOG_USAGES = process.env.LOG_USAGES !== "0";
const BATCH = 1000;

const client = new MongoClient(MONGODB_URI);
const usages = client.db("busyapi_node").collection("usages");

// The simple in-memory usage store.
let store = [];

// Fire and forget, as the original: the batch is gone from memory whether
// or not MongoDB takes it.
function saveBatch(batch) {
  usages.insertMany(batch).catch((err) => {
    console.error(`insertMany of ${batch.length} records failed: ${err.message}`);
  });
}

const app = express();
if (app.get("env") === "development") app.use(logger("dev"));
app.use(express.json());
app.use(express.urlencoded({ extended: false }));
app.use(cookieParser());
app.use(express.static(path.join(__dirname, "public")));

app.get("/", (req, res) => {
  res.type("html").send("<!DOCTYPE html><title>busyapi</title><h1>busyapi</h1><p>the server is running</p>\n");
});

app.post("/api/usages", (req, res) => {
  // Store the supplied usage data.
  store.push(req.body);
  const usageId = store.length;
  if (LOG_USAGES) console.log("Stored usage count: " + usageId);

  // Persist the records in batches once there are more than 1,000 of them.
  if (store.length > BATCH) {
    saveBatch(store);
    store = [];
  }
  res.status(201).json({ id: usageId });
});

app.listen(PORT, () => {
  console.log(`busyapi (node original) listening on port ${PORT}, MongoDB ${MONGODB_URI}`);
});
