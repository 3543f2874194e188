"""Compute precision, threads and `torch.compile` of a run: how fast the frozen backbone goes.

`--precision auto` (the default) picks bf16 only where BOTH hold:
- the hardware has fast bf16 arithmetic: a CUDA device with bf16 support, or a CPU with AMX tiles
  or AVX-512-BF16 (`torch.cpu._is_amx_tile_supported` / `_is_avx512_bf16_supported`; torch's
  `get_cpu_capability()` stops at "AVX512" and does not say);
- the backbone is pre-LN (`Kind.pre_layernorm`: `causal`, `seq2seq`): every block normalises its input, so bf16's 8-bit
  mantissa is rounding noise, not a change of the model. Post-LN encoders (BERT, MiniLM) stay fp32;
- the run does not tune a prompt on a frozen backbone. A prompt of norm 1e4 (EPT's, at lr 0.3)
  sits in the residual stream where bf16's spacing (~1e4 / 2^8 = 40) exceeds what a layer adds to
  it: measured on SmolLM2 (docs/results-smollm2.md, stage A), bf16 flipped 22 of 300 of a 200-step
  EPT prompt's predictions (fp32 62.3 -> bf16 60.3) and 4 of 300 of a PT prompt's. So a prompt
  run's result would depend on the machine `auto` resolved on; prompt methods get fp32, and bf16
  only when asked for (`--precision bf16`). ft / lora / ia3 and the frozen model alone keep bf16.
Otherwise fp32. fp16 is never picked: its range ends at 65504, under EPT's prompt values.
On the AVX2-only EPYC of benchmarks/RESULTS.md §7, bf16 measured 17-20x SLOWER than fp32 (no
native bf16 matmul), so there `auto` = fp32, and an explicit `bf16` is an error unless
`--precision-fallback` asks for fp32 with a warning.

What runs in low precision: a frozen backbone is cast ONCE to bf16/fp16 (no optimizer state, and
autocast would re-cast every frozen weight at every op: its cast cache keeps only trainable
leaves); the prompt and its encoder stay fp32 (parameters and AdamW state) and are cast at the
concatenation (`ept.kinds.base.prepend_prompt`); logits are cast to fp32 before every loss. A
trainable backbone (ft, lora, ia3) keeps fp32 weights and runs under `torch.autocast` instead.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from ept.kinds import KINDS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # TrainConfig.dtype -> precision


class PrecisionError(ValueError):
    """A precision this hardware cannot run fast, asked for without a fallback."""


def fast_low_precision(device: torch.device, dtype: str = "bf16") -> tuple[bool, str]:
    """(whether `device` has native `dtype` arithmetic, the hardware in words for messages)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        ok = torch.cuda.is_bf16_supported() if dtype == "bf16" else True
        return ok, f"CUDA {name}"
    cpu = torch.cpu
    capability = torch.backends.cpu.get_cpu_capability()
    amx = getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    if dtype == "bf16":
        ok = amx or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    else:  # fp16 on CPU: AMX-FP16 only
        ok = getattr(cpu, "_is_amx_fp16_supported", lambda: False)()
    flags = [f for f, on in (("AMX", amx), ("AVX512-BF16", getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()))
             if on]
    return ok, f"CPU with {capability}" + (f" + {', '.join(flags)}" if flags else f" (no AMX, no AVX512-BF16)")


def resolve_precision(requested: str, device: torch.device, kind: str, dtype: str = "float32",
                      fallback: bool = False, warn=None, prompt: bool = False) -> str:
    """The precision a run computes in: "fp32" | "bf16" | "fp16" (see the module docstring).
    `dtype` is TrainConfig.dtype (the backbone's storage): a low one under `auto` is taken as the
    precision, as before `--precision` existed. `prompt`: a soft prompt on a frozen backbone, which
    `auto` keeps in fp32."""
    if requested == "auto":
        if dtype != "float32":
            return DTYPE_NAMES[dtype]
        fast = KINDS.get(kind).pre_layernorm and not prompt and fast_low_precision(device, "bf16")[0]
        return "bf16" if fast else "fp32"
    return _explicit(requested, device, fallback, warn)


def _explicit(requested: str, device: torch.device, fallback: bool, warn) -> str:
    """An explicit precision: itself where the hardware runs it fast, else PrecisionError (or fp32
    with a warning under `fallback`)."""
    if requested not in DTYPES:
        raise ValueError(f"precision={requested!r} is not allowed; allowed: auto, {', '.join(DTYPES)}")
    if requested == "fp32":
        return "fp32"
    ok, hardware = fast_low_precision(device, requested)
    if ok:
        return requested
    message = f"precision={requested}: this hardware ({hardware}) has no native {requested} arithmetic"
    if not fallback:
        raise PrecisionError(f"{message}, so {requested} would run several times slower than fp32 (measured 17-20x "
                             f"on an AVX2 CPU); use --precision fp32 (or auto), or --precision-fallback true to "
                             f"fall back to fp32 with a warning")
    (warn or warnings.warn)(f"{message}; falling back to fp32 (--precision-fallback)")
    return "fp32"


def check_hardware(requested: str, device: torch.device, fallback: bool = False) -> None:
    """Refuse an explicit low precision this hardware cannot run fast (PrecisionError) before a run
    folder is made or a backbone loads; `auto` and fp32 always pass, and the fallback warns later."""
    if requested not in ("auto", "fp32"):
        _explicit(requested, device, fallback, warn=lambda message: None)


def apply_precision(model, requested: str, dtype: str = "float32", fallback: bool = False, warn=None) -> str:
    """Resolve the precision for this model and device, cast a frozen backbone once to it (a
    trainable one stays fp32, under autocast), and record it as `model.precision`."""
    device = next(model.parameters()).device
    prompt = model.prompt_config.has_prompt and not _trains_backbone(model)
    precision = resolve_precision(requested, device, model.kind, dtype, fallback, warn, prompt=prompt)
    if precision != "fp32" and not _trains_backbone(model):
        model.backbone.to(DTYPES[precision])
    model.precision, model.compiled = precision, False
    return precision


def _trains_backbone(model) -> bool:
    return any(p.requires_grad for p in model.backbone.parameters())


def autocast(model, precision: str):
    """`torch.autocast` for a trainable backbone in low precision; nothing otherwise (a frozen
    backbone already holds low-precision weights and the fp32 prompt must stay fp32)."""
    if precision == "fp32" or not _trains_backbone(model):
        return contextlib.nullcontext()
    device = next(model.backbone.parameters()).device
    return torch.autocast(device.type, dtype=DTYPES[precision])


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads: `threads`; None or 0 leave torch's own default. Returns the count.
    `ept train` defaults to 1 (TrainConfig.threads): with other jobs on few cores, OpenMP threads
    spin-wait on each other (measured in benchmarks/RESULTS.md §7)."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def compile_backbone(model, warmup, backend="inductor", warn=None) -> bool:
    """`torch.compile` the backbone's base model in place (`nn.Module.compile`: same module, same
    state_dict keys; the base model because the causal path calls it directly) and run `warmup()`
    at once: compilation is lazy, so its errors show at the first call, not here. On any error,
    warn naming it and run eager. The RNG and gradients are left as they were (a resumed run stays
    exact). Returns whether the backbone runs compiled."""
    module = model.backbone.base_model
    rng = torch.get_rng_state()
    try:
        module.compile(backend=backend)
        warmup()
        return True
    except Exception as err:  # any compiler error (missing C compiler, unsupported op, ...): eager still works
        module._compiled_call_impl = None  # what nn.Module.compile set: the module's own forward again
        (warn or warnings.warn)(f"torch.compile failed ({_describe(err)}); running eager")
        return False
    finally:
        torch.set_rng_state(rng)
        model.zero_grad(set_to_none=True)


def _describe(err: BaseException) -> str:
    """`Type: first line` of an error and of its root cause (dynamo wraps the compiler's error)."""
    def line(e):
        text = str(e).strip()
        return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"
    root = err
    while root.__cause__ is not None or getattr(root, "inner_exception", None) is not None:
        root = root.__cause__ or root.inner_exception
    return line(err) if root is err else f"{line(err)} <- {line(root)}"
