"""Mixed-precision ONNX export: every quantizable sub-module at its own bit width.

The model is exported the ordinary way (``export_model``, same wrappers and metadata, so the
transcriber and the profiler read the file like any other) after its fake-quantized weights
are baked to their quantized float values; the float weight initializers of the quantized
sub-modules are then found in the graph by value and replaced by integer storage:

* 8- and 6-bit Linear weights (6 stored in 8): with ``kernels="exact"``, ``MatMulNBits`` with
  8-bit codes (offset by the zero point 128) and ``accuracy_level`` 1, which dequantizes to
  float32 and equals the PyTorch fake-quant model; with ``kernels="fast"``,
  ``com.microsoft.DynamicQuantizeMatMul`` (int8 weights, per-channel scales, activations
  quantized per run: the VNNI kernels, outputs off by that activation rounding). Not plain
  ``DequantizeLinear`` + MatMul: ONNX Runtime (1.2x) fuses that pair into ``MatMulNBits``
  with ``accuracy_level`` 4, i.e. int8 activations, silently (max |diff| of the log-probs
  0.02 against the fake-quant model on the ``small`` preset, where the exact forms give 1e-6).
* 8- and 6-bit convolution weights: int8 + per-channel scale through ``DequantizeLinear``
  (axis 0) in front of the Conv, folded at load: float32 compute.
* 4-, 3- and 2-bit Linear weights (3 and 2 stored in 4): ONNX Runtime's
  ``com.microsoft.MatMulNBits``, 4-bit codes ``q + 8`` packed two to a byte, blocks along the
  input dimension. Our quantizer has one scale per output channel and is symmetric, so every
  block of a row gets that row's scale and the zero point is the default 8: the dequantized
  weights equal the fake-quant ones. ``accuracy_level`` 1 (``"exact"``) computes in float32,
  4 (``"fast"``) quantizes the activations to int8 per block and uses the VNNI kernels.
  MatMulNBits also has a 2-bit kernel, but on x86 it fell back to a path ~1.7x slower than
  the float MatMul (e.g. 144x576 at T=125: 344 us vs 190 us), so 2-bit weights are stored in 4.
  ONNX Runtime's own ``MatMulNBitsQuantizer`` is not used: it computes its own (block-wise,
  asymmetric by default) scales, which would not reproduce our per-channel fake quantization,
  and it needs the extra ``onnx_ir`` package.
* 4/3/2-bit convolution weights: no n-bit Conv kernel exists in ONNX Runtime; stored in int8
  with ``DequantizeLinear`` (the file holds 8 bits per weight, the runtime float32).
* ``kernels="int8"`` (the speed form): every quantized Linear, whatever its width, runs as
  ``DynamicQuantizeMatMul`` with its codes in int8 (a 2- to 8-bit symmetric code is an int8
  value, so the weights are exact and only the per-run activation rounding differs; the bias
  ``Add`` after it and a constant scale, the macaron ½, are folded into the node), and the
  convolutions keep their baked float weights as plain initializers, which ONNX Runtime
  prepacks; a ``DequantizeLinear`` in front of a Conv is not folded at load and costs a
  weight repack per run (measured 2x on the subsampling convolution). The file holds 8 bits
  per Linear weight: storage and runtime size are the same and are reported as such.
* 32 bits: float32, unchanged.

:class:`LowbitResult` says, per sub-module, how it is stored and how it computes, and gives the
file size beside ``speechnas.nn.quant.weight_bytes`` (the ideal packed size).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from speechnas.data.filters import FeatureConfig
from speechnas.data.tokenizer import Tokenizer
from speechnas.nn.build import SpeechModel, build
from speechnas.nn.quant import (
    allocation_of,
    apply_bits,
    bake,
    load_plain_state,
    plain_state_dict,
    quantizable,
    quantize_codes,
    weight_bytes,
)

__all__ = ["KERNELS", "LayerForm", "LowbitResult", "export_lowbit"]

#: "exact": outputs equal the fake-quant PyTorch model (float compute); "fast": int8 kernels
#: with the low-bit storage; "int8": every Linear on the int8 kernels, convolutions in float.
KERNELS: tuple[str, ...] = ("exact", "fast", "int8")
_MS = "com.microsoft"
_NBITS_BLOCKS = (16, 32, 64, 128, 256)  # MatMulNBits block sizes with a fast x86 kernel


@dataclass(frozen=True, slots=True)
class LayerForm:
    """How one sub-module's weight is stored in the file and computed at run time."""

    bits: int  # the allocation's width
    stored_bits: int  # bits per weight in the file (32: float)
    op: str  # MatMul, DequantizeLinear+MatMul, DynamicQuantizeMatMul, MatMulNBits, ...
    compute: str  # float32 or int8


@dataclass
class LowbitResult:
    """What :func:`export_lowbit` wrote.

    ``file_bytes``: the file on disk. ``weight_bytes``: ``speechnas.nn.quant.weight_bytes`` of
    the allocation (packed n-bit weights + scales, everything else float32). ``stored_bytes``:
    the bytes of the file's initializers (what the weights really take, after 6→8 and 3/2→4
    bit storage and int8 for low-bit convolutions). ``parity``: max |ONNX - PyTorch
    fake-quant| of the log-probabilities on valid frames (None without the check).
    """

    path: Path
    allocation: dict[str, int]
    forms: dict[str, LayerForm]
    file_bytes: int
    fp32_file_bytes: int
    weight_bytes: int
    stored_bytes: int
    kernels: str
    parity: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        by_form: dict[str, int] = {}
        for f in self.forms.values():
            key = f"{f.bits}b->{f.op} (stored {f.stored_bits}b, {f.compute})"
            by_form[key] = by_form.get(key, 0) + 1
        return {
            "path": str(self.path),
            "kernels": self.kernels,
            "file_bytes": self.file_bytes,
            "fp32_file_bytes": self.fp32_file_bytes,
            "weight_bytes": self.weight_bytes,
            "stored_bytes": self.stored_bytes,
            "parity": self.parity,
            "forms": by_form,
        }


def _codes(w: torch.Tensor, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (out, ...) int32 and per-channel scales (out,) float32 of ``w``."""
    codes, scale = quantize_codes(w.float(), bits)
    return codes.to(torch.int32).numpy(), scale.numpy().astype(np.float32)


def _key(a: np.ndarray) -> tuple[tuple[int, ...], str]:
    """A weight's identity by value, blind to unit axes (a depthwise kernel (C, 1, K) is
    exported as (C, 1, 1, K))."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return tuple(d for d in a.shape if d != 1), hashlib.sha1(a.tobytes()).hexdigest()


def _pack(q: np.ndarray, block: int, bits: int) -> tuple[np.ndarray, int]:
    """(N, K) signed codes → MatMulNBits B (N, blocks, block * bits / 8) uint8 (codes offset
    by the default zero point 2^(bits-1); padding is that zero point), and blocks."""
    n, k = q.shape
    blocks = -(-k // block)
    zero = 1 << (bits - 1)
    u = np.full((n, blocks * block), zero, np.uint8)
    u[:, :k] = (q + zero).astype(np.uint8)
    if bits == 8:
        return u.reshape(n, blocks, block), blocks
    u = u.reshape(n, blocks, block // 2, 2)
    return (u[..., 0] | (u[..., 1] << 4)).astype(np.uint8), blocks


def _block(k: int, bits: int) -> int:
    """The MatMulNBits block that stores a row of ``k`` weights in the fewest bytes: packed
    codes of the input dim padded to whole blocks, plus one float32 scale per block (all blocks
    of a row get the row's scale, so the choice does not change the numbers). K = 144 at 4 bits:
    16 -> 72 + 36 B, 32 -> 80 + 20 B, 256 -> 128 + 4 B; 32 wins."""

    def size(b: int) -> int:
        blocks = -(-k // b)
        return blocks * b * bits // 8 + 4 * blocks

    return min(_NBITS_BLOCKS, key=lambda b: (size(b), -b))


_Weight = tuple[torch.Tensor, int, str, tuple[np.ndarray, np.ndarray]]


def _seven_bit(codes: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes above 7 bits halved (scale doubled), so that no product pair of an int8 kernel
    without VNNI overflows its 16-bit sum (see ``reduce_range`` of :func:`export_lowbit`)."""
    if np.abs(codes).max(initial=0) <= 63:
        return codes, scale
    return np.clip(np.round(codes / 2.0), -63, 63), (scale * 2).astype(scale.dtype)


def _rewrite(
    model: onnx.ModelProto, weights: Mapping[str, _Weight], kernels: str, reduce_range: bool
) -> dict[str, LayerForm]:
    """Replaces, in place, the float initializers of ``weights`` (name → baked weight, bits,
    "linear" or "conv", (codes, scales)) by their integer forms; returns each name's form."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for j, name in enumerate(node.input):
            if name in inits:
                consumers.setdefault(name, []).append((node, j))
    # Find each weight by value: the exporter names folded initializers arbitrarily.
    by_value: dict[tuple[tuple[int, ...], str], list[tuple[str, str]]] = {}
    for name, init in inits.items():
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) >= 2:
            by_value.setdefault(_key(numpy_helper.to_array(init)), []).append((name, ""))
    forms: dict[str, LayerForm] = {}
    done: dict[str, LayerForm] = {}
    new_nodes: list[tuple[onnx.NodeProto, list[onnx.NodeProto]]] = []
    for mod_name, (w, bits, kind, (codes, scale)) in weights.items():
        arr = w.detach().float().numpy()
        if kind == "linear":
            hits = [(n, 1) for n, _ in by_value.get(_key(arr.T), [])]
            hits += [(n, 0) for n, _ in by_value.get(_key(arr), [])]
        else:
            hits = [(n, 0) for n, _ in by_value.get(_key(arr), [])]
        if not hits:
            raise ValueError(
                f"allocation[{mod_name!r}]: its weight {tuple(arr.shape)} was not found among "
                "the exported graph's initializers (is the sub-module used by the forward?)"
            )
        init_name, axis = hits[0]
        if init_name in done:  # one initializer shared by equal weights
            forms[mod_name] = done[init_name]
            continue
        users = consumers.get(init_name, [])
        if kind == "conv" and kernels == "int8":
            forms[mod_name] = done[init_name] = LayerForm(bits, 32, "Conv", "float32")
            continue
        nbits_ok = (
            kind == "linear"
            and kernels != "int8"
            and (bits <= 4 or kernels == "exact")
            and axis == 1
            and users
            and all(n.op_type == "MatMul" and j == 1 for n, j in users)
        )
        dqmm_ok = (
            kind == "linear"
            and (kernels == "int8" or (kernels == "fast" and bits > 4))
            and axis == 1
            and users
            and all(n.op_type == "MatMul" and j == 1 for n, j in users)
        )
        graph.initializer.remove(inits[init_name])
        if nbits_ok:
            q = codes.reshape(codes.shape[0], -1)  # (N, K)
            n, k = q.shape
            store = 4 if bits <= 4 else 8
            block = _block(k, store)
            packed, blocks = _pack(q, block, store)
            b_name, s_name = f"{init_name}_q{store}", f"{init_name}_scales"
            graph.initializer.extend(
                [
                    numpy_helper.from_array(packed, b_name),
                    numpy_helper.from_array(np.repeat(scale, blocks), s_name),
                ]
            )
            level = 4 if kernels == "fast" else 1
            for node, _ in users:
                repl = helper.make_node(
                    "MatMulNBits",
                    [node.input[0], b_name, s_name],
                    list(node.output),
                    name=f"{node.name}_nbits",
                    domain=_MS,
                    K=k,
                    N=n,
                    bits=store,
                    block_size=block,
                    accuracy_level=level,
                )
                new_nodes.append((node, [repl]))
            forms[mod_name] = LayerForm(
                bits, store, "MatMulNBits", "int8" if kernels == "fast" else "float32"
            )
        elif dqmm_ok:
            if reduce_range:
                codes, scale = _seven_bit(codes, scale)
            b_name, s_name, z_name = (f"{init_name}_q8", f"{init_name}_scale", f"{init_name}_zp")
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.ascontiguousarray(codes.T.astype(np.int8)), b_name),
                    numpy_helper.from_array(scale, s_name),
                    numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name),
                ]
            )
            for node, _ in users:
                repl = helper.make_node(
                    "DynamicQuantizeMatMul",
                    [node.input[0], b_name, s_name, z_name],
                    list(node.output),
                    name=f"{node.name}_dqmm",
                    domain=_MS,
                )
                new_nodes.append((node, [repl]))
            forms[mod_name] = LayerForm(bits, 8, "DynamicQuantizeMatMul", "int8")
        else:
            stored = (codes.T if axis == 1 else codes).reshape(tuple(inits[init_name].dims))
            q_name, s_name, z_name = (f"{init_name}_q8", f"{init_name}_scale", f"{init_name}_zp")
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.ascontiguousarray(stored.astype(np.int8)), q_name),
                    numpy_helper.from_array(scale, s_name),
                    numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name),
                ]
            )
            dq = helper.make_node(
                "DequantizeLinear",
                [q_name, s_name, z_name],
                [init_name],
                name=f"{init_name}_dequantize",
                axis=axis,
            )
            graph.node.insert(0, dq)
            op = "+".join(sorted({n.op_type for n, _ in users})) or "?"
            forms[mod_name] = LayerForm(bits, 8, f"DequantizeLinear+{op}", "float32")
        done[init_name] = forms[mod_name]
    for old, repl in new_nodes:
        at = list(graph.node).index(old)
        graph.node.remove(old)
        for i, r in enumerate(repl):
            graph.node.insert(at + i, r)
    # Inputs listing initializers (older exporters) must not name the removed ones.
    kept = {i.name for i in graph.initializer}
    for value in list(graph.input):
        if value.name in done and value.name not in kept:
            graph.input.remove(value)
    if not any(o.domain == _MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS, 1))
    return forms


def _fold_bias(graph: onnx.GraphProto) -> int:
    """Moves the bias ``Add`` behind each ``DynamicQuantizeMatMul`` into the node's own bias
    input (one kernel instead of two passes over the output; ONNX Runtime does not fuse this
    itself); returns how many were folded."""
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded = 0
    for node in list(graph.node):
        if node.op_type != "DynamicQuantizeMatMul" or len(node.input) > 4:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add" or node.output[0] in outputs:
            continue
        add = users[0]
        bias = [b for b in add.input if b != node.output[0]]
        n = int(numpy_helper.to_array(inits[node.input[1]]).shape[1])
        if len(bias) != 1 or bias[0] not in inits or tuple(inits[bias[0]].dims) != (n,):
            continue
        node.input.append(bias[0])
        node.output[0] = add.output[0]
        graph.node.remove(add)
        folded += 1
    return folded


def _fold_scale(graph: onnx.GraphProto) -> int:
    """Moves a constant scalar ``Mul`` behind a ``DynamicQuantizeMatMul`` (the macaron
    feed-forward's ½) into the node's weight scales and bias, which it multiplies linearly
    (exactly, for a power of two); returns how many were folded."""
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def scalar(name: str) -> float | None:
        if name in inits:
            a = numpy_helper.to_array(inits[name])
        elif name in consts and consts[name].attribute:
            a = numpy_helper.to_array(consts[name].attribute[0].t)
        else:
            return None
        return float(a) if a.size == 1 and a.dtype == np.float32 else None

    folded = 0
    for node in list(graph.node):
        if node.op_type != "DynamicQuantizeMatMul" or node.output[0] in outputs:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Mul":
            continue
        mul = users[0]
        other = [x for x in mul.input if x != node.output[0]]
        c = scalar(other[0]) if len(other) == 1 else None
        scaled = [k for k in (2, 4) if k < len(node.input) and node.input[k]]
        if c is None or any(node.input[k] not in inits for k in scaled):
            continue
        for k in scaled:  # fresh initializers: the originals may be shared
            a = numpy_helper.to_array(inits[node.input[k]]) * np.float32(c)
            name = f"{node.input[k]}_x{folded}_{node.name}"
            graph.initializer.append(numpy_helper.from_array(a.astype(np.float32), name))
            node.input[k] = name
        node.output[0] = mul.output[0]
        graph.node.remove(mul)
        folded += 1
    return folded


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Removes the initializers and ``Constant`` nodes no node reads any more (ONNX Runtime
    warns about each)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)


def _initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)


def export_lowbit(
    model: nn.Module,
    allocation: Mapping[str, int],
    path: str | Path,
    *,
    kernels: str = "exact",
    tokenizer: Tokenizer | None = None,
    features: FeatureConfig | None = None,
    check: bool = True,
    example_seconds: float = 4.0,
    attention_impl: str | None = None,
    reduce_range: bool = False,
) -> LowbitResult:
    """Writes ``model`` (a CTC or attention/hybrid ``SpeechModel``) with per-sub-module bit
    widths as one ONNX file at ``path``; see the module docstring for the forms.

    ``allocation``: sub-module name (``speechnas.compress.quantizable``) → bits; sub-modules
    it does not name keep the fake quantization ``model`` already has (none: float). The
    model itself is not changed (a copy is quantized). ``kernels``: "exact" (outputs equal
    the fake-quant model up to float rounding) or "fast" (int8 kernels, activation rounding).
    With ``check``, the file is run by ONNX Runtime and compared with the fake-quant PyTorch
    model on two inputs of another length than the traced one. ``attention_impl``: export
    under that attention implementation (``speechnas.nn.blocks.attention_impl``; the same
    weights, another graph) instead of the architecture's own. ``reduce_range``: the weights
    of ``DynamicQuantizeMatMul`` nodes (``kernels`` "fast" and "int8") in 7 bits: an 8-bit code
    is halved (its scale doubled). For CPUs without VNNI (AVX2 only), whose int8 kernels add
    two uint8 × int8 products in 16 bits and saturate with full 8-bit weights: on such a
    CPU the ``small``-sized test model's log-probabilities were off by 0.35 with 8-bit weights,
    against 0.02 with 6-bit ones. ONNX Runtime's own quantizer has the same switch. The
    export's caller decides, since the file may run on another CPU than the one that writes
    it (``speechnas export --reduce-range auto`` asks this CPU).
    """
    from speechnas.export.onnx import _CTC, _example, _sequence_parity, export_model

    if kernels not in KERNELS:
        raise ValueError(f"kernels: {kernels!r} is not one of {list(KERNELS)}")
    path = Path(path)
    # A fresh copy (not deepcopy, which breaks torch's parametrized module classes), with the
    # widths the model already has and then those of ``allocation``.
    if not isinstance(model, SpeechModel):
        raise ValueError(f"model: expected a SpeechModel, got {type(model).__name__}")
    arch = model.arch
    if attention_impl is not None:
        arch = type(arch)({**arch, "attention_impl": attention_impl})
    work = build(arch, vocab_size=model.vocab_size).eval()
    load_plain_state(work, plain_state_dict(model))
    apply_bits(work, {**allocation_of(model), **allocation})  # validates names and widths
    mods = quantizable(work)
    widths = allocation_of(work)
    full = {n: widths.get(n, 32) for n in mods}
    packed = weight_bytes(work, full)
    codes = {
        n: _codes(m.parametrizations.weight.original, full[n])
        for n, m in mods.items()
        if full[n] != 32
    }
    baked = bake(work)
    assert baked == full
    with tempfile.TemporaryDirectory() as tmp:
        result = export_model(
            work,
            tmp,
            tokenizer=tokenizer,
            features=features,
            check=False,
            example_seconds=example_seconds,
        )
        if set(result.files) != {"model"}:
            raise ValueError(
                f"model: export_lowbit writes one-graph (CTC, attention/hybrid) models; this one "
                f"exports {sorted(result.files)}"
            )
        fp32_file = result.files["model"]
        fp32_bytes = fp32_file.stat().st_size
        graph = onnx.load(str(fp32_file))
    weights = {
        n: (mods[n].weight, b, "linear" if isinstance(mods[n], nn.Linear) else "conv", codes[n])
        for n, b in full.items()
        if b != 32
    }
    forms = _rewrite(graph, weights, kernels, reduce_range and kernels != "exact")
    _fold_bias(graph.graph)
    _fold_scale(graph.graph)
    _drop_unused(graph.graph)
    for n, b in full.items():
        if b == 32:
            forms[n] = LayerForm(32, 32, "float", "float32")
    meta = {p.key: p.value for p in graph.metadata_props}
    meta["quantization"] = f"lowbit-{kernels}"
    if reduce_range and kernels != "exact":
        meta["int8_weights"] = "7-bit (reduce_range: for int8 kernels without VNNI)"
    meta["bit_allocation"] = json.dumps(full, sort_keys=True)
    del graph.metadata_props[:]
    for k, v in meta.items():
        graph.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(graph)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(path))
    parity = None
    if check:
        feats = work.features
        waveform = feats.kind == "waveform"
        gen = torch.Generator().manual_seed(1)
        n = int(feats.sample_rate * 3)
        t = max(2 * int(meta["min_input_length"]), n if waveform else feats.num_frames(n))
        checks = [_example(work, feats, [t, t * 2 // 3], gen), _example(work, feats, [t + 9], gen)]
        parity, _ = _sequence_parity(_CTC(work, waveform=waveform), path, checks)
    return LowbitResult(
        path=path,
        allocation=full,
        forms=dict(sorted(forms.items())),
        file_bytes=path.stat().st_size,
        fp32_file_bytes=fp32_bytes,
        weight_bytes=packed,
        stored_bytes=_initializer_bytes(graph),
        kernels=kernels,
        parity=parity,
        metadata=meta,
    )
