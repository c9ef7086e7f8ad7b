// Run an ONNX model once in onnxruntime-web (WebAssembly backend) under Node, for tools/portability.py.
//
//   node ort_web_run.cjs DIR
//
// DIR/model.onnx is the model; DIR/spec.json is {"feeds": {name: {"type", "dims", "file"}},
// "outputs": [name, ...]}, each feed's data the raw little-endian bytes of DIR/<file>
// (float32, int64 or bool). Writes each output's bytes to DIR/out<i>.bin and
// DIR/out.json = [{"type", "dims", "file"}, ...] in the order asked.
"use strict";
const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-web");

const ARRAYS = { float32: Float32Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array,
                 bool: Uint8Array };

async function main() {
  const dir = process.argv[2];
  ort.env.wasm.numThreads = 1;
  const spec = JSON.parse(fs.readFileSync(path.join(dir, "spec.json"), "utf8"));
  const session = await ort.InferenceSession.create(fs.readFileSync(path.join(dir, "model.onnx")),
                                                    { executionProviders: ["wasm"] });
  const feeds = {};
  for (const [name, t] of Object.entries(spec.feeds)) {
    const bytes = fs.readFileSync(path.join(dir, t.file));
    const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    feeds[name] = new ort.Tensor(t.type, new ARRAYS[t.type](copy), t.dims);
  }
  const results = await session.run(feeds, spec.outputs);
  const out = spec.outputs.map((name, i) => {
    const t = results[name];
    const file = `out${i}.bin`;
    fs.writeFileSync(path.join(dir, file), Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    return { type: t.type, dims: Array.from(t.dims), file };
  });
  fs.writeFileSync(path.join(dir, "out.json"), JSON.stringify(out));
}

main().catch((err) => {
  console.error(String(err && err.stack ? err.stack : err));
  process.exit(1);
});
