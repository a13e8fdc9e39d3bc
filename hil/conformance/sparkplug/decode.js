// Decodes Sparkplug B payloads with Eclipse Tahu's JavaScript codec (npm sparkplug-payload) and
// prints what it sees as JSON, for the gateway's oracle test (tests/uplink/test_sparkplug_oracles.py).
// stdin: [{"topic": "...", "hex": "..."}, ...]; stdout: [{"topic": "...", "payload": {...}}, ...].
// 64-bit integers (protobufjs Long) are printed as decimal strings, so that none loses precision.
"use strict";
const { get } = require("sparkplug-payload");

const codec = get("spBv1.0");

function plain(value) {
  if (value === null || value === undefined) return value;
  if (typeof value === "object" && typeof value.toString === "function" && "low" in value && "high" in value) {
    return value.toString(); // a Long
  }
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return Buffer.from(value).toString("hex");
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const messages = JSON.parse(input);
  const out = messages.map((m) => ({
    topic: m.topic,
    payload: plain(codec.decodePayload(Buffer.from(m.hex, "hex"))),
  }));
  process.stdout.write(JSON.stringify(out) + "\n");
});
