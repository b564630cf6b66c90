// onnxruntime-node on Linux runs Microsoft telemetry in every process that loads a model (a
// /tmp/mat-debug-<pid>.log, a device id and a SQLite file under ~/.cache/Microsoft/DeveloperTools,
// HTTPS uploads). A CI tool must not do that behind its users' backs: off unless the user set the
// variable (ORT_DISABLE_TELEMETRY=0 turns it back on). Worker threads and child processes inherit it.
// This module must be evaluated before onnxruntime-node is: ort.ts imports it first.
process.env.ORT_DISABLE_TELEMETRY ??= "1";
export {};
