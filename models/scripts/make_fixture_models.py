"""Write the small ONNX fixtures the Rust tests load (`tests/fixtures/`).

`age_fixture.onnx` follows the age-model contract of models/README.md (input `image`
[N,3,32,32] RGB 0..255; outputs `age` [N], `sigma` [N], `steps` [N,2]) with a tiny
deterministic network: global average colour -> 3 linear units -> a first age, a bounded
correction and a softplus sigma. It is not an age estimator; it lets the runtime be tested
before (and independently of) the trained model. The other files each break the contract in
one way, for the bad-input tests.

Run: python models/scripts/make_fixture_models.py   (needs onnx and numpy only)
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
SIZE = 32


def age_graph(
    input_name: str = "image",
    size: int = SIZE,
    channels: int = 3,
    outputs=("age", "sigma", "steps"),
) -> onnx.ModelProto:
    rng = np.random.default_rng(20261127)
    w = rng.normal(0.0, 2.0, (3, 3)).astype(np.float32)
    b = np.array([0.0, -0.5, 0.0], np.float32)
    inits = [
        numpy_helper.from_array(np.array(1.0 / 255.0, np.float32), "inv255"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array([0], np.int64), "i0"),
        numpy_helper.from_array(np.array([1], np.int64), "i1"),
        numpy_helper.from_array(np.array([2], np.int64), "i2"),
        numpy_helper.from_array(np.array([3], np.int64), "i3"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(60.0, np.float32), "span"),
        numpy_helper.from_array(np.array(10.0, np.float32), "base"),
        numpy_helper.from_array(np.array(5.0, np.float32), "corr"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
    ]
    # Only the first three channels feed the network, so a 1- or 4-channel variant can be
    # built for the contract tests from the same graph.
    nodes = [
        helper.make_node("Mul", [input_name, "inv255"], ["scaled"]),
        helper.make_node("GlobalAveragePool", ["scaled"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["h_all"], axis=1),
        helper.make_node("Slice", ["h_all", "i0", "i3", "axis1"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["zw"]),
        helper.make_node("Add", ["zw", "b"], ["z"]),
        helper.make_node("Slice", ["z", "i0", "i1", "axis1"], ["z0"]),
        helper.make_node("Slice", ["z", "i1", "i2", "axis1"], ["z1"]),
        helper.make_node("Slice", ["z", "i2", "i3", "axis1"], ["z2"]),
        helper.make_node("Sigmoid", ["z0"], ["s0"]),
        helper.make_node("Mul", ["s0", "span"], ["s0span"]),
        helper.make_node("Add", ["s0span", "base"], ["age0"]),
        helper.make_node("Tanh", ["z2"], ["t2"]),
        helper.make_node("Mul", ["t2", "corr"], ["delta"]),
        helper.make_node("Add", ["age0", "delta"], ["age1"]),
        helper.make_node("Softplus", ["z1"], ["sp"]),
        helper.make_node("Add", ["sp", "one"], ["sigma1"]),
        helper.make_node("Concat", ["age0", "age1"], [outputs[2]], axis=1),
        helper.make_node("Reshape", ["age1", "flat"], [outputs[0]]),
        helper.make_node("Reshape", ["sigma1", "flat"], [outputs[1]]),
    ]
    graph = helper.make_graph(
        nodes,
        "agegate_age_fixture",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", channels, size, size])],
        [
            helper.make_tensor_value_info(outputs[0], TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info(outputs[1], TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info(outputs[2], TensorProto.FLOAT, ["N", 2]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, name: str) -> None:
    path = OUT / name
    path.write_bytes(model.SerializeToString())
    print(f"wrote {path.relative_to(OUT.parents[1])}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    good = age_graph()
    save(good, "age_fixture.onnx")
    save(age_graph(input_name="pixels"), "age_wrong_input_name.onnx")
    save(age_graph(outputs=("years", "sigma", "steps")), "age_missing_output.onnx")
    save(age_graph(channels=4), "age_four_channels.onnx")
    data = good.SerializeToString()
    (OUT / "age_truncated.onnx").write_bytes(data[: len(data) // 2])
    print("wrote tests/fixtures/age_truncated.onnx")
    (OUT / "not_a_model.onnx").write_text("this is a text file, not an ONNX model\n")
    print("wrote tests/fixtures/not_a_model.onnx")


if __name__ == "__main__":
    main()
