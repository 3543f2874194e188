"""Encoder-decoder backbones (T5): the paper's text-to-text protocol.

- Inputs: `[P'] source </s>` on the encoder only; the decoder and labels are untouched (as PEFT's
  PROMPT_TUNING does). T5's relative position bias sees the same distances for a row behind a
  left-padded (shorter) prompt as for the row alone, so per-row prompts need nothing more.
- Loss: teacher-forced cross-entropy of the target text, on fp32 logits.
- Rank scoring: ONE encoder pass; each row's encoder output is repeated once per label of its
  OWN table (sum over rows of C_row decoder rows, no padded label sets) and one decoder pass
  scores them all. Training is the case of one table.
- Generation: greedy `generate` on the prompted encoder input.
"""

from __future__ import annotations

import torch
from torch import nn

from ept.batching import Encoded
from ept.kinds.base import Kind, Labels, format_result, generated_result

TARGET_MAX_LENGTH = 128  # target tokens kept in training (T5 targets are a word or a short answer)


class Seq2SeqKind(Kind):
    name = "seq2seq"
    eval_modes = ("rank", "generate")
    auto_class = "AutoModelForSeq2SeqLM"
    peft_task_type = "SEQ_2_SEQ_LM"
    pre_layernorm = True  # T5 (and the decoder-only LMs, `CausalKind`, which inherit this)

    def prompt_stack(self, kwargs: dict):
        return self.model.backbone.get_encoder()(inputs_embeds=kwargs["inputs_embeds"], attention_mask=kwargs["attention_mask"])

    # ------------------------------------------------------------------ rows
    @staticmethod
    def encode(tokenizer, examples, max_length: int, spec=None, count_truncated: bool = True) -> Encoded:
        """The text-to-text source (cut at max_length) and its target ids per row (`count_truncated`:
        count the rows cut, one more tokenizer call; serving skips it)."""
        sources = [x.source for x in examples]
        full = tokenizer(sources, truncation=False)["input_ids"] if examples and count_truncated else []
        enc = tokenizer(sources, truncation=True, max_length=max_length) if examples else {}
        targets = tokenizer([x.target for x in examples], truncation=True, max_length=TARGET_MAX_LENGTH)["input_ids"] \
            if examples else []
        features = [{**{k: enc[k][i] for k in enc.keys()}, "labels": targets[i], "index": i} for i in range(len(examples))]
        return Encoded(features, sum(len(ids) > max_length for ids in full))

    def label_table(self, texts, eos: bool = True) -> torch.Tensor:
        """(C, T) token ids of each label text (with T5's </s>), padded with -100."""
        tok = self.model.tokenizer(list(texts), padding=True, return_tensors="pt")
        return tok["input_ids"].masked_fill(tok["attention_mask"] == 0, -100)

    # ------------------------------------------------------------------ training and scoring
    def loss(self, batch: dict) -> torch.Tensor:
        """The model's own loss (mean token cross-entropy), computed here on fp32 logits: a bf16
        backbone's would otherwise be taken in bf16 (ept.precision)."""
        labels = batch["labels"].contiguous()
        decoder_input_ids = self.model.backbone.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = self.model.backbone(**self.model.build_inputs(batch), decoder_input_ids=decoder_input_ids).logits
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)

    def rank_scores(self, batch: dict, labels: Labels, prompt=None, prompt_mask=None) -> torch.Tensor:
        """(B, C_max) summed log p(label | input) of each row's own labels: one encoder pass, one
        decoder pass over every (row, label) pair."""
        kwargs = self.model.build_inputs(batch, prompt, prompt_mask)
        enc = self.model.backbone.get_encoder()(inputs_embeds=kwargs["inputs_embeds"], attention_mask=kwargs["attention_mask"])
        rep, within, ids, scores = labels.pairs(enc.last_hidden_state.device)
        scores[rep, within] = self.sequence_loglik(enc.last_hidden_state[rep], kwargs["attention_mask"][rep], ids)
        return scores

    def sequence_loglik(self, hidden: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed log p(labels_r | encoder output r) per row, (R,): one decoder pass.

        hidden (R, n+L, e) and mask (R, n+L) from the encoder; labels (R, T) padded with -100.
        Decoder inputs are the labels shifted right, as `labels=` would make them, but without
        `labels=` the model skips its own cross-entropy: a second full softmax over the vocabulary
        that nobody reads (on a small T5 it was 30% of rank classification).
        """
        labels = labels.contiguous()
        decoder_input_ids = self.model.backbone.prepare_decoder_input_ids_from_labels(labels=labels)
        out = self.model.backbone(encoder_outputs=(hidden,), attention_mask=mask, decoder_input_ids=decoder_input_ids)
        logp = out.logits.float().log_softmax(-1)  # (R, T, V)
        valid = labels != -100
        tok = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid  # (R, T)
        return tok.sum(-1)

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 20, prompt=None, prompt_mask=None) -> list[str]:
        kwargs = self.model.build_inputs(batch, prompt, prompt_mask)
        out = self.model.backbone.generate(**kwargs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        return [s.strip() for s in self.model.tokenizer.batch_decode(out, skip_special_tokens=True)]

    # ------------------------------------------------------------------ serving
    def prepare_task(self, task) -> str:
        if task.scorer.eval_mode == "rank":
            task.scorer.label_ids()  # tokenised once, now
        return task.scorer.eval_mode

    def serve(self, server, features, tasks):
        """Rank rows in one pass (each against its own task's labels); generate-mode rows in one
        greedy pass per max_new_tokens."""
        results: list[dict | None] = [None] * len(features)
        rank = [i for i, t in enumerate(tasks) if t.mode == "rank"]
        if rank:
            sub_tasks = [tasks[i] for i in rank]
            labels = Labels.of_tasks(sub_tasks, lambda t: t.scorer.label_ids())
            scores = self.served_rank_scores(server, [features[i] for i in rank], sub_tasks, labels)
            for j, i in enumerate(rank):
                results[i] = format_result(tasks[i], scores[j, : len(tasks[i].scorer.label_texts)].tolist(), features[i]["index"])
        by_len: dict[int, list[int]] = {}
        for i, t in enumerate(tasks):
            if t.mode == "generate":
                by_len.setdefault(t.scorer.max_new_tokens(), []).append(i)
        for max_new, sel in by_len.items():
            texts = self.served_generate(server, [features[i] for i in sel], [tasks[i] for i in sel], max_new)
            for i, text in zip(sel, texts):
                results[i] = generated_result(tasks[i], text)
        return results

    def served_rank_scores(self, server, features, tasks, labels: Labels) -> torch.Tensor:
        batch, prompt, mask = server.inputs(features, tasks)
        return self.rank_scores(batch, labels, prompt, mask)

    def served_generate(self, server, features, tasks, max_new: int) -> list[str]:
        batch, prompt, mask = server.inputs(features, tasks)
        return self.generate(batch, max_new, prompt, mask)
