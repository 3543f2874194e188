"""Decoder-only (causal LM) backbones: inputs, loss and scoring for prompt tuning.

A row is laid out as `[BOS] [P'] [source + answer cue] [target + EOS]` (BOS only where the
tokenizer adds one, or a `--sink-token`; `causal_inputs`). The T5 text-to-text source is used as it is,
followed by `ANSWER_CUE`; the target is the T5 target word with a leading space (how a BPE LM
spells a word after a colon) and EOS, so greedy generation knows where to stop.

- Training: next-token cross-entropy on the target tokens only, over the full vocabulary (T5's
  text-to-text loss). The LM head runs only at the positions that predict a target token: a
  (B, T, vocab) tensor is never built (SmolLM2's vocabulary is 49,152 words).
- Rank classification: ONE pass over [BOS][P'][source] with the KV cache; the first label token
  is scored from the last position, the rest of each label by a short continuation pass over
  the cache gathered once per (row, label). The prefix is never recomputed.
- Generation: greedy decoding over the same cache, stopping at EOS or a newline.
- Serving: [BOS][P'] does not depend on the input, so its keys and values are computed once per
  task (`prompt_kv`) and each pass runs only the inputs over the rows' gathered caches
  (`cached_prefix_pass`); the scores equal the uncached pass's (tests/test_serve.py).

Positions always come from the attention mask, so padding on either side and masked prompt
slots leave every row's rotary positions exactly as when it runs alone (tests/test_causal.py).
The greedy loop is written here rather than calling `generate` because `generate` with
`inputs_embeds` derives positions from the mask differently across transformers versions, and
rank scoring needs the same cache anyway.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from ept.batching import Encoded
from ept.kinds.base import Kind, Labels, prompts_first
from ept.kinds.seq2seq import Seq2SeqKind

from ept.tasks.spec import T5_ANSWER_CUE as ANSWER_CUE  # after the T5 source; targets start with a space: " positive"


# ------------------------------------------------------------------------------ encoding
def target_ids(tokenizer, text: str, eos: bool = True) -> list[int]:
    ids = tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"label/target {text!r} tokenizes to nothing with this tokenizer")
    return ids + ([tokenizer.eos_token_id] if eos and tokenizer.eos_token_id is not None else [])


def encode_causal(tokenizer, examples, max_length: int, cue: str = ANSWER_CUE) -> Encoded:
    """Source + cue (no special tokens: BOS is added with the prompt) and target ids per row.
    The source is cut on the right to fit `max_length` with the cue kept whole. `cue` is the task
    template's (`TaskSpec.answer_cue`): T5 sources take "\nAnswer:", a natural template ends in its own."""
    cue = tokenizer(cue, add_special_tokens=False)["input_ids"] if cue else []
    if max_length <= len(cue):
        raise ValueError(f"max_length={max_length} leaves no room for the input after the {len(cue)}-token answer cue")
    sources = tokenizer([x.source for x in examples], add_special_tokens=False)["input_ids"] if examples else []
    features, truncated = [], 0
    for i, (x, ids) in enumerate(zip(examples, sources)):
        room = max_length - len(cue)
        truncated += len(ids) > room
        ids = ids[:room] + cue
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": target_ids(tokenizer, x.target) if x.target else None, "index": i})
    return Encoded(features, truncated)


def causal_inputs(model, embeds: torch.Tensor, mask: torch.Tensor) -> dict:
    """Decoder-only: [BOS] [P'] [input], BOS only where the tokenizer adds one (else the sink token,
    if any; `PromptedModel.lead_token_id`); inputs are tokenised without special tokens. Position ids
    come from the mask, so a row has the same rotary positions alone, right-padded, left-padded, or
    behind a masked (shorter) prompt in a mixed-task batch: masked slots are skipped, not counted."""
    lead = model.lead_token_id
    if lead is not None:
        B = embeds.shape[0]
        lead_ids = torch.full((B, 1), lead, dtype=torch.long, device=embeds.device)
        embeds = torch.cat([model.backbone.get_input_embeddings()(lead_ids).to(embeds.dtype), embeds], dim=1)
        mask = torch.cat([mask.new_ones(B, 1), mask], dim=1)
    position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)
    return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": position_ids}


# ------------------------------------------------------------------------------ passes
def _run(model, **kwargs):
    """The base model (no LM head) with the KV cache under this transformers version's name for it
    (`cache` from 5.x, `past_key_values` before). A model with sliding-window layers gets its masks
    from `window_masks` and a cache that keeps every key (the masks do the windowing)."""
    from transformers import DynamicCache

    base = model.backbone.base_model
    window = sliding_window(model.backbone.config)
    if window is not None:
        impl = getattr(model.backbone.config, "_attn_implementation", None) or "eager"
        if impl not in ("eager", "sdpa"):  # flash kernels take no mask: they would count slots again
            raise ValueError(f"a sliding-window model runs with attn_implementation eager or sdpa here (its window "
                             f"is applied by masks, in positions), not {impl!r}")
        if kwargs.get("use_cache") and kwargs.get("cache") is None:
            kwargs["cache"] = DynamicCache()  # no config: full layers, nothing dropped by slot count
        queries = kwargs["inputs_embeds"].shape[1]
        kwargs["attention_mask"] = window_masks(kwargs["attention_mask"], queries, window, kwargs["inputs_embeds"].dtype)
    if "cache" in kwargs and "cache" not in inspect.signature(base.forward).parameters:
        kwargs["past_key_values"] = kwargs.pop("cache")
    out = base(**kwargs)
    return out.last_hidden_state, getattr(out, "cache", None) or getattr(out, "past_key_values", None)


def sliding_window(config) -> int | None:
    """The window of a model that mixes sliding-window and full attention layers (Gemma 2/3:
    `layer_types` names them), else None."""
    types = getattr(config, "layer_types", None) or ()
    return getattr(config, "sliding_window", None) if "sliding_attention" in types else None


def window_masks(mask: torch.Tensor, queries: int, window: int, dtype) -> dict:
    """Additive attention masks (B, 1, Q, K) for the full and the sliding-window layers, from the
    key mask (B, K) of cache + input (the Q queries are its last slots).

    transformers counts a sliding window in slots (`masking_utils.sliding_window_overlay`:
    kv_idx > q_idx - window), pads included, so in a padded batch a short row's sliding layers
    lose keys they see when the row runs alone (BOS and the prompt first). Here the window is
    counted in positions, which come from the mask as everywhere in this module: a key is seen
    when it is real, not after the query, and less than `window` positions before it. Every query
    also sees itself, so a pad query never attends to nothing (a NaN the next layer would spread)."""
    K = mask.shape[1]
    real = mask.bool()
    pos = mask.long().cumsum(1) - 1  # (B, K)
    q_slot = torch.arange(K - queries, K, device=mask.device)
    k_slot = torch.arange(K, device=mask.device)
    causal = k_slot[None, :] <= q_slot[:, None]  # (Q, K)
    itself = k_slot[None, :] == q_slot[:, None]
    full = causal[None] & real[:, None, :]  # (B, Q, K)
    near = pos[:, -queries:, None] - pos[:, None, :] < window
    lowest = torch.finfo(dtype).min

    def additive(allowed):
        return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill(~(allowed | itself), lowest)[:, None]

    return {"full_attention": additive(full), "sliding_attention": additive(full & near)}


def lm_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on selected hidden states only, fp32 (with Gemma's logit soft-capping if set)."""
    logits = model.backbone.get_output_embeddings()(hidden).float()
    cap = getattr(model.backbone.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last attended position (works for left and right padding)."""
    pos = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * (pos + 1)).argmax(1)


def target_loss(model, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens of the batch."""
    labels = batch["labels"]  # (B, T) padded with -100
    ids = torch.cat([batch["input_ids"], labels.clamp(min=0)], dim=1)
    mask = torch.cat([batch["attention_mask"], (labels != -100).to(batch["attention_mask"].dtype)], dim=1)
    kwargs = model.build_inputs({"input_ids": ids, "attention_mask": mask})
    hidden, _ = _run(model, **kwargs)  # (B, S, e)
    S, T = hidden.shape[1], labels.shape[1]
    # Target token j >= 1 sits at S - T + j and is predicted from the position before it; token 0
    # from the source's last attended position (right padding puts pads between the two).
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    last_src = _last_index(kwargs["attention_mask"][:, : S - T])
    before = torch.cat([hidden[rows, last_src].unsqueeze(1), hidden[:, S - T: S - 1]], dim=1)  # (B, T, e)
    valid = labels != -100
    return nn.functional.cross_entropy(lm_logits(model, before[valid]), labels[valid])


def prefix_pass(model, batch: dict, prompt=None, prompt_mask=None) -> dict:
    """[BOS][P'][source] once, with the cache: log p(next token) at the last position (B, V)."""
    kwargs = model.build_inputs(batch, prompt, prompt_mask)
    hidden, cache = _run(model, **kwargs, use_cache=True)
    return _prefix_result(model, hidden, cache, kwargs["attention_mask"], kwargs["position_ids"])


def _prefix_result(model, hidden, cache, mask, position_ids) -> dict:
    """What the continuation and greedy passes need from a prefix pass. `hidden` covers the last
    hidden.shape[1] positions of `mask` (all of them, or only the input after a cached prompt)."""
    last = _last_index(mask)
    rows = torch.arange(len(last), device=last.device)
    at = last - (mask.shape[1] - hidden.shape[1])  # the input always ends past the prompt (answer cue)
    return {"logp": lm_logits(model, hidden[rows, at]).log_softmax(-1),
            "cache": cache, "mask": mask, "pos": position_ids[rows, last]}


# ------------------------------------------------------------------------------ prompt KV cache
# [BOS][P'] opens every row of a task and a causal model's keys and values at a position depend
# only on the positions before it, so they are the same for every input: a server computes them
# once per task (`prompt_kv`) and runs only the input over them (`cached_prefix_pass`). Rotary
# positions are already applied to cached keys; the input continues at position m (the prompt's
# length), exactly as in the uncached pass, whose masked prompt slots come after the real ones
# (ept.kinds.base.prompts_first) just as the zero-padded slots of a gathered cache do.
def _layer_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


@torch.no_grad()
def prompt_kv(model, prompt: torch.Tensor) -> torch.Tensor:
    """Keys and values of [BOS][P'] for one task's prompt P' (n, e): (layers, 2, kv_heads, m, head_dim),
    m = n (+1 with BOS), in the backbone's dtype. Sliding-window layers (Gemma 3) keep every key
    too: their window is applied by `window_masks`, in positions."""
    weight = model.backbone.get_input_embeddings().weight
    embeds = prompt.to(weight.device, weight.dtype).unsqueeze(0)  # (1, n, e)
    kwargs = causal_inputs(model, embeds, torch.ones(1, embeds.shape[1], dtype=torch.long, device=weight.device))
    _, cache = _run(model, **kwargs, use_cache=True)
    return torch.stack([torch.stack([k[0], v[0]]) for k, v in _layer_kv(cache)])


def gather_prompt_kv(kvs: list[torch.Tensor], rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row caches from the distinct tasks' `prompt_kv`s and each row's index into them:
    (B, layers, 2, kv_heads, m_max, head_dim), real positions first then zeros, and the mask (B, m_max)."""
    m = torch.tensor([kv.shape[3] for kv in kvs], device=rows.device)
    m_max = int(m.max())
    table = torch.stack([nn.functional.pad(kv, (0, 0, 0, m_max - kv.shape[3])) for kv in kvs])
    mask = (torch.arange(m_max, device=rows.device) < m.unsqueeze(1)).long()
    return table[rows], mask[rows]


def cached_prefix_pass(model, batch: dict, kv: torch.Tensor, kv_mask: torch.Tensor) -> dict:
    """`prefix_pass` with [BOS][P'] already cached (`gather_prompt_kv`): only the input runs."""
    from transformers import DynamicCache

    cache = DynamicCache()  # no config: every layer keeps every key (sliding windows: `window_masks`)
    for layer in range(kv.shape[1]):
        cache.update(kv[:, layer, 0], kv[:, layer, 1], layer)
    mask = torch.cat([kv_mask.to(batch["attention_mask"]), batch["attention_mask"]], dim=1)
    position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)  # as causal_inputs
    embeds = model.backbone.get_input_embeddings()(batch["input_ids"])
    hidden, cache = _run(model, inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids[:, kv.shape[4]:],
                         cache=cache, use_cache=True)
    return _prefix_result(model, hidden, cache, mask, position_ids)


def continuation_loglik(model, prefix: dict, rep: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log p(labels_r | prefix of row rep[r]) for R (row, label) pairs, (R,).

    labels (R, T) padded with -100. Token 1 is scored from the prefix's last position; tokens
    2..T from one pass over tokens 1..T-1 on the prefix cache gathered by `rep` (consumed)."""
    labels = labels.to(rep.device)
    valid = labels != -100
    tok = labels.clamp(min=0)
    first = prefix["logp"][rep].gather(1, tok[:, :1]).squeeze(1)  # (R,)
    if labels.shape[1] == 1:
        return first
    cache = prefix["cache"]
    cache.batch_select_indices(rep)
    steps = labels.shape[1] - 1
    mask = torch.cat([prefix["mask"][rep], valid[:, :steps].to(prefix["mask"].dtype)], dim=1)
    pos = prefix["pos"][rep].unsqueeze(1) + 1 + torch.arange(steps, device=rep.device)
    embeds = model.backbone.get_input_embeddings()(tok[:, :steps])
    hidden, _ = _run(model, inputs_embeds=embeds, attention_mask=mask, position_ids=pos, cache=cache,
                     use_cache=True)  # (R, T-1, e)
    rest_valid = valid[:, 1:]
    rest = torch.zeros(rest_valid.shape, device=rep.device)
    rest[rest_valid] = lm_logits(model, hidden[rest_valid]).log_softmax(-1).gather(
        1, tok[:, 1:][rest_valid].unsqueeze(1)).squeeze(1)
    return first + rest.sum(1)


@functools.lru_cache(maxsize=8)
def _stop_ids(tokenizer) -> frozenset[int]:
    """EOS plus every vocabulary token whose text holds a newline (the answer ends there)."""
    stops = {i for tok, i in tokenizer.get_vocab().items() if "\n" in tokenizer.convert_tokens_to_string([tok])}
    if tokenizer.eos_token_id is not None:
        stops.add(tokenizer.eos_token_id)
    return frozenset(stops)


@torch.no_grad()
def greedy_generate(model, batch: dict, max_new_tokens: int, prompt=None, prompt_mask=None) -> list[str]:
    return greedy_decode(model, prefix_pass(model, batch, prompt, prompt_mask), max_new_tokens)


@torch.no_grad()
def greedy_decode(model, prefix: dict, max_new_tokens: int) -> list[str]:
    """Greedy continuation of a prefix pass (cached or not) until EOS or a newline."""
    tok = model.tokenizer
    logp, cache, mask, pos = prefix["logp"], prefix["cache"], prefix["mask"], prefix["pos"]
    stops = torch.tensor(sorted(_stop_ids(tok)), device=mask.device)
    B = mask.shape[0]
    done = torch.zeros(B, dtype=torch.bool, device=mask.device)
    out: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        nxt = logp.argmax(-1)
        out.append(torch.where(done, stops[0], nxt))
        done |= torch.isin(nxt, stops)
        if bool(done.all()):
            break
        mask, pos = torch.cat([mask, mask.new_ones(B, 1)], dim=1), pos + 1
        hidden, cache = _run(model, inputs_embeds=model.backbone.get_input_embeddings()(nxt[:, None]),
                             attention_mask=mask, position_ids=pos[:, None], cache=cache, use_cache=True)
        logp = lm_logits(model, hidden[:, -1]).log_softmax(-1)
    texts = []
    stop_set = _stop_ids(tok)
    for row in torch.stack(out, 1).tolist() if out else [[] for _ in range(B)]:
        keep = []
        for t in row:
            if t in stop_set:
                break
            keep.append(t)
        texts.append(tok.decode(keep, skip_special_tokens=True).strip())
    return texts


# ------------------------------------------------------------------------------ label tables
def label_id_table(tokenizer, texts, eos: bool = True) -> torch.Tensor:
    """(C, T) token ids of each label continuation (space + word + EOS; without EOS if not `eos`),
    padded with -100."""
    rows = [target_ids(tokenizer, t, eos) for t in texts]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-100] * (width - len(r)) for r in rows])


def rank_scores(model, batch: dict, label_ids: torch.Tensor, prompt=None, prompt_mask=None) -> torch.Tensor:
    """(B, C) summed label log-likelihoods of one label table for every row (`CausalKind.rank_scores`)."""
    return model.kind_ops.rank_scores(batch, Labels.one(label_ids, batch["input_ids"].shape[0]), prompt, prompt_mask)


# ------------------------------------------------------------------------------ the kind
class CausalKind(Seq2SeqKind):
    """Decoder-only: rows and scores as above. Rank scoring is ONE prefix pass over
    [BOS][P'_row][input] for every row, then the labels of each row's own table as continuations;
    generation is greedy on the same cache.

    Serving: with `prefix_cache` (the default) the keys/values of [BOS][P'] are computed once per
    task, when it is added (`ServedTask.prefix_kv`), and a pass gathers them per row and runs only
    the inputs; without it, every pass recomputes the prompt positions. The two give the same
    scores. The caches live in a capped LRU (`ept.kinds.prefixcache`): an evicted one is recomputed on
    next use; a pass with a task that has no cache (its cache alone over the cap) runs uncached."""

    name = "causal"
    auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    lead_token = True
    label_eos = True

    def prompt_stack(self, kwargs: dict):
        return Kind.prompt_stack(self, kwargs)  # the whole decoder, not Seq2SeqKind's encoder

    @staticmethod
    def prepare_tokenizer(tokenizer, name: str) -> None:
        """Many causal LMs ship without a pad token. Pads are always masked (and positions come
        from the mask), so any id works; EOS is the usual choice."""
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(f"backbone {name!r}: the tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token

    @staticmethod
    def encode(tokenizer, examples, max_length: int, spec=None, count_truncated: bool = True) -> Encoded:
        return encode_causal(tokenizer, examples, max_length, getattr(spec, "answer_cue", ANSWER_CUE))

    def build_inputs(self, batch: dict, prompt=None, prompt_mask=None) -> dict:
        if prompt is not None and prompt_mask is not None:
            prompt, prompt_mask = prompts_first(prompt, prompt_mask)  # no masked slot at position 0
        kwargs = super().build_inputs(batch, prompt, prompt_mask)
        return causal_inputs(self.model, kwargs["inputs_embeds"], kwargs["attention_mask"])

    def label_table(self, texts, eos: bool = True) -> torch.Tensor:
        return label_id_table(self.model.tokenizer, texts, eos)

    def loss(self, batch: dict) -> torch.Tensor:
        return target_loss(self.model, batch)

    def rank_scores(self, batch: dict, labels: Labels, prompt=None, prompt_mask=None) -> torch.Tensor:
        return self.scores_after(prefix_pass(self.model, batch, prompt, prompt_mask), labels)

    def scores_after(self, prefix: dict, labels: Labels) -> torch.Tensor:
        """(B, C_max) summed log-likelihoods of each row's own labels after a prefix pass."""
        rep, within, ids, scores = labels.pairs(prefix["logp"].device)
        scores[rep, within] = continuation_loglik(self.model, prefix, rep, ids)
        return scores

    def generate(self, batch: dict, max_new_tokens: int, prompt=None, prompt_mask=None) -> list[str]:
        return greedy_generate(self.model, batch, max_new_tokens, prompt, prompt_mask)

    # ------------------------------------------------------------------ serving
    def __init__(self, model, prefix_cache: bool = True, prefix_cache_bytes: int | None = None, warn=None):
        from ept.kinds.prefixcache import PrefixCache

        super().__init__(model, prefix_cache, prefix_cache_bytes, warn)
        if prefix_cache:  # capped, least recently used evicted and recomputed on next use
            self.cache = PrefixCache(lambda task: prompt_kv(self.model, task.prompt), prefix_cache_bytes, warn)

    def prepare_task(self, task) -> str:
        mode = super().prepare_task(task)
        if self.cache is not None:
            self.cache.add(task)
        return mode

    def served_prefix(self, server, features, tasks) -> dict:
        distinct = list({t.name: t for t in tasks}.values())  # the pass's distinct tasks, in order of first row
        kvs = self.cache.lookup(distinct) if self.cache is not None else None
        if kvs is None:
            batch, prompt, mask = server.inputs(features, tasks)
            return prefix_pass(self.model, batch, prompt, mask)
        order = {t.name: i for i, t in enumerate(distinct)}
        kv, kv_mask = gather_prompt_kv(kvs, torch.tensor([order[t.name] for t in tasks], device=kvs[0].device))
        return cached_prefix_pass(self.model, server.collate(features), kv, kv_mask)

    def served_rank_scores(self, server, features, tasks, labels: Labels) -> torch.Tensor:
        return self.scores_after(self.served_prefix(server, features, tasks), labels)

    def served_generate(self, server, features, tasks, max_new: int) -> list[str]:
        return greedy_decode(self.model, self.served_prefix(server, features, tasks), max_new)
