#!/usr/bin/env node
// A codecbench client in Node.js, built from the repository's .proto files alone (grpc-js and
// proto-loader for the calls, protobufjs for the error details). See README.md beside it and
// docs/protocol.md.
//
//   node client.js run AGENT_DIR [--dataset photos] [--param name=value ...] [--entry-module codec] [--json]
//   node client.js watch EXPERIMENT_ID [--after SEQUENCE] [--json]
//   node client.js get EXPERIMENT_ID
//
// Options for every command: --address host:port (default $CODECBENCH_ADDRESS or 127.0.0.1:50051);
// the bearer token comes from $CODECBENCH_TOKEN or --token-file (`codecbench up` writes one to
// .codecbench/client.token).
//
// Exit status: 0 when the experiment succeeded (or a get/watch call worked), 2 when it failed
// (the typed error is printed), 1 when a call was refused (the status and its details are printed).
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "protos");
// int64 fields (sequence numbers, byte counts, tensor shapes) as strings: JavaScript numbers lose
// integers beyond 2^53. Enums as their names, oneofs tell which field is set.
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: false, oneofs: true, includeDirs: [PROTO_ROOT] };
// Folders that never belong in a bundle (as the Python client skips them).
const SKIP_DIRS = new Set(["__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", "node_modules"]);

const definition = protoLoader.loadSync(["codecbench/v1/orchestrator.proto"], LOADER_OPTIONS);
const v1 = grpc.loadPackageDefinition(definition).codecbench.v1;

// The error details: a google.rpc.Status (protos/google/rpc, copied from googleapis) whose
// `details` are Any messages: ErrorInfo, BadRequest, RetryInfo and codecbench.v1.Error.
const detailsRoot = new protobuf.Root();
detailsRoot.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_ROOT, target));
detailsRoot.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto", "codecbench/v1/errors.proto"], { keepCase: true });
const StatusType = detailsRoot.lookupType("google.rpc.Status");

/** The rich details of a failed call: [{type: "google.rpc.ErrorInfo", ...fields}, ...]. */
function statusDetails(err) {
  const raw = err.metadata ? err.metadata.get("grpc-status-details-bin") : [];
  if (raw.length === 0) return [];
  const status = StatusType.decode(raw[0]);
  return status.details.map((any) => {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    const type = detailsRoot.lookupType(typeName);
    return { type: typeName, ...type.toObject(type.decode(any.value), { longs: String, enums: String }) };
  });
}

/** Reads an agent folder into a codecbench.v1.AgentBundle: every file with its content; sha256
 * and size_bytes are optional when content is sent, so they are left out. */
function bundleFromDir(folder, entryModule) {
  const files = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (!SKIP_DIRS.has(entry.name)) walk(full);
      } else if (entry.isFile() && !entry.name.endsWith(".pyc")) {
        files.push({ name: path.relative(folder, full).split(path.sep).join("/"), content: fs.readFileSync(full) });
      }
    }
  };
  walk(folder);
  if (!entryModule) {
    // The Python client's rule: `codec` when codec.py exists, else the only top-level .py file.
    const top = files.filter((f) => !f.name.includes("/") && f.name.endsWith(".py")).map((f) => f.name.slice(0, -3));
    entryModule = top.includes("codec") ? "codec" : top.length === 1 ? top[0] : "";
    if (!entryModule) throw new Error(`${folder}: cannot choose an entry module among [${top}]; pass --entry-module`);
  }
  return { name: path.basename(path.resolve(folder)), files, entry_module: entryModule };
}

// Decimal numbers only, as the Python CLI reads them: JavaScript's Number() also takes "0x10",
// "0b1", " 5 " and "" (0), which would send a number the user did not write.
const INT = /^[+-]?\d+$/;
const FLOAT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** "quality=50" -> ["quality", {int_value: "50"}]: decimal integers as int_value (a float_value
 * for an int parameter is converted only when integral), other finite decimal numbers
 * float_value, true/false bool, anything else (0x10, " 5", inf) the string itself.
 * Throws when there is no "NAME=". */
function parseParam(text) {
  const cut = text.indexOf("=");
  if (cut <= 0) throw new Error(`--param ${JSON.stringify(text)}: expected NAME=VALUE`);
  const [name, value] = [text.slice(0, cut), text.slice(cut + 1)];
  if (INT.test(value)) return [name, { int_value: value }];
  if (FLOAT.test(value) && Number.isFinite(Number(value))) return [name, { float_value: Number(value) }];
  if (value === "true" || value === "false") return [name, { bool_value: value === "true" }];
  return [name, { string_value: value }];
}

/** JSON.stringify writes Infinity and NaN as null; proto3's JSON mapping writes them as strings. */
function protoJson(value) {
  return JSON.stringify(value, (_key, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v));
}

function describeError(error) {
  const where = [error.kind.replace(/^ERROR_KIND_/, "")];
  if (error.location) where.push(`at ${error.location}`);
  if (error.phase) where.push(`in ${error.phase.replace(/^PHASE_/, "").toLowerCase()}`);
  const message = error.exception_type ? `${error.exception_type}: ${error.message}` : error.message;
  return `${where.join(" ")}: ${message}`;
}

function describeEvent(event) {
  switch (event.event) {
    case "state_change": return `${event.state_change.state.replace(/^EXPERIMENT_STATE_/, "")}: ${event.state_change.reason}`;
    case "progress": return `${event.progress.phase} point ${event.progress.point_index ?? 0} image ${event.progress.image_index ?? 0}`;
    case "log": return `log ${event.log.stream}: ${event.log.text}`;
    case "image_result": {
      const m = event.image_result.metrics;
      return `image ${event.image_result.image_name}: ${m.bytes} bytes, ${m.bpp.toFixed(4)} bpp, PSNR ${m.psnr_db} dB`;
    }
    case "error": return `FAILED ${describeError(event.error)}`;
    case "result": return `SUCCEEDED in ${event.result.wall_ms.toFixed(0)} ms`;
    default: return event.event;
  }
}

/** Follows an experiment from `afterSequence`; resolves with the terminal event (or the last one). */
function watch(client, metadata, experimentId, afterSequence, onEvent) {
  return new Promise((resolve, reject) => {
    let last = null;
    const call = client.WatchExperiment({ experiment_id: experimentId, after_sequence: String(afterSequence) }, metadata);
    call.on("data", (response) => { last = response.event; onEvent(last); });
    call.on("error", reject);
    call.on("end", () => resolve(last));
  });
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => client[method](request, metadata, (err, response) => (err ? reject(err) : resolve(response))));
}

function parseArgs(argv) {
  const options = { params: [], positional: [], json: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--json") options.json = true;
    else if (arg === "--param") options.params.push(argv[++i]);
    else if (arg.startsWith("--")) options[arg.slice(2).replace(/-/g, "_")] = argv[++i];
    else options.positional.push(arg);
  }
  return options;
}

async function main(argv) {
  const options = parseArgs(argv);
  const [command, target] = options.positional;
  const address = options.address || process.env.CODECBENCH_ADDRESS || "127.0.0.1:50051";
  const token = options.token_file ? fs.readFileSync(options.token_file, "utf8").trim() : process.env.CODECBENCH_TOKEN;
  if (!command || !target || !token) {
    console.error("usage: client.js run AGENT_DIR | watch EXPERIMENT_ID | get EXPERIMENT_ID  (token: $CODECBENCH_TOKEN or --token-file)");
    return 64;
  }
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const client = new v1.OrchestratorService(address, grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    "grpc.max_send_message_length": 256 * 1024 * 1024,
  });
  const print = (event) => console.log(`#${event.sequence} ${describeEvent(event)}`);
  try {
    if (command === "get") {
      const { experiment } = await unary(client, "GetExperiment", { experiment_id: target }, metadata);
      console.log(protoJson(experiment));
      return 0;
    }
    let experimentId = target;
    let after = Number(options.after || 0);
    if (command === "run") {
      const request = {
        agent: bundleFromDir(target, options.entry_module),
        dataset: options.dataset || "photos",
        points: options.params.length ? [{ params: Object.fromEntries(options.params.map(parseParam)) }] : [],
        // A repeat with the same key returns the same experiment: safe to send again after a lost answer.
        request_id: crypto.randomUUID(),
      };
      const { experiment } = await unary(client, "CreateExperiment", request, metadata);
      experimentId = experiment.experiment_id;
      console.log(`created ${experimentId}`);
    } else if (command !== "watch") {
      console.error(`unknown command ${command}`);
      return 64;
    }
    // Resume by sequence: a stream that breaks (UNAVAILABLE) is opened again after the last event seen.
    let terminal = null;
    for (let tries = 0; terminal === null; tries++) {
      try {
        const last = await watch(client, metadata, experimentId, after, (event) => { after = Number(event.sequence); print(event); });
        terminal = last && (last.event === "result" || last.event === "error") ? last : {};
      } catch (err) {
        if (err.code !== grpc.status.UNAVAILABLE || tries >= 5) throw err;
      }
    }
    if (terminal.event === "result") {
      for (const point of terminal.result.points) {
        const params = Object.entries(point.params?.params || {}).map(([k, v]) => `${k}=${v[v.kind]}`).join(",") || "(defaults)";
        console.log(`point ${params}: ${point.bpp.toFixed(4)} bpp, PSNR ${point.psnr_db} dB, MS-SSIM ${point.ms_ssim ?? "n/a"}, lossless ${Boolean(point.lossless)}`);
      }
    }
    if (options.json && terminal.event) console.log(protoJson({ experiment_id: experimentId, terminal }));
    return terminal.event === "error" ? 2 : 0;
  } catch (err) {
    if (err.code === undefined) throw err;
    console.log(`call failed: ${grpc.status[err.code]}: ${err.details}`);
    for (const detail of statusDetails(err)) console.log(`detail ${protoJson(detail)}`);
    return 1;
  } finally {
    client.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err) => { console.error(err); process.exitCode = 70; });
}

module.exports = { bundleFromDir, parseParam, protoJson, statusDetails };
