"""Training-step speed of Mythos vs OpenMythos eager: same config, same weights, same machine.

    tools/parity/.venv/bin/python tools/parity/bench_train_reference.py [--threads 2] [--batch 1]
        [--seq 256] [--loops 8] [--repeats 3] SPEC...

For each SPEC it exports the MythosConfig, writes random weights with `mythos init --seed 0`
and loads them into OpenMythos (open-mythos 0.5.0, torch, float32, train mode), then times one
training step as `training/3b_fine_web_edu.py` does it: forward at --loops iterations without a
KV cache (so ACT may stop earlier), mean cross-entropy, backward, `clip_grad_norm_(1.0)`,
AdamW (lr 3e-4, betas 0.9/0.95, weight decay 0.1), `zero_grad`. Against it, `mythos bench
--train` (release build) on the same shape and weights. Rounds of the two alternate (a shared
machine's speed drifts over minutes); each side reports its fastest step. ACT's halting bias
is set to --halt-bias (default -20: p ~ 0, so neither side halts early and both run --loops
iterations; `--halt-bias keep` leaves the init's). It also prints the loop iterations each side
ran (counted on the torch side by a hook on the recurrent block), so a ratio is only read where
they agree.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench_reference import ROOT, exported


def reference(cfg_dict, weights, batch, seq, loops, threads):
    """OpenMythos with `weights`; returns a function timing one training step
    (seconds, loop iterations run)."""
    import torch
    import torch.nn.functional as F
    from open_mythos.main import MythosConfig, OpenMythos
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = OpenMythos(MythosConfig(**cfg_dict)).train()
    state = load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        sys.exit(f"{weights}: keys OpenMythos does not have: {unexpected[:5]}")
    if any(not (k == "head.weight" or "router_bias" in k or k.startswith("freqs_cis")) for k in missing):
        sys.exit(f"{weights}: OpenMythos parameters missing from the file: {missing[:5]}")
    calls = [0]
    model.recurrent.block.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95))
    vocab = cfg_dict["vocab_size"]
    ids = torch.randint(0, vocab, (batch, seq))
    targets = torch.randint(0, vocab, (batch, seq))

    def step():
        calls[0] = 0
        t0 = time.perf_counter()
        logits = model(ids, n_loops=loops)
        loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, calls[0]

    step()  # warm-up
    return step


def ours(spec, weights, batch, seq, loops, threads, binary):
    """One `mythos bench --train` process: (fastest step seconds, iterations, peak MiB)."""
    out = subprocess.run(
        [binary, "bench", spec, "--train", "--weights", weights, "--batch", str(batch), "--seq",
         str(seq), "--loops", str(loops), "--threads", str(threads), "--repeats", "2", "--json"],
        check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    return r["train_step_ms"] / 1e3, r["iterations"], r["peak_memory_mib"]


def with_halt_bias(weights, bias):
    """A copy of `weights` whose ACT halting bias is `bias` everywhere."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(weights)
    key = "recurrent.act.halt.bias"
    if key not in state:
        sys.exit(f"{weights}: no `{key}`; use --halt-bias keep for a model without ACT")
    state[key] = torch.full_like(state[key], bias)
    out = weights.replace(".safetensors", ".halt.safetensors")
    save_file(state, out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--loops", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds; best of them on each side")
    ap.add_argument("--halt-bias", default="-20",
                    help="ACT halting bias for both sides, or `keep` (the init's: ACT may stop early)")
    ap.add_argument("--mythos", default=os.path.join(ROOT, "target", "release", "mythos"))
    args = ap.parse_args()
    if not os.path.exists(args.mythos):
        sys.exit(f"{args.mythos} not found: run `cargo build --release` first")
    for spec in args.specs:
        with tempfile.TemporaryDirectory() as d:
            cfg, weights = exported(spec, d, args.mythos)
            if args.halt_bias != "keep":
                weights = with_halt_bias(weights, float(args.halt_bias))
            ref_step = reference(cfg, weights, args.batch, args.seq, args.loops, args.threads)
            refs, uss = [], []
            for _ in range(args.repeats):
                refs.append(ref_step())
                uss.append(ours(spec, weights, args.batch, args.seq, args.loops, args.threads, args.mythos))
        ref_s, ref_iters = min(refs)
        us_s, us_iters, peak = min(uss)
        tokens = args.batch * args.seq
        print(f"{spec}  (threads {args.threads}, batch {args.batch} x {args.seq}, loops {args.loops}, "
              f"best of {args.repeats})")
        print(f"  train step  OpenMythos {ref_s * 1e3:9.1f} ms ({tokens / ref_s:7.0f} tokens/s, "
              f"{ref_iters} iterations)   Mythos {us_s * 1e3:9.1f} ms ({tokens / us_s:7.0f} tokens/s, "
              f"{us_iters} iterations, peak {peak:.0f} MiB)   speed-up {ref_s / us_s:5.2f}x")


if __name__ == "__main__":
    main()
