"""Turning (prompt, response) text into token ids with an exact response span.

A sequence is ``prompt_ids + response_ids``; ``response_start = len(prompt_ids)``. The prompt part and
the response part are tokenized separately (as TRL does), so the span is exact by construction:
no token straddles the boundary.

* Models with a chat template (SmolLM2, Qwen, Llama-3.x-Instruct, Gemma-2-IT): the prompt part is the
  template rendered with the user turn and the generation prompt; the response part is the rest of the
  template rendered with the assistant turn, so the end-of-turn token (and whatever the template emits
  after it, e.g. SmolLM2's ``<|im_end|>\\n``) belongs to the response. The template text already holds
  the BOS token when the model uses one, so it is tokenized with ``add_special_tokens=False`` (no
  double BOS).
* Models without one (Pythia, Llama-3.2-1B base): the paper's template (Appendix D)
  ``[USER]{prompt}[ASSISTANT]{response}[EOS]`` with the three markers added as special tokens
  (:func:`add_special_tokens` resizes the embeddings). The tokenizer's own BOS, if any, is kept once.

Dated templates: Llama-3.x templates print ``Today Date: {date_string}`` and default to the current
date, which would make rewards depend on the day a notebook runs. We always pass the fixed
``date_string = "26 Jul 2024"`` (the templates' own fallback), so the same text gives the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_TEMPLATE_TOKENS = ("[USER]", "[ASSISTANT]", "[EOS]")
FIXED_TEMPLATE_KWARGS = {"date_string": "26 Jul 2024"}
GRM_TEMPLATE = "Question: {prompt}\nAnswer: {response}\nVerification: Is the answer correct (Yes/No)?"


class SequenceTooLong(ValueError):
    """A prompt+response is longer than the allowed number of tokens."""


@dataclass(frozen=True)
class Encoded:
    """Token ids of one prompt-response sequence; ``input_ids[response_start:]`` is the response."""

    input_ids: tuple[int, ...]
    response_start: int

    @property
    def response_ids(self) -> tuple[int, ...]:
        return self.input_ids[self.response_start:]

    def __len__(self) -> int:
        return len(self.input_ids)


def add_special_tokens(model, tokenizer, tokens) -> list[str]:
    """Add ``tokens`` as special tokens (if missing) and resize the model's embeddings.

    Returns the tokens that were new. New embedding rows are initialised by transformers to the mean of
    the existing ones, so an added marker does not start as an outlier."""
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
        if model is not None:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return new


def uses_chat_template(tokenizer, use_chat_template: bool | None = None) -> bool:
    """Whether sequences are written with the tokenizer's chat template (``True``) or the paper's template
    (``False``). ``None`` applies Appendix D's rule: the model's own template if it has one."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template and not has_template:
        raise ValueError("use_chat_template=True but the tokenizer has no chat template")
    return has_template if use_chat_template is None else use_chat_template


class ChatFormatter:
    """Formats and tokenizes prompt-response pairs for one tokenizer (see module docstring)."""

    def __init__(self, tokenizer, use_chat_template: bool | None = None, max_length: int | None = None):
        self.tokenizer = tokenizer
        self.use_chat_template = uses_chat_template(tokenizer, use_chat_template)
        if not self.use_chat_template:
            missing = [t for t in PAPER_TEMPLATE_TOKENS if t not in tokenizer.get_vocab()]
            if missing:
                raise ValueError(f"the paper's template needs special tokens {missing}: call "
                                 "rmlib.formatting.add_special_tokens(model, tokenizer, PAPER_TEMPLATE_TOKENS)")
        self.max_length = max_length

    def texts(self, prompt: str, response: str) -> tuple[str, str]:
        """The prompt part and the response part as strings (their concatenation is the full text)."""
        if not self.use_chat_template:
            return f"[USER]{prompt}[ASSISTANT]", f"{response}[EOS]"
        user = [{"role": "user", "content": prompt}]
        prompt_text = self.tokenizer.apply_chat_template(
            user, tokenize=False, add_generation_prompt=True, **FIXED_TEMPLATE_KWARGS)
        full_text = self.tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": response}], tokenize=False, **FIXED_TEMPLATE_KWARGS)
        if not full_text.startswith(prompt_text):
            raise ValueError("the chat template does not render the prompt as a prefix of prompt+response; "
                             "pass use_chat_template=False to use the paper's template")
        return prompt_text, full_text[len(prompt_text):]

    def prompt_ids(self, prompt_text: str) -> list[int]:
        # With a chat template the BOS (if any) is in the text; without one, let the tokenizer add its own.
        return self.tokenizer(prompt_text, add_special_tokens=not self.use_chat_template)["input_ids"]

    def encode(self, prompt: str, response: str) -> Encoded:
        prompt_text, response_text = self.texts(prompt, response)
        ids = self.prompt_ids(prompt_text)
        response_ids = self.tokenizer(response_text, add_special_tokens=False)["input_ids"]
        if not response_ids:
            raise ValueError(f"empty response after tokenization for prompt {prompt[:60]!r}")
        return self._checked(Encoded(tuple(ids + response_ids), len(ids)), prompt)

    def encode_prompt(self, prompt: str) -> Encoded:
        """A prompt alone, ready for next-token prediction (EX-GRM input, generation)."""
        prompt_text, _ = self.texts(prompt, "") if self.use_chat_template else (f"[USER]{prompt}[ASSISTANT]", "")
        ids = self.prompt_ids(prompt_text)
        return self._checked(Encoded(tuple(ids), len(ids)), prompt)

    def _checked(self, encoded: Encoded, prompt: str) -> Encoded:
        if self.max_length is not None and len(encoded) > self.max_length:
            raise SequenceTooLong(f"sequence of {len(encoded)} tokens exceeds max_length={self.max_length} "
                                  f"(prompt starts {prompt[:60]!r})")
        return encoded


def grm_prompt(prompt: str, response: str) -> str:
    """The EX-GRM verification input I[x, y] (Appendix D.2)."""
    return GRM_TEMPLATE.format(prompt=prompt, response=response)
