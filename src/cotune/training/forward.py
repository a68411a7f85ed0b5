"""Token losses of a causal LM on its loss-carrying positions only.

A full forward pass computes every layer at every position, but the loss reads the last
layer at the positions that predict a labelled token (the assistant replies: about a
fifth of the tokens on chat data). Earlier layers are needed everywhere (their keys and
values feed later positions), and so are the last layer's keys and values; the last
layer's queries, attention output, MLP, the final norm and the output head are needed
at the labelled positions alone. For the decoder layouts we know (``LAST_LAYER_LAYOUTS``,
SDPA attention) ``token_loss`` computes exactly that; any other model runs the whole
decoder and applies the head to the labelled positions. Both give the same loss and
gradients as a full forward pass, to float rounding (with LoRA dropout, the same in
distribution: the pruned queries draw their own dropout masks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch.nn import functional

from cotune.training.encoding import IGNORE_INDEX, Batch, segment_mask

LAST_LAYER_LAYOUTS = frozenset({"llama", "qwen2"})
"""``model_type``s whose decoder is embed, rotary, pre-norm layers, norm (checked in tests)."""


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``(rows, heads, positions, dim)`` with ``(rows, positions, dim)``."""
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


def block_mask(batch: Batch) -> torch.Tensor:
    """The batch's attention as a boolean ``(rows, 1, width, width)`` mask (True: attend)."""
    mask = batch.attention_mask
    if mask.dim() == 4:
        return mask.bool()
    return segment_mask(torch.where(mask.bool(), 0, -1))


def _causal_lm(model: torch.nn.Module) -> Any:
    """The transformers model itself, inside a peft wrapper or not (untyped accessors)."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def prunes_last_layer(model: torch.nn.Module) -> bool:
    """Whether ``token_loss`` computes the last layer at the labelled positions only."""
    net = _causal_lm(model)
    config = net.config
    return (
        getattr(config, "model_type", None) in LAST_LAYER_LAYOUTS
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and not getattr(config, "attention_dropout", 0.0)
        and "sliding_attention" not in (getattr(config, "layer_types", None) or ())
    )


def _last_layer_at(
    layer: Any,
    hidden: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor,
    index: torch.Tensor,
) -> torch.Tensor:
    """The decoder layer's output at ``index`` ``(rows, queries)``, from all positions' input."""
    attn = layer.self_attn
    rows, width, _ = hidden.shape
    queries = index.shape[1]

    def pick(values: torch.Tensor) -> torch.Tensor:
        return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))

    normed = layer.input_layernorm(hidden)
    cos, sin = rope
    q = attn.q_proj(pick(normed)).view(rows, queries, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(normed).view(rows, width, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(normed).view(rows, width, -1, attn.head_dim).transpose(1, 2)
    q, k = _rotary(q, pick(cos), pick(sin)), _rotary(k, cos, sin)
    groups = attn.num_key_value_groups
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    query_mask = mask.gather(2, index[:, None, :, None].expand(-1, 1, -1, width))
    out = functional.scaled_dot_product_attention(q, k, v, attn_mask=query_mask, scale=attn.scaling)
    out = pick(hidden) + attn.o_proj(out.transpose(1, 2).reshape(rows, queries, -1))
    return cast(torch.Tensor, out + layer.mlp(layer.post_attention_layernorm(out)))


@dataclass(frozen=True)
class DecoderState:
    """A batch's hidden states entering decoder layer ``layer``, and what later layers need.

    Layers below ``layer`` do not change while an adapter confined to the layers above
    trains, so one state serves every such adapter (the gate's probes).
    """

    layer: int
    hidden: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor]
    mask: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    """Labels shifted by one: position p predicts token p + 1."""


def decoder_state(
    model: torch.nn.Module, batch: Batch, device: torch.device, layer: int = 0
) -> DecoderState:
    """Embed the batch and run the decoder layers below ``layer`` (``prunes_last_layer`` models)."""
    decoder = _causal_lm(model).get_decoder()
    if not 0 <= layer < len(decoder.layers):
        raise ValueError(f"layer {layer} is outside the model's {len(decoder.layers)} layers")
    positions = batch.position_ids.to(device)
    mask = block_mask(batch).to(device)
    hidden = decoder.embed_tokens(batch.input_ids.to(device))
    rope = decoder.rotary_emb(hidden, positions)
    for below in decoder.layers[:layer]:
        hidden = below(
            hidden, attention_mask=mask, position_ids=positions, position_embeddings=rope
        )
    return DecoderState(layer, hidden, rope, mask, positions, batch.labels[:, 1:].to(device))


def loss_from_state(
    model: torch.nn.Module, state: DecoderState, *, reduction: str = "mean"
) -> tuple[torch.Tensor, int]:
    """``token_loss`` from a ``DecoderState``: layers from ``state.layer`` on, the last pruned."""
    net = _causal_lm(model)
    decoder = net.get_decoder()
    keep = state.targets != IGNORE_INDEX
    *middle, last = decoder.layers[state.layer :]
    hidden = state.hidden
    for layer in middle:
        hidden = layer(
            hidden,
            attention_mask=state.mask,
            position_ids=state.positions,
            position_embeddings=state.rope,
        )
    # The last position never carries loss (nothing follows it to predict).
    at = functional.pad(keep, (0, 1))
    counts = at.sum(dim=1)
    # Kept positions first, in order; the slots past a row's count hold other positions,
    # computed and dropped (every row of the mask attends somewhere, so nothing is NaN).
    index = torch.argsort((~at).to(torch.int8), dim=1, stable=True)[:, : int(counts.max())]
    valid = torch.arange(index.shape[1], device=index.device)[None] < counts[:, None]
    out = _last_layer_at(last, hidden, state.rope, state.mask, index)
    return _cross_entropy(net, decoder.norm(out[valid]), state.targets[keep], reduction)


def _cross_entropy(
    net: Any, hidden: torch.Tensor, targets: torch.Tensor, reduction: str
) -> tuple[torch.Tensor, int]:
    head = cast(torch.nn.Module, net.get_output_embeddings())
    logits = head(hidden).float()
    return functional.cross_entropy(logits, targets, reduction=reduction), targets.numel()


def token_loss(
    model: torch.nn.Module, batch: Batch, device: torch.device, *, reduction: str = "mean"
) -> tuple[torch.Tensor, int]:
    """Cross-entropy over the batch's loss-carrying tokens (``mean`` or ``sum``), and their count.

    ``model`` is a transformers causal LM or a peft model around one.
    """
    net = _causal_lm(model)
    if prunes_last_layer(net):
        return loss_from_state(net, decoder_state(net, batch, device), reduction=reduction)
    mask = batch.attention_mask
    if mask.dim() == 4:
        # Additive form: eager attention adds a custom 4-D mask, a boolean one included.
        blocked = torch.finfo(net.dtype).min
        mask = torch.zeros(mask.shape, dtype=net.dtype).masked_fill(~mask.bool(), blocked)
    hidden = net.get_decoder()(
        input_ids=batch.input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=batch.position_ids.to(device),
    ).last_hidden_state
    targets = batch.labels[:, 1:].to(device)
    keep = targets != IGNORE_INDEX
    return _cross_entropy(net, hidden[:, :-1][keep], targets[keep], reduction)
