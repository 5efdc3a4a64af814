"""The correct stage's routing counts against a hand count on a tiny model: each prompt's
(token, expert) pairs per MoE layer, as the routers themselves chose them."""

import torch

from nemo_neko.testing.distributed import run_distributed


def _counts_match_the_routers(rank, world_size):
    from nemo_neko.inference.generate import KVCacheDecoder
    from nemo_neko.inference.routing import RoutingCounter
    from nemo_neko.moe.layer import NeKoMoELayer
    from nemo_neko.testing.models import tiny_decoding_gpt

    model = tiny_decoding_gpt()
    layers = [m for m in model.modules() if isinstance(m, NeKoMoELayer)]
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 64, (n,), generator=gen).tolist() for n in (5, 9, 12, 20)]

    with RoutingCounter(model, slots=len(prompts)) as counter:
        KVCacheDecoder(model, eos_id=2, pad_id=0).generate(
            prompts, [0] * len(prompts), batch_size=1, labels=range(len(prompts)),
            num_labels=len(prompts),
        )  # fmt: skip
        counted = counter.take(len(prompts))  # [prompt][layer][expert]

    chosen = []  # the routers' own choices: routing_map [tokens, E] of every call
    hooks = [
        layer.router.register_forward_hook(lambda m, i, out: chosen.append(out[1].detach()))
        for layer in layers
    ]
    try:
        for p, prompt in enumerate(prompts):
            chosen.clear()
            with torch.no_grad():
                tokens = torch.tensor([prompt])
                positions = torch.arange(len(prompt)).unsqueeze(0)
                model(tokens, positions, attention_mask=None)
            assert len(chosen) == len(layers)
            top_k = layers[0].config.moe_router_topk
            for layer, routing_map_TE in enumerate(chosen):
                tokens_counted = sum(counted[p][layer]) // top_k
                assert tokens_counted in (len(prompt), len(prompt) - 1)  # the prefill
                by_hand = routing_map_TE[:tokens_counted].sum(dim=0).tolist()
                assert counted[p][layer] == by_hand, (p, layer, counted[p][layer], by_hand)
    finally:
        for hook in hooks:
            hook.remove()


def test_routing_counts_equal_the_routers_choices():
    run_distributed(_counts_match_the_routers, 1)
