"""T5 with a copy head: the decoder may point at a source token instead of recalling it.

A pointer-generator head (See et al., 2017) on top of ``T5ForConditionalGeneration``. At each
decoding step the final decoder state scores every source position (a bilinear attention of its own,
separate from cross-attention), and a gate mixes two distributions over the vocabulary:

    p(token) = g * softmax(lm_logits)(token) + (1 - g) * sum(attention[i] for i where source[i] == token)

The model returns ``log p`` as its logits, so cross-entropy over them is the mixture's negative
log-likelihood and ``generate`` (greedy, beams) works unchanged. Copying a placeholder (``c17``,
``t3``, ``w5``) then only needs the head to find *where* it is written, not a vocabulary row that
has learnt to mean that number, which a small model trained from scratch on a CPU does not learn
within minutes.

The source token ids travel with the model inputs as ``source_ids`` (``input_ids`` by default);
``generate`` adds them itself, also when it is given ``encoder_outputs`` computed beforehand.

Serving: the PyTorch backends (fp32, autocast, dynamic INT8). ONNX export does not know the
architecture and refuses it with a clear error.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import Seq2SeqLMOutput

MODEL_TYPE = "t2sql_t5_copy"


class T5CopyConfig(T5Config):
    """A :class:`transformers.T5Config` whose model has a copy head."""

    model_type = MODEL_TYPE


class T5CopyForConditionalGeneration(T5ForConditionalGeneration):
    """T5 whose output distribution mixes generating from the vocabulary and copying from the source."""

    config_class = T5CopyConfig

    def __init__(self, config: T5Config):
        super().__init__(config)
        d = config.d_model
        self.copy_query = nn.Linear(d, d, bias=False)
        self.copy_key = nn.Linear(d, d, bias=False)
        self.copy_gate = nn.Linear(d, 1)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is getattr(self, "copy_gate", None):
            module.weight.data.normal_(0.0, 0.02)
            module.bias.data.zero_()
        elif module is getattr(self, "copy_query", None) or module is getattr(self, "copy_key", None):
            module.weight.data.normal_(0.0, self.config.d_model ** -0.5)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
                past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, cache_position=None,
                source_ids=None):
        if source_ids is None:
            source_ids = input_ids
        if source_ids is None:
            raise ValueError("a copy-head model needs the source token ids: pass input_ids or source_ids")
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self._shift_right(labels)
        out = super().forward(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, head_mask=head_mask, decoder_head_mask=decoder_head_mask,
            cross_attn_head_mask=cross_attn_head_mask, encoder_outputs=encoder_outputs,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds, labels=None, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=True, return_dict=True,
            cache_position=cache_position,
        )
        decoder_state = out.decoder_hidden_states[-1]
        encoder_state = out.encoder_last_hidden_state
        logits = self.mix(out.logits, decoder_state, encoder_state, source_ids, attention_mask)
        loss = None
        if labels is not None:
            loss = nn.functional.nll_loss(logits.reshape(-1, logits.size(-1)), labels.reshape(-1).to(logits.device),
                                          ignore_index=-100)
        return Seq2SeqLMOutput(
            loss=loss, logits=logits, past_key_values=out.past_key_values,
            decoder_hidden_states=out.decoder_hidden_states if output_hidden_states else None,
            decoder_attentions=out.decoder_attentions, cross_attentions=out.cross_attentions,
            encoder_last_hidden_state=out.encoder_last_hidden_state,
            encoder_hidden_states=out.encoder_hidden_states if output_hidden_states else None,
            encoder_attentions=out.encoder_attentions,
        )

    def mix(self, lm_logits: torch.Tensor, decoder_state: torch.Tensor, encoder_state: torch.Tensor,
            source_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Log-probabilities (batch, steps, vocab) of the generate/copy mixture, in fp32."""
        query = self.copy_query(decoder_state).float()
        key = self.copy_key(encoder_state).float()
        scores = torch.matmul(query, key.transpose(1, 2)) / math.sqrt(query.size(-1))
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask[:, None, :].to(scores.device) == 0, float("-inf"))
        attention = scores.softmax(dim=-1)
        gate = torch.sigmoid(self.copy_gate(decoder_state).float())
        probs = lm_logits.float().softmax(dim=-1) * gate
        index = source_ids.to(probs.device)[:, None, :].expand(-1, probs.size(1), -1)
        probs = probs.scatter_add(2, index, attention * (1.0 - gate))
        return probs.clamp_min(1e-9).log()

    def generate(self, inputs=None, **kwargs):
        if kwargs.get("source_ids") is None:
            source = inputs if inputs is not None else kwargs.get("input_ids")
            if source is None:
                raise ValueError("a copy-head model generates from input_ids (its source_ids)")
            kwargs["source_ids"] = source
        return super().generate(inputs, **kwargs)


def register() -> None:
    """Let ``AutoConfig`` / ``AutoModelForSeq2SeqLM`` load saved copy-head models (idempotent)."""
    try:
        AutoConfig.register(MODEL_TYPE, T5CopyConfig)
    except ValueError:
        pass
    try:
        AutoModelForSeq2SeqLM.register(T5CopyConfig, T5CopyForConditionalGeneration)
    except ValueError:
        pass


register()
