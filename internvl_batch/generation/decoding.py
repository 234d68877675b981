"""The decoding settings of every `generate` call: ours only, never the checkpoint's.

transformers fills every field of the `GenerationConfig` we pass that is still `None` from the model's own
`generation_config`, which `from_pretrained` reads from the checkpoint's `generation_config.json` (repetition
penalty, sampling, `no_repeat_ngram_size`, suppressed tokens, a static cache, ...). A greedy job must be greedy
whatever a checkpoint ships, so:

- `neutral_generation_defaults(model)` replaces the model's `generation_config` with the library's defaults
  when it is loaded (fields whose only "off" value is `None`, such as `min_p` or `suppress_tokens`, then
  have nothing to inherit);
- `decoding_config(...)` sets every field that changes which tokens come out to its "off" value unless our
  config asks for it.
"""

from __future__ import annotations

from internvl_batch.config import GenerationConfig

# Decoding controls we never use, at the values that switch them off (transformers' global defaults).
_OFF = dict(
    num_beams=1,
    num_beam_groups=1,
    num_return_sequences=1,
    diversity_penalty=0.0,
    repetition_penalty=1.0,
    encoder_repetition_penalty=1.0,
    length_penalty=1.0,
    no_repeat_ngram_size=0,
    encoder_no_repeat_ngram_size=0,
    typical_p=1.0,
    epsilon_cutoff=0.0,
    eta_cutoff=0.0,
    renormalize_logits=False,
    remove_invalid_values=False,
    guidance_scale=1.0,
    use_cache=True,
    output_scores=False,
    output_logits=False,
    output_attentions=False,
    output_hidden_states=False,
    return_dict_in_generate=False,
)


def decoding_config(generation: GenerationConfig, new_tokens: int, stop_token_id: int, pad_token_id: int):
    """A transformers `GenerationConfig` for one micro-batch: greedy (or our sampling settings), at most
    `new_tokens` tokens, stopping at `stop_token_id`."""
    from transformers import GenerationConfig as HFGenerationConfig

    g = generation
    if g.do_sample:
        sampling = dict(temperature=g.temperature, top_p=g.top_p, top_k=g.top_k)
    else:  # unused by greedy search; transformers' defaults, so that it has nothing to warn about
        sampling = dict(temperature=1.0, top_p=1.0, top_k=50)
    return HFGenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=min(g.min_new_tokens, new_tokens),
        do_sample=g.do_sample,
        eos_token_id=stop_token_id,
        pad_token_id=pad_token_id,
        **sampling,
        **_OFF,
    )


def neutral_generation_defaults(model) -> None:
    """Forget the checkpoint's generation defaults: `generate` then inherits nothing from it."""
    from transformers import GenerationConfig as HFGenerationConfig

    model.generation_config = HFGenerationConfig()
