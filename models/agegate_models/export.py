"""Export trained CILF-CIAE models to the ONNX files the runtime loads.

    python -m agegate_models.export --teacher .cache/runs/teacher224/best.pt \
        --student .cache/runs/student112/best.pt [--eval]

writes ``models/age_teacher_f32.onnx`` (only if < 20 MB), ``models/age_student_f32.onnx``,
``models/age_student_int8.onnx`` (via quantize.py), their lines in ``models/SHA256SUMS``,
and the Rust parity fixture ``tests/fixtures/age_parity/``. ``python -m
agegate_models.export --fixture-only`` rewrites only the fixture.

Graph contract (models/README.md): input ``image`` float32 ``[B,3,S,S]`` RGB 0..255;
outputs ``age [B]``, ``sigma [B]``, ``steps [B,T]``. The 101 prompt embeddings are constants
of the graph (no text tower on the device); the DFT is a pair of constant real matrices.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from .config import tiny_model_config
from .data import MODELS_DIR, REPO_ROOT, default_data_dir, load_image, read_manifest
from .model import CILFCIAE, ExportModule, build_model

OUTPUTS = ["age", "sigma", "steps"]
# optional output (models/README.md): P(age >= T) for these thresholds, in this order
P_OVER = "p_over"
P_OVER_THRESHOLDS = (13, 16, 18, 21, 25)
FORBIDDEN_INT8_OPS = {"QLinearAdd", "QLinearMul", "QGemm", "QLinearGlobalAveragePool"}
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "age_parity"
# the shipped student's last stages (finetune.py), see models/README.md "Training": tower
# blocks 12-13 + head fine-tuned at 112 px from the frozen-tower student, then at 104 px
# (what ships: 112 px would be 306 MFLOPs) from the 112-px result
FINETUNE_STAGES = (
    {
        "name": "ft112",
        "image_size": 112,
        "tail_cut": 11,
        "epochs": 6,
        "warmup_epochs": 1,
        "lr": 1e-3,
        "tail_lr": 2e-4,
    },
    {
        "name": "ft104",
        "image_size": 104,
        "tail_cut": 11,
        "epochs": 4,
        "warmup_epochs": 1,
        "lr": 5e-4,
        "tail_lr": 1e-4,
        "int8_copy": True,  # + the int8 prefix's features; selected on their val MAE
    },
)


def export_onnx(model: CILFCIAE, path: str | Path, opset: int = 17) -> Path:
    """Trace ``ExportModule(model)`` (``resume.ShippedExport`` for a model from the shipped
    graph; legacy TorchScript exporter) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .resume import ShippedExport, ShippedStudent

    s = model.cfg.backbone.image_size
    em = (ShippedExport(model) if isinstance(model, ShippedStudent) else ExportModule(model)).eval()
    names = OUTPUTS + ([P_OVER] if model.cfg.head.p_over else [])
    dyn = {n: {0: "batch"} for n in ["image", *names]}
    with torch.no_grad():
        torch.onnx.export(
            em,
            (torch.zeros(1, 3, s, s),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=names,
            dynamic_axes=dyn,
            do_constant_folding=True,
        )
    m = fold_input_channel_flip(_drop_initializer_identities(onnx.load(str(path))))
    # no recorded intermediate shapes: they carry the symbolic batch, which tract cannot
    # unify with the batch of 1 the runtime fixes; tract infers them itself
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    m.producer_name = "agegate_models.export"
    onnx.save(m, str(path))
    return path


def _drop_initializer_identities(m: onnx.ModelProto) -> onnx.ModelProto:
    """The exporter de-duplicates equal weights through ``Identity`` nodes; rewire their
    consumers to the initializer itself (the quantizer needs weights as initializers)."""
    inits = {t.name for t in m.graph.initializer}
    graph_out = {o.name for o in m.graph.output}
    alias = {}
    keep = []
    for n in m.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in graph_out:
            alias[n.output[0]] = n.input[0]
        else:
            keep.append(n)
    for n in keep:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    return m


def _const_tensor(m: onnx.ModelProto, name: str) -> onnx.TensorProto | None:
    """The tensor behind ``name`` when it is an initializer or a Constant's value: read it
    with ``numpy_helper.to_array``, overwrite it in place with ``CopyFrom``."""
    for t in m.graph.initializer:
        if t.name == name:
            return t
    for n in m.graph.node:
        if n.op_type == "Constant" and n.output[0] == name and n.attribute[0].name == "value":
            return n.attribute[0].t
    return None


def _const_value(m: onnx.ModelProto, name: str) -> np.ndarray | None:
    t = _const_tensor(m, name)
    return None if t is None else numpy_helper.to_array(t)


def fold_input_channel_flip(m: onnx.ModelProto) -> onnx.ModelProto:
    """Fold the backbone's RGB->BGR flip into its first convolution.

    The face backbone wants BGR minus a mean: ``Slice(image, step -1 on channels) - mean``.
    tract runs that reversed Slice as a generic strided copy (about 1 ms of a 16 ms
    estimate on x86); reversing the mean and the first conv's input channels instead gives
    the same function with no op at all. Only this exact chain is rewritten:
    ``image -> Slice(axis 1, step -1, whole axis) -> Sub(const [1,3,1,1]) -> [Pad] -> Conv``
    with a 3-input-channel weight, where the other readers of the Sub may only take its Shape.
    The conv weight may be a float initializer or an int8 one behind a per-output-channel
    DequantizeLinear; anything else leaves the graph as it is. Returns ``m`` (changed in
    place).
    """
    g = m.graph
    inputs = {i.name for i in g.input}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    producer = {o: n for n in g.node for o in n.output}

    def only_reader(name: str, op: str, ignore: tuple[str, ...] = ()) -> onnx.NodeProto | None:
        found = [r for r in readers.get(name, []) if r.op_type not in ignore]
        return found[0] if len(found) == 1 and found[0].op_type == op else None

    for flip in [n for n in g.node if n.op_type == "Slice" and n.input[0] in inputs]:
        if len(flip.input) != 5:
            continue
        starts, ends, axes, steps = (_const_value(m, x) for x in flip.input[1:5])
        if any(v is None or v.size != 1 for v in (starts, ends, axes, steps)):
            continue
        if not (axes[0] == 1 and steps[0] == -1 and starts[0] == -1 and ends[0] <= -(2**31)):
            continue
        sub = only_reader(flip.output[0], "Sub")
        if sub is None or sub.input[0] != flip.output[0]:
            continue
        mean = _const_value(m, sub.input[1])
        if mean is None or mean.shape != (1, 3, 1, 1):
            continue
        after = sub.output[0]
        pad = only_reader(after, "Pad", ignore=("Shape",))
        if pad is not None:
            # The pads are often computed from the Shape (TF "SAME"); they cannot pad the
            # channel axis here, since the conv below must still see exactly 3 channels.
            after = pad.output[0]
        conv = only_reader(after, "Conv", ignore=("Shape",))
        if conv is None or conv.input[0] != after:
            continue
        weight = conv.input[1]
        dq = producer.get(weight)
        if dq is not None:
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            if dq.op_type != "DequantizeLinear" or axis != 0:
                continue
            weight = dq.input[0]
        w = _const_value(m, weight)
        if w is None or w.ndim != 4 or w.shape[1] != 3:
            continue
        for name, value in [(weight, w), (sub.input[1], mean)]:
            t = _const_tensor(m, name)
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value[:, ::-1]), t.name))
        sub.input[0] = flip.input[0]
        g.node.remove(flip)
        for name in flip.input[1:]:
            const = producer.get(name)
            if const is not None and const.op_type == "Constant" and len(readers[name]) == 1:
                g.node.remove(const)
    return m


def ort_session(path: str | Path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def check_contract(path: str | Path) -> dict:
    """Names, ranks, square 3-channel fixed-size input; returns {"size": S, "T": T}."""
    m = onnx.load(str(path))
    ins = {i.name: i for i in m.graph.input}
    outs = {o.name: o for o in m.graph.output}
    assert "image" in ins, "no input named image"
    dims = [d.dim_value or d.dim_param for d in ins["image"].type.tensor_type.shape.dim]
    assert len(dims) == 4 and dims[1] == 3 and dims[2] == dims[3] and isinstance(dims[2], int)
    for n in OUTPUTS:
        assert n in outs, f"no output named {n}"
    sd = [d.dim_value or d.dim_param for d in outs["steps"].type.tensor_type.shape.dim]
    assert len(sd) == 2
    info = {"size": dims[2], "T": sd[1], "p_over": 0}
    if P_OVER in outs:  # optional; [B, 5] float32
        pd = [d.dim_value or d.dim_param for d in outs[P_OVER].type.tensor_type.shape.dim]
        assert len(pd) == 2 and pd[1] == len(P_OVER_THRESHOLDS), f"p_over shape {pd}"
        assert outs[P_OVER].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        info["p_over"] = pd[1]
    return info


def op_histogram(path: str | Path) -> dict[str, int]:
    m = onnx.load(str(path))
    h: dict[str, int] = {}
    for n in m.graph.node:
        h[n.op_type] = h.get(n.op_type, 0) + 1
    return h


def count_macs(path: str | Path) -> dict[str, int]:
    """Multiply-accumulates per image of the Conv / MatMul / Gemm nodes (and their QLinear
    forms), from the tensor shapes of one onnxruntime run at batch 1. Elementwise ops,
    normalisation and pooling are not counted. FLOPs = 2 x MACs."""
    import onnxruntime as ort

    m = onnx.load(str(path))
    kinds = {"Conv": 1, "QLinearConv": 3, "MatMul": 1, "QLinearMatMul": 3, "Gemm": 1}
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    nodes = [n for n in m.graph.node if n.op_type in kinds]
    have = {o.name for o in m.graph.output}
    for n in nodes:
        for name in (n.input[0], n.output[0]):
            if name not in have and name not in inits:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
                have.add(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    size = m.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    names = [o.name for o in sess.get_outputs()]
    vals = sess.run(names, {"image": np.zeros((1, 3, size, size), np.float32)})
    shapes = dict(zip(names, (list(v.shape) for v in vals), strict=True))
    shapes.update(inits)
    macs = {"conv": 0, "matmul": 0}
    for n in nodes:
        out = shapes[n.output[0]]
        if "Conv" in n.op_type:
            w = shapes[n.input[kinds[n.op_type]]]
            macs["conv"] += int(np.prod(out)) * w[1] * w[2] * w[3]
        else:
            a = shapes[n.input[0]]
            k = a[-1]
            if n.op_type == "Gemm" and any(t.name == "transA" and t.i for t in n.attribute):
                k = a[0]
            macs["matmul"] += int(np.prod(out)) * k
    macs["total"] = macs["conv"] + macs["matmul"]
    return macs


def run_onnx(sess, image: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs() if o.name in (*OUTPUTS, P_OVER)]
    res = sess.run(names, {"image": image.astype(np.float32)})
    return dict(zip(names, res, strict=True))


def evaluate_onnx(path, manifest=None, root=None, limit: int = 0, batch: int = 16) -> dict:
    """MAE / CS(5) / per-step MAE / mean sigma of an ONNX age model on a manifest (images
    resized to the graph's S; the runtime's aligned crops when the manifest is theirs)."""
    info = check_contract(path)
    sess = ort_session(path)
    manifest = manifest or default_data_dir() / "utkface" / "val.csv"
    samples = read_manifest(manifest, root)
    if limit:
        samples = samples[:limit]
    steps, sig, ys = [], [], []
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        x = np.stack([load_image(s.path, info["size"]) for s in chunk]).astype(np.float32)
        o = run_onnx(sess, x)
        steps.append(o["steps"])
        sig.append(o["sigma"])
        ys.extend(s.age for s in chunk)
    st, y = np.concatenate(steps), np.array(ys, np.float32)
    err = np.abs(st - y[:, None])
    return {
        "file": Path(path).name,
        "n": len(y),
        "mae": float(err[:, -1].mean()),
        "cs5": float((err[:, -1] <= 5).mean()),
        "step_mae": [round(float(v), 4) for v in err.mean(0)],
        "sigma_mean": float(np.concatenate(sig).mean()),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# The age models committed beside SHA256SUMS; the float ones are rebuilt, not shipped
# (.gitignore), so their hashes stay out of it.
SHIPPED_AGE_MODELS = ("age_student_int8.onnx", "age_student_int8_qlinear.onnx")


def shipped(files: list[Path]) -> list[Path]:
    """Those of ``files`` that are shipped age models in ``models/``."""
    return [
        f
        for f in files
        if f.name in SHIPPED_AGE_MODELS and f.resolve().parent == MODELS_DIR.resolve()
    ]


def update_sha256sums(files: list[Path], sums: Path = MODELS_DIR / "SHA256SUMS") -> None:
    """Replace (or add) the lines of ``files`` in ``sums`` (sha256sum format, paths relative
    to the file's folder); other lines are kept as they are."""
    lines = sums.read_text().splitlines() if sums.exists() else []
    names = {str(Path(f).resolve().relative_to(sums.parent.resolve())): f for f in files}
    kept = [ln for ln in lines if ln.split(maxsplit=1)[-1].lstrip("*") not in names]
    kept += [f"{sha256(Path(f))}  {n}" for n, f in sorted(names.items())]
    sums.write_text("\n".join(kept) + "\n")


# the shipped student's head options mirrored by the Rust parity fixture
FIXTURE_HEAD = {"p_over": P_OVER_THRESHOLDS, "estimator": "median"}


def write_fixture(
    out_dir: Path = FIXTURE_DIR, seed: int = 0, size: int = 32, head: dict | None = None
) -> dict:
    """A tiny randomly initialised CILF-CIAE (real architecture, small dims: the head
    options of ``head``, default ``FIXTURE_HEAD``, e.g. the p_over output) + an input and
    onnxruntime's outputs, for the Rust parity test."""
    torch.manual_seed(seed)
    cfg = tiny_model_config(size)
    for k, v in (FIXTURE_HEAD if head is None else head).items():
        setattr(cfg.head, k, v)
    model = build_model(cfg).eval()
    # make the random head less degenerate: non-zero correction and modulation weights
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.abs().sum() == 0 and p.ndim >= 1 and "bias" not in name:
                p.normal_(0, 0.05)
        for mod in model.backbone.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = export_onnx(model, out_dir / "model.onnx")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(1, 3, size, size)).astype(np.float32)
    o = run_onnx(ort_session(path), x)
    with torch.no_grad():
        ref = ExportModule(model)(torch.from_numpy(x))
    for a, b in zip(ref, OUTPUTS + ([P_OVER] if cfg.head.p_over else []), strict=True):
        np.testing.assert_allclose(a.numpy(), o[b], rtol=1e-4, atol=1e-4)
    (out_dir / "input.json").write_text(
        json.dumps({"name": "image", "shape": list(x.shape), "data": x.ravel().tolist()})
    )
    exp = {k: {"shape": list(v.shape), "data": [float(f) for f in v.ravel()]} for k, v in o.items()}
    (out_dir / "expected.json").write_text(
        json.dumps({"atol": 1e-3, "rtol": 1e-3, "outputs": exp}, indent=1)
    )
    return {"size": path.stat().st_size, "outputs": {k: v.tolist() for k, v in o.items()}}


def truncate_steps(model: CILFCIAE, n: int) -> CILFCIAE:
    """Unroll only the first ``n`` correction steps (``n < 0``: all). The steps are applied
    in sequence, so the kept ones compute exactly what they did inside the longer unroll."""
    if 0 <= n < len(model.head.corr):
        model.head.corr = model.head.corr[:n]
        model.cfg.head.n_steps = n
    return model


def retrain(
    runs: Path,
    teacher_epochs: int = 4,
    student_epochs: int = 4,
    crops: Path = MODELS_DIR / ".cache" / "crops",
) -> tuple[Path, Path]:
    """The shipped recipe end to end (features are computed and cached on first use):
    teacher (224), distilled frozen-tower student (104), then the student's head and the
    tower's last blocks fine-tuned on the runtime's 112-px crops (finetune.py, stages
    ``FINETUNE_STAGES``: at 112 px, then at 104 px, what ships). ``crops``: ``train_112/``
    and ``val_112/`` from ``agegate crops``."""
    from .distill import make_teacher_fn, teacher_targets
    from .finetune import finetune
    from .train import TrainConfig, run

    ft_train, ft_val = crops / "train_112" / "manifest.csv", crops / "val_112" / "manifest.csv"
    for m in (ft_train, ft_val):
        if not m.is_file():
            raise FileNotFoundError(
                f"{m} missing: make the runtime's crops first, e.g. `agegate crops --manifest "
                f"<data>/utkface/train.csv --size 112 --out {m.parent}` (and val)"
            )

    t_out = runs / "teacher224"
    run(
        TrainConfig(
            image_size=224,
            epochs=teacher_epochs,
            warmup_epochs=1,
            in_norm=False,
            glob_mlp=False,
            out=str(t_out),
        )
    )
    s_tc = TrainConfig(
        image_size=104,
        epochs=student_epochs,
        warmup_epochs=1,
        extra_features="faceres-int8",
        out=str(runs / "student104"),
    )
    run(s_tc, teacher_fn=make_teacher_fn(teacher_targets(t_out / "best.pt", s_tc)))
    init = runs / "student104" / "best.pt"
    for st in FINETUNE_STAGES:
        kw = {k: v for k, v in st.items() if k not in ("name", "int8_copy")}
        f_tc = TrainConfig(**kw, train_manifest=str(ft_train), val_manifest=str(ft_val))
        f_tc.out = str(runs / st["name"])
        finetune(f_tc, t_out / "best.pt", init, int8_copy=st.get("int8_copy", False))
        init = runs / st["name"] / "best.pt"
    return t_out / "best.pt", init


def main(argv: list[str] | None = None) -> int:
    from .train import load_checkpoint

    ap = argparse.ArgumentParser(prog="python -m agegate_models.export", description=__doc__)
    ap.add_argument("--teacher", type=Path)
    ap.add_argument("--student", type=Path)
    ap.add_argument("--out-dir", type=Path, default=MODELS_DIR)
    ap.add_argument("--calib-n", type=int, default=256)
    ap.add_argument("--eval", action="store_true", help="evaluate the exported files on val")
    ap.add_argument("--eval-limit", type=int, default=0)
    ap.add_argument("--fixture-only", action="store_true")
    ap.add_argument("--no-fixture", action="store_true", help="leave the Rust fixture as it is")
    ap.add_argument("--max-commit-mb", type=float, default=20.0)
    ap.add_argument(
        "--retrain",
        action="store_true",
        help="full retrain first: features, teacher (224), distilled student (104), then export",
    )
    ap.add_argument("--teacher-steps", type=int, default=-1, help="unroll only N steps")
    ap.add_argument("--student-steps", type=int, default=-1, help="unroll only N steps")
    ap.add_argument("--runs", type=Path, default=MODELS_DIR / ".cache" / "runs")
    ap.add_argument("--teacher-epochs", type=int, default=4)
    ap.add_argument("--student-epochs", type=int, default=4)
    ap.add_argument("--crops", type=Path, default=MODELS_DIR / ".cache" / "crops")
    ap.add_argument(
        "--fold-flip",
        type=Path,
        nargs="+",
        metavar="ONNX",
        help="only fold the input RGB->BGR flip into the first conv of these exported files "
        "(in place; what export now does itself) and update their lines in SHA256SUMS",
    )
    a = ap.parse_args(argv)
    if a.fold_flip:
        for f in a.fold_flip:
            m = onnx.load(str(f))
            before = len(m.graph.node)
            fold_input_channel_flip(m)
            onnx.checker.check_model(m)
            onnx.save(m, str(f))
            print(f"{f}: {before} -> {len(m.graph.node)} nodes")
        update_sha256sums(shipped(a.fold_flip))
        return 0
    if a.retrain:
        a.teacher, a.student = retrain(a.runs, a.teacher_epochs, a.student_epochs, a.crops)
    if not a.no_fixture:
        fx = write_fixture()
        print(f"fixture: {FIXTURE_DIR} (model {fx['size']} bytes)")
    if a.fixture_only:
        return 0
    written: list[Path] = []
    report: dict = {}
    if a.teacher:
        tm = truncate_steps(load_checkpoint(a.teacher, with_backbone=True), a.teacher_steps)
        t = export_onnx(tm, a.out_dir / "t.part")
        mb = t.stat().st_size / 2**20
        report["teacher_macs"] = count_macs(t)
        if mb < a.max_commit_mb:
            dst = a.out_dir / "age_teacher_f32.onnx"
            t.replace(dst)
            written.append(dst)
        else:
            dst = MODELS_DIR / "build" / "age_teacher_f32.onnx"
            dst.parent.mkdir(parents=True, exist_ok=True)
            t.replace(dst)
            print(f"teacher is {mb:.1f} MB >= {a.max_commit_mb} MB: kept at {dst}")
        report["teacher_file"] = str(dst)
    if a.student:
        from .quantize import quantize_model

        sm = truncate_steps(load_checkpoint(a.student, with_backbone=True), a.student_steps)
        s32 = export_onnx(sm, a.out_dir / "age_student_f32.onnx")
        # The integer form needs the calibration set; the shipped form (int8 weights,
        # float arithmetic: faster in tract) is made from the same float graph.
        # calibration/ records the recipe of the committed files only
        record = a.out_dir.resolve() == MODELS_DIR.resolve()
        qlinear = quantize_model(
            s32,
            a.out_dir / "age_student_int8_qlinear.onnx",
            n=a.calib_n,
            form="qlinear",
            record=record,
        )
        s8 = quantize_model(s32, a.out_dir / "age_student_int8.onnx", form="weights")
        written += [s32, qlinear, s8]
        report["student_macs"] = count_macs(s32)
        report["int8_ops"] = op_histogram(s8)
        report["qlinear_ops"] = op_histogram(qlinear)
    for f in written:
        report.setdefault("sizes", {})[f.name] = f.stat().st_size
    if shipped(written):
        update_sha256sums(shipped(written))
    if a.eval:
        files = [Path(report["teacher_file"])] if a.teacher else []
        files += written[-3:] if a.student else []
        report["eval"] = [evaluate_onnx(f, limit=a.eval_limit) for f in files]
    print(json.dumps(report, indent=1))
    out = MODELS_DIR / ".cache" / "export_report.json"
    out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
