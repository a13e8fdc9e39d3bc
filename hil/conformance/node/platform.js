#!/usr/bin/env node
// A small city platform written from docs/upstream-contract.md and the JSON Schemas alone, in
// another language than the gateway: it checks the signing test vectors (RFC 8785 + HMAC-SHA256),
// consumes telemetry and events, validates every message with the schemas (ajv), detects gaps and
// duplicates per (epoch, lane) with the prev_seq chain (starting at the status's `acked`), acks
// signed end to end, and sends a signed command twice (idempotent by id) and awaits the results.
//
//   node platform.js --port 1883 --gateway gw-1 --key-hex <64 hex> --schemas <dir> \
//        --expect-readings 50 --expect-events 1 [--host 127.0.0.1] [--prefix citynerve] [--timeout-s 60]
//
// Prints one JSON summary line and exits 0 when everything expected arrived with no open gap.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const mqtt = require("mqtt");
const Ajv2020 = require("ajv/dist/2020").default;
const addFormats = require("ajv-formats").default;
const canonicalize = require("canonicalize");

function args() {
  const out = { host: "127.0.0.1", prefix: "citynerve", "timeout-s": "60", "expect-events": "0" };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  return out;
}

const opt = args();
const KEY = Buffer.from(opt["key-hex"], "hex");
const GW = opt.gateway;
const BASE = `${opt.prefix}/${GW}`;

// --- signatures: context line + RFC 8785 canonical JSON of the object without "sig" ---------
function sign(obj, context) {
  const body = { ...obj, alg: "hmac-sha256" };
  delete body.sig;
  const bytes = Buffer.concat([Buffer.from(context, "utf8"), Buffer.from(canonicalize(body), "utf8")]);
  return { ...body, sig: crypto.createHmac("sha256", KEY).update(bytes).digest("base64") };
}

function checkVectors(dir) {
  const v = JSON.parse(fs.readFileSync(path.join(dir, "signing-vectors.json"), "utf8"));
  const problems = [];
  for (const c of v.canonical) {
    const got = canonicalize(JSON.parse(c.json));
    if (got !== c.canonical) problems.push(`canonical ${c.json}: ${got} != ${c.canonical}`);
  }
  const key = Buffer.from(v.hmac_key_hex, "hex");
  for (const s of v.signatures) {
    const ctx = s.kind === "ack" ? "citynerve-ack-v1\n" : "citynerve-command-v1\n";
    const bytes = ctx + canonicalize(JSON.parse(s.json));
    if (bytes !== s.signed_bytes) problems.push(`signed bytes of ${s.kind}`);
    const sig = crypto.createHmac("sha256", key).update(Buffer.from(bytes, "utf8")).digest("base64");
    if (sig !== s.sig) problems.push(`sig of ${s.kind}: ${sig} != ${s.sig}`);
  }
  return problems;
}

// --- schemas ---------------------------------------------------------------------------------
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
const KIND_SCHEMA = { telemetry: "telemetry", events: "events", status: "status", inventory: "inventory", "cmd/result": "command_result" };
const validators = {};
for (const [kind, file] of Object.entries(KIND_SCHEMA)) {
  validators[kind] = ajv.compile(JSON.parse(fs.readFileSync(path.join(opt.schemas, `${file}.json`), "utf8")));
}

// --- state: rows by (epoch, lane, seq), the chain per (epoch, lane) ------------------------------
const lanes = new Map(); // `${epoch}/${lane}` -> {contiguous, seqs:Set, links:[[prev,last]], duplicates}
const summary = { vectors: [], readings: 0, events: 0, duplicates: 0, invalid: [], messages: 0, results: [], acks: 0, open_gaps: {} };
let acked = {}; // from the status: where a chain starts
let statusEpoch = null;

function lane(epoch, name) {
  const key = `${epoch}/${name}`;
  if (!lanes.has(key)) {
    const start = epoch === statusEpoch && acked[name] ? acked[name] : 0;
    lanes.set(key, { contiguous: start, seqs: new Set(), links: [], duplicates: 0 });
  }
  return lanes.get(key);
}

function follow(l) {
  let moved = true;
  while (moved) {
    moved = false;
    for (const [prev, last] of l.links) {
      if (prev <= l.contiguous && last > l.contiguous) {
        l.contiguous = last;
        moved = true;
      }
    }
  }
  l.links = l.links.filter(([, last]) => last > l.contiguous);
}

function ingest(kind, body) {
  const l = lane(body.epoch, body.lane);
  const rows = kind === "telemetry" ? body.readings : body.events;
  for (const r of rows) {
    if (l.seqs.has(r.seq)) {
      l.duplicates += 1;
      summary.duplicates += 1;
      continue;
    }
    l.seqs.add(r.seq);
    if (kind === "telemetry") summary.readings += 1;
    else summary.events += 1;
  }
  l.links.push([body.prev_seq, body.seq]);
  follow(l);
  return l;
}

function openGaps() {
  const out = {};
  for (const [key, l] of lanes) {
    if (l.links.length) out[key] = [l.contiguous, Math.min(...l.links.map(([p]) => p))];
  }
  return out;
}

// --- run -------------------------------------------------------------------------------------
summary.vectors = checkVectors(opt.schemas);
const client = mqtt.connect(`mqtt://${opt.host}:${opt.port}`, { protocolVersion: 5, clean: true, clientId: `conformance-node-${process.pid}` });
let commandSent = null;

function finish(code) {
  summary.open_gaps = openGaps();
  process.stdout.write(JSON.stringify(summary) + "\n");
  client.end(true, () => process.exit(code));
}

function done() {
  const wantR = Number(opt["expect-readings"]);
  const wantE = Number(opt["expect-events"]);
  return (
    summary.readings >= wantR &&
    summary.events >= wantE &&
    summary.results.length >= 2 &&
    Object.keys(openGaps()).length === 0
  );
}

setTimeout(() => finish(2), Number(opt["timeout-s"]) * 1000);

client.on("connect", () => {
  for (const kind of Object.keys(KIND_SCHEMA)) client.subscribe(`${BASE}/${kind}`, { qos: 1 });
});

client.on("message", (topic, payload) => {
  const kind = topic.slice(BASE.length + 1);
  let body;
  try {
    body = JSON.parse(payload.toString("utf8"));
  } catch (err) {
    summary.invalid.push(`${kind}: not JSON`);
    return;
  }
  summary.messages += 1;
  if (!validators[kind](body)) {
    summary.invalid.push(`${kind}: ${ajv.errorsText(validators[kind].errors)}`);
    return;
  }
  if (body.ts !== new Date(body.ts_ms).toISOString()) summary.invalid.push(`${kind}: ts ${body.ts} is not ts_ms ${body.ts_ms}`);
  if (kind === "status") {
    statusEpoch = body.epoch;
    acked = body.acked || {};
    for (const [name, seq] of Object.entries(acked)) {
      const l = lane(body.epoch, name);
      if (seq > l.contiguous) {
        l.contiguous = seq;
        follow(l);
      }
    }
  } else if (kind === "inventory" && commandSent === null) {
    const device = body.devices.find((d) => d.points.length > 0);
    const now = Date.now();
    commandSent = sign(
      {
        schema: "citynerve.command/1",
        id: `node-${now}`,
        gateway_id: GW,
        action: "read_point",
        args: { device_id: device.device_id, point: device.points[0].name },
        issued_at_ms: now,
        expires_at_ms: now + 60000,
        nonce: crypto.randomBytes(18).toString("base64url"),
      },
      "citynerve-command-v1\n",
    );
    const text = JSON.stringify(commandSent);
    client.publish(`${BASE}/cmd`, text, { qos: 1 });
    client.publish(`${BASE}/cmd`, text, { qos: 1 }); // the same command again: one run, one outcome
  } else if (kind === "cmd/result") {
    summary.results.push({ command_id: body.command_id, outcome: body.outcome, reason: body.reason, result: body.result });
  } else if (kind === "telemetry" || kind === "events") {
    const l = ingest(kind, body);
    const ack = sign(
      {
        schema: "citynerve.ack/1",
        gateway_id: GW,
        epoch: body.epoch,
        lane: body.lane,
        seq: l.contiguous,
        ts_ms: Date.now(),
        consumer: "conformance-node",
      },
      "citynerve-ack-v1\n",
    );
    client.publish(`${BASE}/ack`, JSON.stringify(ack), { qos: 1 });
    summary.acks += 1;
  }
  if (done()) finish(summary.vectors.length || summary.invalid.length ? 1 : 0);
});
