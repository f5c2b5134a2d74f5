"""Parameter counts of OpenMythos modules, the numbers tests/analysis.rs asserts.

Builds each config with open-mythos 0.5.0 on the `meta` device (no memory is
allocated, so the 1T preset works) and prints sum(p.numel()) over
model.parameters() (the tied head counted once, buffers excluded).

    tools/parity/.venv/bin/python tools/parity/count_params.py

Set-up: python3 -m venv tools/parity/.venv && tools/parity/.venv/bin/pip install open-mythos==0.5.0
"""
import dataclasses
import json

import torch
from open_mythos.main import MythosConfig, OpenMythos
from open_mythos import variants

TINY = dict(vocab_size=256, dim=64, n_heads=4, n_kv_heads=2, max_seq_len=128, max_loop_iters=4,
            prelude_layers=1, coda_layers=1, kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8,
            qk_nope_head_dim=8, v_head_dim=16, n_experts=4, n_shared_experts=1, n_experts_per_tok=2,
            expert_dim=32, act_threshold=0.99, rope_theta=500000.0, lora_rank=4)


def configs():
    for name in ["mythos_1b", "mythos_3b", "mythos_10b", "mythos_50b", "mythos_100b", "mythos_500b", "mythos_1t"]:
        yield name, getattr(variants, name)()
    base = variants.mythos_1b()
    yield "mythos_1b_gqa", dataclasses.replace(base, attn_type="gqa")
    yield "mythos_1b_shared0", dataclasses.replace(base, n_shared_experts=0)
    yield "mythos_1b_topk1", dataclasses.replace(base, n_experts_per_tok=1)
    yield "mythos_1b_lora0", dataclasses.replace(base, lora_rank=0)
    # OpenMythos always has its loop-index embedding (it has no parameters), so
    # "no loop embedding" on our side must give the plain 1b count.
    yield "mythos_1b_no_loop_embedding", base
    yield "tiny_mla", MythosConfig(attn_type="mla", **TINY)
    yield "tiny_gqa", MythosConfig(attn_type="gqa", **TINY)
    # Configs the reference runs that Mythos once rejected: an odd loop-embedding
    # width (2056 // 8 = 257), dim % n_heads != 0 (72 over 5 heads of 14), dim < 8
    # (dim // 8 = 0 loop-embedding channels).
    yield "mythos_1b_dim_2056", dataclasses.replace(base, dim=2056)
    yield "tiny_gqa_uneven_heads", MythosConfig(attn_type="gqa", **{**TINY, "dim": 72, "n_heads": 5,
                                                                     "n_kv_heads": 1})
    yield "tiny_gqa_dim_4", MythosConfig(attn_type="gqa", **{**TINY, "dim": 4, "n_heads": 2,
                                                              "n_kv_heads": 1})
    yield "mythos_3b_gqa_mix", dataclasses.replace(variants.mythos_3b(), attn_type="gqa", n_kv_heads=2,
                                                   n_experts_per_tok=2, lora_rank=4, n_shared_experts=1)


def main():
    counts = {}
    for name, cfg in configs():
        with torch.device("meta"):
            model = OpenMythos(cfg)
        counts[name] = sum(p.numel() for p in model.parameters())
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
