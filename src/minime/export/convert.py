"""The trained student written back into its base GGUF, then quantized by llama.cpp.

Why this path: llama.cpp's own converter (`convert_hf_to_gguf.py`) ships only inside the
llama-cpp-python sdist and needs the gguf-py beside it, not the PyPI `gguf`; vendoring it is
not an option. A student that came from a GGUF already has a file that llama.cpp reads
correctly: its tokenizer (vocabulary, merges, token types, special ids) and architecture
metadata. So the export copies that file with the `gguf` package, keeps every metadata key
as it is (only the chat template, end-of-turn id, name and file type change), and replaces
each tensor with the trained one, laid out the way llama.cpp expects. The HF <-> GGUF names
come from transformers' own map (`get_gguf_hf_weights_map`), and every converted tensor is
run back through transformers' GGUF loader (`TENSOR_PROCESSORS`) to prove the inverse: a
layout this module does not undo (a new architecture) is an error, not a silent garbling.

F16 rather than BF16: the merged student is stored in bfloat16, and F16 has more mantissa
bits (10 vs 7), so every bfloat16 weight in F16's range converts exactly; every llama.cpp CPU
build runs F16, and quantizing from F16 gives the same file as quantizing from the source.
A tensor with a value beyond F16's range (65504) is kept in F32 instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from minime.errors import MinimeError

#: llama.cpp file types (enum llama_ftype) of the quantizations minime writes.
QUANT_FTYPES = {"q8_0": 7, "q6_k": 18, "q5_k_m": 17, "q4_k_m": 15, "q4_0": 2}
#: general.file_type of an F16 file (LLAMA_FTYPE_MOSTLY_F16).
FTYPE_F16 = 1
_F16_MAX = float(np.finfo(np.float16).max)


class ExportError(MinimeError):
    """The student cannot be exported as asked."""


def write_f16_gguf(
    source: Path,
    base: Path,
    out: Path,
    *,
    chat_template: str,
    end_of_turn_id: int | None,
    name: str,
    description: str,
) -> dict[str, Any]:
    """Write the trained model in `source` into a copy of its base GGUF, as F16, at `out`.

    :param source: a Hugging Face model folder (safetensors) trained from `base`.
    :param base: the GGUF the student was converted from.
    :param chat_template: the template the student was trained with (tokenizer.chat_template).
    :param end_of_turn_id: the token that ends an assistant turn in that template
        (tokenizer.ggml.eot_token_id); None leaves the base's value.
    :returns: the base GGUF's name, architecture, licence and whether it adds BOS.
    :raises ExportError: if a trained tensor has no place in the base GGUF, or a shape or
        layout does not match.
    """
    import gguf

    reader = gguf.GGUFReader(base)
    arch = reader.fields["general.architecture"].contents()
    base_name = _field(reader, "general.name") or base.stem
    tensors = _gguf_tensors(source, reader, arch)
    overrides: dict[str, tuple[Any, Any]] = {
        "general.name": (name, gguf.GGUFValueType.STRING),
        "general.description": (description, gguf.GGUFValueType.STRING),
        "general.file_type": (FTYPE_F16, gguf.GGUFValueType.UINT32),
        "general.base_model.count": (1, gguf.GGUFValueType.UINT32),
        "general.base_model.0.name": (base_name, gguf.GGUFValueType.STRING),
        "tokenizer.chat_template": (chat_template, gguf.GGUFValueType.STRING),
    }
    if end_of_turn_id is not None:
        overrides["tokenizer.ggml.eot_token_id"] = (end_of_turn_id, gguf.GGUFValueType.UINT32)
    copy_gguf(reader, out, overrides=overrides, tensors=tensors)
    return {
        "name": base_name,
        "architecture": arch,
        "license": _field(reader, "general.license"),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token")),
    }


def copy_gguf(
    reader,
    out: Path,
    *,
    overrides: dict[str, tuple[Any, Any]] | None = None,
    drop: tuple[str, ...] = (),
    tensors: Iterator[tuple[str, np.ndarray]] | None = None,
) -> None:
    """Copy a GGUF with some metadata changed and, optionally, new tensors, atomically.

    :param reader: a `gguf.GGUFReader` of the file to copy.
    :param overrides: key -> (value, GGUFValueType) set or added; an array keeps its item type.
    :param drop: keys left out.
    :param tensors: (name, array) in the reader's tensor order; default: the reader's own.
    """
    import gguf

    overrides = dict(overrides or {})
    arch = reader.fields["general.architecture"].contents()
    tmp = out.with_name(f".{out.name}.part")
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        for field in reader.fields.values():
            # The writer adds the architecture and the GGUF.* header fields itself.
            if field.name == "general.architecture" or field.name.startswith("GGUF."):
                continue
            if field.name in drop:
                continue
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            value = field.contents()
            if field.name in overrides:
                value, value_type = overrides.pop(field.name)
            writer.add_key_value(field.name, value, value_type, sub_type=sub_type)
        for key, (value, value_type) in overrides.items():
            writer.add_key_value(key, value, value_type)
        if tensors is None:
            for tensor in reader.tensors:
                writer.add_tensor(
                    tensor.name,
                    tensor.data,
                    raw_shape=tensor.data.shape,
                    raw_dtype=tensor.tensor_type,
                )
        else:
            for tensor_name, array in tensors:
                raw_type = gguf.GGMLQuantizationType.F16 if array.dtype == np.float16 else None
                writer.add_tensor(tensor_name, array, raw_dtype=raw_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


def _field(reader, key: str):
    field = reader.fields.get(key)
    return field.contents() if field is not None else None


def _gguf_tensors(source: Path, reader, arch: str) -> Iterator[tuple[str, np.ndarray]]:
    """The base GGUF's tensors in order, each replaced by the trained one in GGUF layout.

    Checked before any is yielded: every trained tensor has a place in the GGUF (a tied
    output layer excepted), so a model that cannot be written whole fails before writing.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    if arch in TENSOR_PROCESSORS and arch not in _LAYOUTS:
        raise ExportError(
            f"{source}: minime exports students of llama, gemma2/gemma3 and plain-layout "
            f"GGUF architectures (qwen2, qwen3, phi3, ...); this base is '{arch}'"
        )
    config = AutoConfig.from_pretrained(source)
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config.to_dict())
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    to_hf = get_gguf_hf_weights_map(skeleton, processor)
    weights = _SafetensorsFolder(source)
    gguf_names = {t.name for t in reader.tensors}
    placed = {to_hf[name] for name in gguf_names if name in to_hf}
    tied = bool(getattr(config.get_text_config(), "tie_word_embeddings", False))
    unplaced = [
        name
        for name in weights.names
        if name not in placed and not (name.endswith("lm_head.weight") and tied)
    ]
    if unplaced:
        raise ExportError(
            f"{source}: {len(unplaced)} trained tensors have no place in the base GGUF "
            f"(first: {', '.join(unplaced[:3])}); was the student trained from another model?"
        )
    missing = sorted(to_hf[n] for n in gguf_names if n in to_hf and to_hf[n] not in weights)
    if missing:
        raise ExportError(f"{source}: tensors missing from the model files: {missing[:3]}")

    def generate() -> Iterator[tuple[str, np.ndarray]]:
        for tensor in reader.tensors:
            hf_name = to_hf.get(tensor.name)
            if hf_name is None:  # a GGUF-only tensor (e.g. rope frequencies): kept as it is
                yield tensor.name, _dequantized(tensor)
                continue
            trained = weights.get(hf_name)
            array = _to_gguf_layout(arch, tensor.name, trained, config)
            _check_inverse(processor, tensor, array, trained, source)
            yield tensor.name, _storage(tensor.name, array, source)

    return generate()


def _llama_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """Interleave rotary halves the way llama.cpp's converter does for llama Q and K."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _llama_layout(name: str, weights: np.ndarray, config) -> np.ndarray:
    if ".attn_q." in name:
        return _llama_permute(weights, config.num_attention_heads, config.num_attention_heads)
    if ".attn_k." in name:
        return _llama_permute(weights, config.num_attention_heads, config.num_key_value_heads)
    return weights


def _gemma_layout(name: str, weights: np.ndarray, config) -> np.ndarray:
    # Gemma's RMSNorm multiplies by (1 + weight); llama.cpp stores the 1 + weight.
    return weights + 1 if "norm.weight" in name else weights


#: GGUF architectures whose tensors llama.cpp lays out differently from transformers.
_LAYOUTS = {"llama": _llama_layout, "gemma2": _gemma_layout, "gemma3": _gemma_layout}


def _to_gguf_layout(arch: str, name: str, weights: np.ndarray, config) -> np.ndarray:
    layout = _LAYOUTS.get(arch)
    return layout(name, weights, config) if layout else weights


def _check_inverse(processor, tensor, array: np.ndarray, trained: np.ndarray, source) -> None:
    """Read the converted tensor back the way transformers reads GGUFs; it must match."""
    if tuple(reversed(array.shape)) != tuple(int(n) for n in tensor.shape):
        raise ExportError(
            f"{source}: {tensor.name} has shape {list(reversed(array.shape))} in GGUF order, "
            f"the base GGUF has {[int(n) for n in tensor.shape]}"
        )
    back = processor.process(weights=array, name=tensor.name).weights
    if not np.allclose(back, trained, rtol=0, atol=1e-5 * max(1.0, float(np.abs(trained).max()))):
        raise ExportError(
            f"{source}: {tensor.name}: the GGUF layout does not read back as the trained "
            "tensor; this architecture needs a layout minime does not know"
        )


def _storage(name: str, array: np.ndarray, source: Path) -> np.ndarray:
    """F32 for 1-D tensors (norms, as llama.cpp's converter keeps them) and out-of-range
    ones, F16 for the rest."""
    if not np.isfinite(array).all():
        raise ExportError(f"{source}: {name} holds NaN or infinite weights; training diverged")
    if array.ndim == 1 or (array.size and float(np.abs(array).max()) > _F16_MAX):
        return np.ascontiguousarray(array, dtype=np.float32)
    return np.ascontiguousarray(array, dtype=np.float16)


def _dequantized(tensor) -> np.ndarray:
    import gguf

    if tensor.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return np.asarray(tensor.data)
    return gguf.dequantize(tensor.data, tensor.tensor_type)


class _SafetensorsFolder:
    """The tensors of a Hugging Face folder (one file or an index of shards), read lazily."""

    def __init__(self, folder: Path) -> None:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self._files = {name: folder / file for name, file in weight_map.items()}
        elif (folder / "model.safetensors").is_file():
            from safetensors import safe_open

            with safe_open(folder / "model.safetensors", framework="pt") as handle:
                self._files = dict.fromkeys(handle.keys(), folder / "model.safetensors")
        else:
            raise ExportError(f"{folder}: no model.safetensors; is this a trained model folder?")
        self.names = sorted(self._files)

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def get(self, name: str) -> np.ndarray:
        from safetensors import safe_open

        with safe_open(self._files[name], framework="pt") as handle:
            return handle.get_tensor(name).float().numpy()


@contextmanager
def _quiet_llama_cpp() -> Iterator[None]:
    """Silence llama.cpp's per-tensor log lines while quantizing.

    CRITICAL, not ERROR: llama-cpp-python maps ggml's current WARN level to ERROR.
    """
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def quantize(f16: Path, out: Path, quant: str, threads: int | None = None) -> None:
    """Quantize an F16 GGUF with llama.cpp (`llama_model_quantize`), atomically.

    :raises ExportError: if llama.cpp fails.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[quant]
    params.nthread = threads or 0
    tmp = out.with_name(f".{out.name}.part")
    with _quiet_llama_cpp():
        status = llama_cpp.llama_model_quantize(str(f16).encode(), str(tmp).encode(), params)
    if status != 0:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{f16}: llama.cpp could not quantize it to {quant} (status {status})")
    os.replace(tmp, out)
