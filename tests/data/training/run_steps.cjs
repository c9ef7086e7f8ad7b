// Run a training-step model for several steps in onnxruntime-web (WebAssembly backend) under Node.
//
//   node run_steps.cjs STEP.onnx FEEDS.json OUT.json
//
// FEEDS.json: {"steps": [{name: tensor}, ...] (the batch of each step), "initial": {name: tensor}
// (parameters and optimizer state), "lr": {name: tensor}, "updates": {input: output}, "loss": name};
// a tensor is {"type": "float32" | "float64" | "int64", "dims": [...], "data": [...]}.
// OUT.json: {"losses": [...], "final": {input: tensor}}: each step's outputs are fed back as the
// next step's inputs, as onnxgrad.training.Trainer does.
"use strict";
const fs = require("fs");
const ort = require("onnxruntime-web");

const ARRAYS = { float32: Float32Array, float64: Float64Array };

function toTensor(t) {
  const data = t.type === "int64" ? BigInt64Array.from(t.data.map(BigInt)) : ARRAYS[t.type].from(t.data);
  return new ort.Tensor(t.type, data, t.dims);
}

function fromTensor(t) {
  const data = t.type === "int64" ? Array.from(t.data, Number) : Array.from(t.data);
  return { type: t.type, dims: Array.from(t.dims), data };
}

async function main() {
  const [modelPath, feedsPath, outPath] = process.argv.slice(2);
  ort.env.wasm.numThreads = 1;
  const spec = JSON.parse(fs.readFileSync(feedsPath, "utf8"));
  const session = await ort.InferenceSession.create(fs.readFileSync(modelPath), { executionProviders: ["wasm"] });
  let carried = {};
  for (const [name, t] of Object.entries(spec.initial)) carried[name] = toTensor(t);
  const lr = {};
  for (const [name, t] of Object.entries(spec.lr)) lr[name] = toTensor(t);
  const losses = [];
  for (const batch of spec.steps) {
    const feeds = { ...lr, ...carried };
    for (const [name, t] of Object.entries(batch)) feeds[name] = toTensor(t);
    const results = await session.run(feeds);
    losses.push(Number(results[spec.loss].data[0]));
    const next = {};
    for (const [input, output] of Object.entries(spec.updates)) next[input] = results[output];
    carried = next;
  }
  const final = {};
  for (const [name, t] of Object.entries(carried)) final[name] = fromTensor(t);
  fs.writeFileSync(outPath, JSON.stringify({ losses, final }));
}

main().catch((err) => {
  console.error(`run_steps: ${err && err.message ? err.message : err}`);
  process.exit(1);
});
