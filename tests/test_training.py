"""Training steps (``onnxgrad.training``) against PyTorch's ``torch.optim``.

The references in ``tests/data/training/`` come from ``tools/make_training_reference.py``: 20
steps of each optimizer configuration with torch in float64, from the parameter values stored in
the ONNX files, a different batch each step. Here the same networks, converted to float64, are
trained by their step models and must land on the same losses and parameters to 1e-5 (measured:
1e-12 for the CNN, 1e-15 for the classifier, 7e-9 for the transformer, whose exported GELU and
attention-scale constants are float32 roundings of torch's float64 values). Every step model runs
in ``onnx.reference``; those onnxruntime has float64 kernels for (all but Conv and Softplus) run
there too and must agree.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxgrad import GradientArgumentError, ModelReadError
from onnxgrad.graph import GraphIndex
from onnxgrad.training import (Optimizer, Trainer, interface, load_state, save_state, save_trained,
                               select_params, training_step)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "training")
MODELS = {"resnet_cnn": os.path.join(ROOT, "models", "small_cnn.onnx"),
          "gpt_block": os.path.join(ROOT, "models", "transformer_block.onnx")}
#: the CNN's buffer ``u`` (its loss is sum(out * u)) is a float initializer but not a parameter
EXCLUDE = {"resnet_cnn": ["u"], "gpt_block": []}
TOL = 1e-5
STEPS = 20


def as_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network in float64: float initializers, Constant values, Casts to float and the
    graph's float inputs and outputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for node in m.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
            elif node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    del m.graph.value_info[:]
    return m


def step_kwargs(cfg: dict) -> dict:
    """A reference configuration as training_step arguments."""
    fields = {k: cfg[k] for k in ("momentum", "dampening", "nesterov", "eps", "amsgrad") if k in cfg}
    if "betas" in cfg:
        fields["betas"] = tuple(cfg["betas"])
    opt = Optimizer(cfg["optimizer"], weight_decay=cfg.get("weight_decay"), **fields)
    kwargs = {"optimizer": opt, "lr": cfg["lr"], "clip_grad_norm": cfg.get("clip_grad_norm")}
    if "loss_fn" in cfg:
        kwargs.update(loss_fn=cfg["loss_fn"], target=cfg["target"])
    if "ignore_index" in cfg:
        kwargs["ignore_index"] = cfg["ignore_index"]
    return kwargs


def batches(ref, prefix: str = "") -> List[Dict[str, np.ndarray]]:
    out: List[Dict[str, np.ndarray]] = [{} for _ in range(STEPS)]
    for key in ref.files:
        if key.startswith(prefix + "batch/"):
            k, name = key[len(prefix + "batch/"):].split("/", 1)
            value = ref[key]
            out[int(k)][name] = value.astype(np.float64) if value.dtype == np.float32 else value
    return out


def run_reference(step, feeds: List[Dict[str, np.ndarray]], lr: float):
    """Train with onnx.reference, carrying each step's outputs to the next step's inputs by hand."""
    evaluator = ReferenceEvaluator(step.model)
    values = dict(step.initial_state)
    carried = list(step.updates)
    outputs = [step.loss] + [step.updates[n] for n in carried]
    losses = []
    for batch in feeds:
        loss, *new = evaluator.run(outputs, {**batch, **values, step.lr: np.asarray(lr, np.float64)})
        losses.append(float(loss))
        values = dict(zip(carried, new))
    return np.array(losses), values


def run_onnxruntime(step, feeds: List[Dict[str, np.ndarray]], lr: float):
    trainer = Trainer(step.model, step.initial_state)
    losses = [trainer.step(batch, lr=lr) for batch in feeds]
    return np.array(losses), trainer.state()


def assert_matches(ref, prefix: str, losses: np.ndarray, values: Dict[str, np.ndarray], params: List[str]) -> float:
    np.testing.assert_allclose(losses, ref[f"{prefix}/loss"], rtol=TOL, atol=TOL)
    worst = float(np.max(np.abs(losses - ref[f"{prefix}/loss"])))
    expected_params = sorted(k[len(f"{prefix}/param/"):] for k in ref.files if k.startswith(f"{prefix}/param/"))
    assert sorted(params) == expected_params
    for p in params:
        expected = ref[f"{prefix}/param/{p}"]
        np.testing.assert_allclose(values[p], expected, rtol=TOL, atol=TOL, err_msg=f"{prefix}: {p}")
        worst = max(worst, float(np.max(np.abs(values[p] - expected))))
    return worst


def _configs(name: str) -> List[str]:
    with np.load(os.path.join(DATA, f"{name}.npz")) as ref:
        return list(json.loads(str(ref["configs"])))


# ------------------------------------------------------------------------------------ trajectories
@pytest.mark.parametrize("config", _configs("resnet_cnn"))
@pytest.mark.parametrize("name", ["resnet_cnn", "gpt_block"])
def test_trajectory_matches_torch(name, config):
    ref = np.load(os.path.join(DATA, f"{name}.npz"))
    cfg = json.loads(str(ref["configs"]))[config]
    step = training_step(as_float64(onnx.load(MODELS[name])), loss="loss", exclude=EXCLUDE[name], **step_kwargs(cfg))
    onnx.checker.check_model(step.model, full_check=True)
    assert {d.domain for d in step.model.opset_import} == {""}
    assert all(n.domain == "" for n in step.model.graph.node)
    feeds = batches(ref)
    losses, values = run_reference(step, feeds, cfg["lr"])
    worst = assert_matches(ref, config, losses, values, step.params)
    if name == "gpt_block":  # onnxruntime has float64 kernels for all of it: same numbers there
        ort_losses, ort_values = run_onnxruntime(step, feeds, cfg["lr"])
        worst = max(worst, assert_matches(ref, config, ort_losses, ort_values, step.params))
        for n in step.updates:
            np.testing.assert_allclose(ort_values[n], values[n], rtol=1e-7, atol=1e-10, err_msg=n)
    print(f"\n{name}/{config}: worst |onnxgrad - torch| over losses and parameters {worst:.1e}")


@pytest.mark.parametrize("loss_fn", _configs("mlp_logits"))
def test_loss_builders_match_torch(loss_fn):
    """Each loss builder on a classifier ending in logits, batch sizes varying (symbolic N); one
    cross-entropy run has a quarter of its targets at torch's ignore_index, -100."""
    ref = np.load(os.path.join(DATA, "mlp_logits.npz"))
    cfg = json.loads(str(ref["configs"]))[loss_fn]
    model = as_float64(onnx.load(os.path.join(DATA, "mlp_logits.onnx")))
    step = training_step(model, **step_kwargs(cfg))
    onnx.checker.check_model(step.model, full_check=True)
    inputs = {i.name: i for i in step.model.graph.input}
    assert inputs["x"].type.tensor_type.shape.dim[0].dim_param == "N"
    assert inputs["target"].type.tensor_type.shape.dim[0].dim_param == "N"
    feeds = batches(ref, f"{loss_fn}/")
    assert len({b["x"].shape[0] for b in feeds}) > 1
    losses, values = run_reference(step, feeds, cfg["lr"])
    worst = assert_matches(ref, loss_fn, losses, values, step.params)
    if loss_fn != "bce_with_logits":  # onnxruntime has no float64 Softplus
        ort_losses, ort_values = run_onnxruntime(step, feeds, cfg["lr"])
        worst = max(worst, assert_matches(ref, loss_fn, ort_losses, ort_values, step.params))
    print(f"\nmlp_logits/{loss_fn}: worst |onnxgrad - torch| {worst:.1e}")


def test_float32_step_same_in_onnxruntime_and_reference():
    """The float32 step model (as shipped) gives the same numbers in both runtimes."""
    ref = np.load(os.path.join(DATA, "mlp_logits.npz"))
    step = training_step(os.path.join(DATA, "mlp_logits.onnx"), loss_fn="bce_with_logits", optimizer="adamw",
                         lr=0.02, clip_grad_norm=1.0)
    feeds = [{k: v.astype(np.float32) for k, v in b.items()} for b in batches(ref, "bce_with_logits/")][:5]
    trainer = Trainer(step.model, step.initial_state)
    evaluator = ReferenceEvaluator(step.model)
    values = dict(step.initial_state)
    carried = list(step.updates)
    for batch in feeds:
        loss = trainer.step(batch)
        ref_loss, *new = evaluator.run([step.loss] + [step.updates[n] for n in carried],
                                       {**batch, **values, step.lr: np.array(0.02, np.float32)})
        values = dict(zip(carried, new))
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    state = trainer.state()
    for n in carried:
        np.testing.assert_allclose(state[n], values[n], rtol=1e-4, atol=1e-6, err_msg=n)


def test_trainer_keeps_values_on_device_between_steps():
    """The IO-bound loop gives what plain session.run with numpy round trips gives."""
    ref = np.load(os.path.join(DATA, "mlp_logits.npz"))
    step = training_step(os.path.join(DATA, "mlp_logits.onnx"), loss_fn="cross_entropy", optimizer="momentum",
                         lr=0.1, weight_decay=1e-3)
    feeds = [{k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in b.items()}
             for b in batches(ref, "cross_entropy/")]
    trainer = Trainer(step.model, step.initial_state)
    assert all(isinstance(v, ort.OrtValue) for v in trainer.values.values())
    sess = ort.InferenceSession(step.model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(step.initial_state)
    carried = list(step.updates)
    for batch in feeds:
        loss = trainer.step(batch)
        expected, *new = sess.run([step.loss] + [step.updates[n] for n in carried],
                                  {**batch, **values, step.lr: np.array(0.1, np.float32)})
        values = dict(zip(carried, new))
        assert loss == float(expected)
    for n, v in trainer.state().items():
        np.testing.assert_array_equal(v, values[n], err_msg=n)
    assert int(trainer.state()[step.state[0]]) == STEPS


# ------------------------------------------------------------------------------------ the model
def test_interface_batchnorm_statistics_and_frozen_params_stay_constants():
    step = training_step(MODELS["resnet_cnn"], exclude=["u", "fc.*"], optimizer="adam")
    inputs = [i.name for i in step.model.graph.input]
    inits = {t.name for t in step.model.graph.initializer}
    assert step.batch == ["x"]
    assert "bn1.running_mean" in inits and "bn1.running_var" in inits and "u" in inits
    assert {"fc.weight", "fc.bias"} <= inits
    assert "conv1.weight" in inputs and "conv1.weight" not in inits
    assert "bn1.weight" in step.params and "bn1.running_mean" not in step.params
    assert inputs == ["x"] + step.params + step.state + [step.lr]
    assert [o.name for o in step.model.graph.output] == [step.loss] + [step.updates[n] for n in step.updates]
    assert step.state[0] == "optimizer/step"
    assert step.state[1:3] == ["optimizer/exp_avg/conv1.weight", "optimizer/exp_avg_sq/conv1.weight"]
    assert interface(step.model)["updates"] == step.updates
    assert set(step.initial_state) == set(step.updates)
    assert float(np.abs(step.initial_state["optimizer/exp_avg/conv1.weight"]).max()) == 0.0


def test_keep_outputs_and_default_loss():
    step = training_step(os.path.join(DATA, "mlp_logits.onnx"), loss_fn="mse", keep_outputs=True)
    assert [o.name for o in step.model.graph.output][:2] == [step.loss, "logits"]
    step = training_step(MODELS["gpt_block"])  # the only scalar float output is the loss
    assert step.loss == "loss"


OPSET_CASES = [("cross_entropy", Optimizer("momentum", dampening=0.3, weight_decay=0.01), None),
               ("mse", Optimizer("adam"), 0.5),
               ("bce_with_logits", Optimizer("momentum", nesterov=True), None),
               ("l1", Optimizer("adamw"), 0.5),
               ("cross_entropy", Optimizer("sgd", weight_decay=0.01), 0.5)]


@pytest.mark.parametrize("loss_fn, opt, clip", OPSET_CASES, ids=[f"{c[0]}-{c[1].name}" for c in OPSET_CASES])
@pytest.mark.parametrize("opset", [9, 11, 13, 18])
def test_every_opset(opset, loss_fn, opt, clip):
    """Loss builders and optimizers use each opset's signatures (ReduceSum axes, Squeeze,
    OneHot before GatherElements...): two steps at ``opset`` give what they give at opset 17, whose
    numbers the torch trajectories prove; one cross-entropy target is ignored."""
    rng = np.random.default_rng(opset)
    w = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["logits"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], [w, b])
    target = np.array([0, 3, -100, 2, 3], np.int64) if loss_fn == "cross_entropy" else \
        rng.uniform(0, 1, (5, 4)).astype(np.float32)
    feeds = {"x": rng.standard_normal((5, 3)).astype(np.float32), "target": target}
    results = []
    for version in (opset, 17):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", version)])
        step = training_step(model, loss_fn=loss_fn, optimizer=opt, clip_grad_norm=clip)
        onnx.checker.check_model(step.model, full_check=True)
        assert {d.version for d in step.model.opset_import if d.domain == ""} == {version}
        sess = ort.InferenceSession(step.model.SerializeToString(), providers=["CPUExecutionProvider"])
        values, runs = dict(step.initial_state), []
        for _ in range(2):
            outs = sess.run(None, {**feeds, **values, step.lr: np.array(0.1, np.float32)})
            values = dict(zip(step.updates, outs[1:]))
            runs.extend(outs)
        results.append(runs)
    if loss_fn == "cross_entropy":
        logits = feeds["x"] @ numpy_helper.to_array(w) + numpy_helper.to_array(b)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        kept = target != -100
        np.testing.assert_allclose(results[0][0], -log_p[np.arange(5)[kept], target[kept]].mean(), rtol=1e-5)
    for got, want in zip(results[0], results[1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------ state files
def test_state_round_trip_and_save_trained(tmp_path):
    step = training_step(MODELS["gpt_block"], optimizer="adamw", lr=0.01)
    save_state(str(tmp_path / "state.npz"), step.initial_state)
    state = load_state(str(tmp_path / "state.npz"))
    assert list(state) == list(step.initial_state)
    for k, v in step.initial_state.items():
        assert state[k].dtype == v.dtype and state[k].shape == v.shape
        np.testing.assert_array_equal(state[k], v)
    trainer = Trainer(step.model, state)
    idx = np.random.default_rng(0).integers(0, 11, (2, 6)).astype(np.int64)
    first = [trainer.step({"idx": idx}) for _ in range(5)]
    assert first[-1] < first[0]
    out = tmp_path / "trained.onnx"
    trained = save_trained(MODELS["gpt_block"], trainer.state(), str(out))
    onnx.checker.check_model(str(out), full_check=True)
    assert [o.name for o in trained.graph.output] == ["loss"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (loss,) = sess.run(["loss"], {"idx": idx})
    # the trained model's loss is the loss a sixth step starts from
    np.testing.assert_allclose(loss, trainer.step({"idx": idx}), rtol=1e-6)


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, message", [
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
    ({"optimizer": Optimizer("momentum", nesterov=True, dampening=0.5)}, "nesterov needs"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"clip_grad_norm": 0.0}, "clip_grad_norm must be positive"),
    ({"params": ["nope"]}, "parameter 'nope' is not an initializer"),
    ({"params": ["pos"]}, "'pos' is an initializer that is not float"),
    ({"params": ["zz*"]}, "matches no trainable float initializer"),
    ({"exclude": ["*"]}, "no parameter to train"),
    ({"loss": "loss", "loss_fn": "mse"}, "give either loss"),
    ({"loss_fn": "hinge"}, "unknown loss function 'hinge'"),
    ({"loss": "nope"}, "loss 'nope' is not a tensor"),
])
def test_errors(kwargs, message):
    with pytest.raises(GradientArgumentError, match=message.replace("(", r"\(")):
        training_step(MODELS["gpt_block"], **kwargs)


def test_errors_on_losses_that_cannot_be_built():
    logits = os.path.join(DATA, "mlp_logits.onnx")
    with pytest.raises(GradientArgumentError, match="not a scalar"):
        training_step(logits, loss="logits")
    with pytest.raises(GradientArgumentError, match="target 'x' must be int64 for cross_entropy"):
        training_step(logits, loss_fn="cross_entropy", target="x")
    model = onnx.load(MODELS["resnet_cnn"])
    model.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "unused"))
    with pytest.raises(GradientArgumentError, match="does not depend on parameter 'unused'"):
        training_step(model, params=["conv1.weight", "unused"])
    # a selector (not a name) skips what the loss does not depend on: it stays a constant
    assert "unused" not in training_step(model, exclude=["u"]).params


def test_select_params_default_skips_batchnorm_statistics():
    names, exact = select_params(GraphIndex(onnx.load(MODELS["resnet_cnn"])))
    assert "u" in names and not any("running" in n for n in names) and exact == set()
    names, exact = select_params(GraphIndex(onnx.load(MODELS["resnet_cnn"])), ["bn1.*", "fc.weight"], ["*.bias"])
    assert names == ["bn1.weight", "fc.weight"] and exact == {"fc.weight"}


# ------------------------------------------------------------------------------------ command line
def _cli(args: List[str]):
    from click.testing import CliRunner

    from onnxgrad.cli import cli

    return CliRunner().invoke(cli, args)


def test_cli_writes_step_model_and_state(tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(open(os.path.join(DATA, "mlp_logits.onnx"), "rb").read())
    res = _cli(["train-step", str(model), "--loss-fn", "cross_entropy", "--target", "labels",
                "--optimizer", "adamw", "--lr", "0.05", "--weight-decay", "0.1", "--betas", "0.8,0.9",
                "--clip-grad-norm", "2", "--exclude", "fc1.bias"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "fc1.weight" in res.output
    step_model = onnx.load(str(tmp_path / "net.train.onnx"))
    onnx.checker.check_model(step_model, full_check=True)
    meta = interface(step_model)
    assert meta["optimizer"] == "adamw" and meta["params"] == ["fc1.weight", "fc2.weight", "fc2.bias"]
    assert meta["hyperparameters"]["betas"] == [0.8, 0.9] and meta["hyperparameters"]["weight_decay"] == 0.1
    assert "fc1.bias" in {t.name for t in step_model.graph.initializer}
    state = load_state(str(tmp_path / "net.train.npz"))
    # the command's model is the API's model with the same arguments
    api = training_step(str(model), loss_fn="cross_entropy", target="labels", lr=0.05, exclude="fc1.bias",
                        optimizer=Optimizer("adamw", weight_decay=0.1, betas=(0.8, 0.9)), clip_grad_norm=2.0)
    feeds = {"x": np.ones((2, 8), np.float32), "labels": np.array([1, 3], np.int64)}
    trainer_cli, trainer_api = Trainer(step_model, state), Trainer(api.model, api.initial_state)
    for _ in range(3):
        assert trainer_cli.step(feeds) == trainer_api.step(feeds)


@pytest.mark.parametrize("args, code, message", [
    (["--loss", "logits", "--loss-fn", "mse"], 2, "give either --loss"),
    (["--target", "y"], 2, "--target names the target input of --loss-fn"),
    (["--loss-fn", "hinge"], 2, "Invalid value for '--loss-fn'"),
    (["--loss-fn", "mse", "--params", "nope"], 2, "parameter 'nope' is not an initializer"),
    (["--loss", "logits"], 2, "not a scalar"),
    (["--loss-fn", "mse", "--lr", "0"], 2, "Invalid value for '--lr'"),
    (["--loss-fn", "mse", "--betas", "0.9"], 2, "expected two numbers"),
    (["--loss-fn", "mse", "-o", "/nonexistent/step.onnx"], 6, "output folder does not exist"),
])
def test_cli_errors_are_one_line(tmp_path, args, code, message):
    model = tmp_path / "net.onnx"
    model.write_bytes(open(os.path.join(DATA, "mlp_logits.onnx"), "rb").read())
    res = _cli(["train-step", str(model), *args])
    assert res.exit_code == code, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxgrad: error: ") and message in lines[0], res.output
    assert sorted(os.listdir(tmp_path)) == ["net.onnx"]  # nothing written


def test_cli_unreadable_model_and_overwrite(tmp_path):
    res = _cli(["train-step", str(tmp_path / "missing.onnx")])
    assert res.exit_code == 3 and "model file not found" in res.output
    model = tmp_path / "net.onnx"
    model.write_bytes(open(MODELS["gpt_block"], "rb").read())
    res = _cli(["train-step", str(model), "-o", str(model)])
    assert res.exit_code == 6 and "refusing to overwrite the input model" in res.output


def test_external_data_weights(tmp_path):
    """Weights stored outside the .onnx file: the initial state reads them, the step model keeps
    referencing the frozen ones, and the trained model is written whole."""
    model = onnx.load(MODELS["resnet_cnn"])
    expected = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    onnx.save(model, str(tmp_path / "cnn.onnx"), save_as_external_data=True, location="cnn.weights",
              size_threshold=0)
    res = _cli(["train-step", str(tmp_path / "cnn.onnx"), "--exclude", "u,fc.*", "--optimizer", "adam"])
    assert res.exit_code == 0, res.output
    state = load_state(str(tmp_path / "cnn.train.npz"))
    np.testing.assert_array_equal(state["conv1.weight"], expected["conv1.weight"])
    step_model = onnx.load(str(tmp_path / "cnn.train.onnx"))  # loads cnn.weights for fc.*, u, BN stats
    frozen = {t.name: numpy_helper.to_array(t) for t in step_model.graph.initializer}
    np.testing.assert_array_equal(frozen["fc.weight"], expected["fc.weight"])
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    trainer = Trainer(step_model, state)
    trainer.step({"x": x})
    save_trained(str(tmp_path / "cnn.onnx"), trainer.state(), str(tmp_path / "cnn.trained.onnx"))
    trained_model = onnx.load(str(tmp_path / "cnn.trained.onnx"))
    trained = {t.name: numpy_helper.to_array(t) for t in trained_model.graph.initializer}
    np.testing.assert_array_equal(trained["conv1.weight"], trainer.state()["conv1.weight"])
    assert not np.array_equal(trained["conv1.weight"], expected["conv1.weight"])
    np.testing.assert_array_equal(trained["fc.weight"], expected["fc.weight"])


def test_example_classifier_learns():
    """examples/finetune_classifier.py's network and data: the loss falls within 60 steps."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune", os.path.join(ROOT, "examples", "finetune_classifier.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rng = np.random.default_rng(1)
    losses, trainer = example.train_onnx(example.build_classifier(), [example.make_batch(rng, 32) for _ in range(60)])
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses
    assert "conv1.weight" not in trainer.state()  # frozen: a constant of the step model


# ------------------------------------------------------------------------------------ onnxruntime-web
def _node_with_onnxruntime_web() -> Dict[str, str]:
    """The environment in which ``node`` finds onnxruntime-web, or a pytest skip saying what is missing.

    The package is looked up as Node does (node_modules folders above tests/data/training/) and in
    ``$ONNXGRAD_NODE_MODULES`` (a node_modules folder, e.g. after ``npm install --prefix DIR
    onnxruntime-web``)."""
    import shutil
    import subprocess

    if shutil.which("node") is None:
        pytest.skip("node is not installed (the onnxruntime-web test needs Node.js 20 and the npm package "
                    "onnxruntime-web)")
    env = dict(os.environ)
    extra = os.environ.get("ONNXGRAD_NODE_MODULES")
    if extra:
        env["NODE_PATH"] = os.pathsep.join(p for p in (extra, env.get("NODE_PATH")) if p)
    found = subprocess.run(["node", "-e", "require.resolve('onnxruntime-web')"], cwd=DATA, env=env,
                           capture_output=True, timeout=60)
    if found.returncode != 0:
        pytest.skip("the npm package onnxruntime-web is not installed: npm install --prefix DIR onnxruntime-web, "
                    "then set ONNXGRAD_NODE_MODULES=DIR/node_modules")
    return env


def _tensor_json(a: np.ndarray) -> dict:
    kind = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64", np.dtype(np.int64): "int64"}[a.dtype]
    return {"type": kind, "dims": list(a.shape), "data": np.asarray(a).ravel().tolist()}


@pytest.mark.parametrize("config", ["nesterov", "adamw"])
def test_onnxruntime_web_matches_torch(tmp_path, config):
    """The float64 transformer step model, unchanged, in onnxruntime-web's WebAssembly backend under
    Node.js (tests/data/training/run_steps.cjs carries the state between steps): PyTorch's numbers."""
    import subprocess

    env = _node_with_onnxruntime_web()
    ref = np.load(os.path.join(DATA, "gpt_block.npz"))
    cfg = json.loads(str(ref["configs"]))[config]
    step = training_step(as_float64(onnx.load(MODELS["gpt_block"])), **step_kwargs(cfg))
    spec = {"steps": [{k: _tensor_json(v) for k, v in b.items()} for b in batches(ref)],
            "initial": {k: _tensor_json(v) for k, v in step.initial_state.items()},
            "lr": {step.lr: _tensor_json(np.asarray(cfg["lr"], np.float64))},
            "updates": step.updates, "loss": step.loss}
    onnx.save(step.model, str(tmp_path / "step.onnx"))
    (tmp_path / "feeds.json").write_text(json.dumps(spec))
    run = subprocess.run(["node", os.path.join(DATA, "run_steps.cjs"), str(tmp_path / "step.onnx"),
                          str(tmp_path / "feeds.json"), str(tmp_path / "out.json")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    final = {k: np.array(v["data"], np.float64).reshape(v["dims"]) for k, v in out["final"].items()}
    worst = assert_matches(ref, config, np.array(out["losses"]), final, step.params)
    print(f"\nonnxruntime-web gpt_block/{config}: worst |onnxgrad - torch| {worst:.1e}")


# ------------------------------------------------------------------------------------ mixed precision
def as_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The classifier with float16 weights, inputs and outputs (it has no Constant or Cast)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    return m


@pytest.mark.parametrize("loss_fn", ["cross_entropy", "mse"])
def test_mixed_precision_float16_tracks_torch(loss_fn, tmp_path):
    """float16 weights trained through float32 master weights and moments (loss scaled by 256):
    the 20-step trajectory stays within float16's resolution of torch's float64 one (measured
    1.4e-3 relative; a float16-only update drifts to 1.4e-2)."""
    ref = np.load(os.path.join(DATA, "mlp_logits.npz"))
    cfg = json.loads(str(ref["configs"]))[loss_fn]
    model = as_float16(onnx.load(os.path.join(DATA, "mlp_logits.onnx")))
    step = training_step(model, mixed_precision=True, loss_scale=256.0, **step_kwargs(cfg))
    onnx.checker.check_model(step.model, full_check=True)
    types = {i.name: i.type.tensor_type.elem_type for i in step.model.graph.input}
    assert types["x"] == TensorProto.FLOAT16 and types[step.lr] == TensorProto.FLOAT
    assert all(types[n] == TensorProto.FLOAT for n in step.params + step.state[1:])
    trainer = Trainer(step.model, step.initial_state)
    feeds = [{k: v.astype(np.float16) if v.dtype == np.float64 else v for k, v in b.items()}
             for b in batches(ref, f"{loss_fn}/")]
    losses = np.array([trainer.step(b) for b in feeds])
    np.testing.assert_allclose(losses, ref[f"{loss_fn}/loss"], rtol=5e-3)
    state = trainer.state()
    for p in step.params:
        expected = ref[f"{loss_fn}/param/{p}"]
        assert np.max(np.abs(state[p] - expected)) <= 5e-3 * np.max(np.abs(expected)), p
    out = tmp_path / "trained.onnx"
    save_trained(model, state, str(out))
    trained = {t.name: t for t in onnx.load(str(out)).graph.initializer}
    assert trained["fc1.weight"].data_type == TensorProto.FLOAT16
    np.testing.assert_array_equal(numpy_helper.to_array(trained["fc1.weight"]), state["fc1.weight"].astype(np.float16))


def test_mixed_precision_zero_gradient_stays_finite():
    """A parameter whose gradient is exactly 0: Adam's eps (1e-8, 0 in float16) keeps the float32
    update at 0/eps = 0 instead of 0/0."""
    model = as_float16(onnx.load(os.path.join(DATA, "mlp_logits.onnx")))
    model.graph.initializer.append(numpy_helper.from_array(np.ones(4, np.float16), "dead"))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.float16), "zero"))
    logits = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{o}/raw" if o == logits else o for o in node.output]
    model.graph.node.extend([helper.make_node("Mul", ["dead", "zero"], ["off"]),
                             helper.make_node("Add", [f"{logits}/raw", "off"], [logits])])
    step = training_step(model, loss_fn="mse", optimizer="adam", mixed_precision=True, exclude="zero")
    trainer = Trainer(step.model, step.initial_state)
    rng = np.random.default_rng(0)
    for _ in range(3):
        trainer.step({"x": rng.standard_normal((3, 8)).astype(np.float16),
                      "target": rng.standard_normal((3, 4)).astype(np.float16)})
    state = trainer.state()
    assert all(np.all(np.isfinite(v)) for v in state.values())
    np.testing.assert_array_equal(state["dead"], np.ones(4, np.float32))


def test_state_as_onnx_model(tmp_path):
    """A state file any ONNX runtime reads: run it with no inputs, get every tensor by name."""
    res = _cli(["train-step", MODELS["gpt_block"], "--optimizer", "adam", "-o", str(tmp_path / "step.onnx"),
                "--state", str(tmp_path / "state.onnx")])
    assert res.exit_code == 0, res.output
    onnx.checker.check_model(str(tmp_path / "state.onnx"), full_check=True)
    state = load_state(str(tmp_path / "state.onnx"))
    step = training_step(MODELS["gpt_block"], optimizer="adam")
    assert list(state) == list(step.initial_state)
    sess = ort.InferenceSession(str(tmp_path / "state.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for name, value in zip(names, sess.run(None, {})):
        assert value.dtype == step.initial_state[name].dtype
        np.testing.assert_array_equal(value, step.initial_state[name])
        np.testing.assert_array_equal(state[name], step.initial_state[name])
    with pytest.raises(ModelReadError, match="cannot read state file"):
        load_state(str(tmp_path / "missing.onnx"))


def test_initializers_listed_as_inputs():
    """Old exporters list every initializer among the graph inputs too: trained ones become plain
    inputs, frozen ones keep their default and are not part of the batch."""
    model = onnx.load(MODELS["resnet_cnn"])
    known = {i.name for i in model.graph.input}
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in model.graph.initializer if t.name not in known)
    step = training_step(model, exclude="u", optimizer="momentum")
    onnx.checker.check_model(step.model, full_check=True)
    assert step.batch == ["x"]
    names = [i.name for i in step.model.graph.input]
    assert len(names) == len(set(names)) and "bn1.running_mean" in names and "conv1.weight" in names
    inits = {t.name for t in step.model.graph.initializer}
    assert "bn1.running_mean" in inits and "conv1.weight" not in inits
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    trainer = Trainer(step.model, step.initial_state)
    assert np.isfinite(trainer.step({"x": x}))


def test_readme_two_commands(tmp_path, monkeypatch):
    """The README's "Train anywhere" path, as written: train-step, then its train.py loop."""
    import re
    import shutil

    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Train anywhere"):]
    command = re.search(r"```sh\n(onnxgrad train-step [^\n]+)\npython train.py\n```", section).group(1)
    script = re.search(r"`train.py` is your loop:\n\n```python\n(.*?)```", section, re.S).group(1)
    args = command.split()[1:]
    shutil.copy(os.path.join(ROOT, args[1]), tmp_path / os.path.basename(args[1]))
    monkeypatch.chdir(tmp_path)
    res = _cli([args[0], os.path.basename(args[1]), *args[2:]])
    assert res.exit_code == 0, res.output
    namespace: dict = {}
    exec(compile(script, "README.md", "exec"), namespace)
    trained = onnx.load(str(tmp_path / "transformer_block.trained.onnx"))
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(MODELS["gpt_block"]).graph.initializer}
    changed = [t.name for t in trained.graph.initializer
               if not np.array_equal(numpy_helper.to_array(t), original[t.name])]
    assert set(changed) == set(namespace["trainer"].meta["params"])


def test_mixed_precision_bfloat16_in_reference():
    """bfloat16 weights through float32 master weights, in onnx.reference (onnxruntime's CPU has no
    bfloat16 Gemm): the trajectory stays within bfloat16's 8-bit resolution of torch's (measured
    relative errors 1.5e-2 on the losses, whose bfloat16 forward pass rounds to 2^-8, and 3.2e-3 on
    the float32 master weights)."""
    import ml_dtypes

    ref = np.load(os.path.join(DATA, "mlp_logits.npz"))
    cfg = json.loads(str(ref["configs"]))["mse"]
    model = onnx.load(os.path.join(DATA, "mlp_logits.onnx"))
    for t in model.graph.initializer:
        t.CopyFrom(helper.make_tensor(t.name, TensorProto.BFLOAT16, list(t.dims),
                                      numpy_helper.to_array(t).ravel().tolist()))
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.BFLOAT16
    step = training_step(model, mixed_precision=True, **step_kwargs(cfg))
    onnx.checker.check_model(step.model, full_check=True)
    evaluator = ReferenceEvaluator(step.model)
    values, losses = dict(step.initial_state), []
    for batch in batches(ref, "mse/"):
        feeds = {k: v.astype(ml_dtypes.bfloat16) for k, v in batch.items()}
        loss, *new = evaluator.run([step.loss] + list(step.updates.values()),
                                   {**feeds, **values, step.lr: np.asarray(cfg["lr"], np.float32)})
        losses.append(float(loss))
        values = dict(zip(step.updates, new))
    np.testing.assert_allclose(losses, ref["mse/loss"], rtol=5e-2)
    for p in step.params:
        assert values[p].dtype == np.float32
        expected = ref[f"mse/param/{p}"]
        assert np.max(np.abs(values[p] - expected)) <= 1e-2 * np.max(np.abs(expected)), p


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "shufflenet"])
def test_light_zoo_networks_train(name):
    """Real architectures from ONNX's light zoo (tests/zoo.py): every weight trained with AdamW and
    clipping through an MSE head; the full check passes and three steps on one batch lower the loss."""
    import zoo

    model, feed, weights = zoo.load(name)
    step = training_step(model, loss_fn="mse", params=weights, optimizer="adamw", clip_grad_norm=1.0)
    onnx.checker.check_model(step.model, full_check=True)
    assert sorted(step.params) == sorted(set(weights))
    prediction = model.graph.output[0].type.tensor_type.shape.dim
    target = np.zeros([d.dim_value for d in prediction], np.float32)
    trainer = Trainer(step.model, step.initial_state)
    losses = [trainer.step({**feed, "target": target}) for _ in range(3)]
    assert losses[2] < losses[1] < losses[0], losses


def test_cli_no_gradient_rule_exit_5(tmp_path):
    w = numpy_helper.from_array(np.ones((3, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mystery", ["h"], ["y"], domain="my.ops")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    onnx.save(model, str(tmp_path / "net.onnx"))
    res = _cli(["train-step", str(tmp_path / "net.onnx"), "--loss-fn", "mse"])
    assert res.exit_code == 5, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxgrad: error: ") and "Mystery" in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["net.onnx"]


def test_package_level_api():
    import onnxgrad

    assert onnxgrad.training_step is training_step
