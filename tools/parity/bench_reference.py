"""CPU speed of Mythos vs OpenMythos eager on the same config, same machine, same threads.

    tools/parity/.venv/bin/python tools/parity/bench_reference.py [--threads 2] [--seq 256] [--decode 16] SPEC...

For each SPEC (a .mythos file or @preset that `mythos export openmythos` accepts) it
exports the MythosConfig, times OpenMythos (open-mythos 0.5.0, torch, float32, eval,
no_grad) on a prefill of --seq random tokens with a KV cache and --decode single-token
steps, runs `mythos bench` (release build) on the same shape, and prints both and the
ratios. Rounds of the two alternate (a shared machine's speed drifts over minutes) and
each side reports its best of --repeats rounds. Set-up: see tools/parity/README.md (the venv has open-mythos and torch).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reference(cfg_dict, seq, decode, threads):
    """OpenMythos built once; returns a function timing one round: a prefill
    of `seq` tokens on a fresh KV cache, then `decode` greedy steps."""
    import torch
    from open_mythos.main import MythosConfig, OpenMythos

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = OpenMythos(MythosConfig(**cfg_dict)).eval()
    ids = torch.randint(0, cfg_dict["vocab_size"], (1, seq))
    loops = cfg_dict["max_loop_iters"]
    with torch.no_grad():
        model(ids[:, :8], n_loops=loops, kv_cache={})  # warm-up

    def round_():
        with torch.no_grad():
            cache = {}
            t0 = time.perf_counter()
            logits = model(ids, n_loops=loops, kv_cache=cache, start_pos=0)
            prefill = time.perf_counter() - t0
            tok = logits[:, -1:].argmax(-1)
            t1 = time.perf_counter()
            for i in range(decode):
                logits = model(tok, n_loops=loops, kv_cache=cache, start_pos=seq + i)
                tok = logits[:, -1:].argmax(-1)
            return prefill * 1e3, (time.perf_counter() - t1) / max(decode, 1) * 1e3

    return round_


def ours(spec, weights, seq, decode, threads, binary):
    """One `mythos bench` process (best of its 2 rounds, the first of which
    warms the buffer pool as the reference's earlier rounds warm its caches)."""
    out = subprocess.run(
        [binary, "bench", spec, "--weights", weights, "--seq", str(seq), "--decode", str(decode),
         "--threads", str(threads), "--repeats", "2", "--json"],
        check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    return r["prefill_ms"], r["decode_ms_per_token"]


def exported(spec, d, binary):
    """`spec`'s MythosConfig (a dict) and the path of its `mythos init --seed 0`
    weights, both written into directory `d`."""
    cfg_path = os.path.join(d, "config.json")
    subprocess.run([binary, "export", "openmythos", spec, "-o", cfg_path], check=True,
                   capture_output=True)
    weights = os.path.join(d, "weights.safetensors")
    subprocess.run([binary, "init", spec, "--seed", "0", "-o", weights], check=True,
                   capture_output=True)
    return json.load(open(cfg_path)), weights


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs on each side")
    ap.add_argument("--mythos", default=os.path.join(ROOT, "target", "release", "mythos"))
    args = ap.parse_args()
    if not os.path.exists(args.mythos):
        sys.exit(f"{args.mythos} not found: run `cargo build --release` first")
    for spec in args.specs:
        with tempfile.TemporaryDirectory() as d:
            cfg, weights = exported(spec, d, args.mythos)
            ref_round = reference(cfg, args.seq, args.decode, args.threads)
            # Rounds alternate between the two, so that both see the same
            # machine: on a shared VM the speed drifts over minutes.
            refs, uss = [], []
            for _ in range(args.repeats):
                refs.append(ref_round())
                uss.append(ours(spec, weights, args.seq, args.decode, args.threads, args.mythos))
        ref = {"prefill_ms": min(r[0] for r in refs), "decode_ms_per_token": min(r[1] for r in refs)}
        us = {"prefill_ms": min(r[0] for r in uss), "decode_ms_per_token": min(r[1] for r in uss)}
        print(f"{spec}  (threads {args.threads}, prompt {args.seq}, decode {args.decode}, "
              f"loops {cfg['max_loop_iters']}, best of {args.repeats})")
        print(f"  prefill   OpenMythos {ref['prefill_ms']:9.1f} ms   Mythos {us['prefill_ms']:9.1f} ms   "
              f"speed-up {ref['prefill_ms'] / us['prefill_ms']:5.2f}x")
        print(f"  decode    OpenMythos {ref['decode_ms_per_token']:9.2f} ms/token   Mythos {us['decode_ms_per_token']:9.2f} ms/token   "
              f"speed-up {ref['decode_ms_per_token'] / us['decode_ms_per_token']:5.2f}x")


if __name__ == "__main__":
    main()
