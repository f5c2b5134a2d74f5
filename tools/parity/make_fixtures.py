"""Generate the OpenMythos parity fixtures in tests/fixtures/parity/.

The Rust CPU runtime's tests load these files and compare their logits with
the reference ones: `max|ours - ref| <= 1e-4 * max|ref|`. `make test` only
reads the committed files; this script (and its venv) is needed only to
regenerate them.

    tools/parity/.venv/bin/python tools/parity/make_fixtures.py [--out DIR]

Set-up: python3 -m venv tools/parity/.venv &&
        tools/parity/.venv/bin/pip install open-mythos==0.5.0 safetensors

For every fixture NAME it writes:

  NAME.mythos               the spec: `import "@tiny-mla"` (or "@tiny-gqa") and
                            `model NAME extends tiny_mla { ... }` with the
                            fixture's overrides, if any.
  NAME.weights.safetensors  the reference model's state_dict (float32, contiguous),
                            without the complex RoPE buffers `freqs_cis` /
                            `freqs_cis_mla` and without `head.weight` (tied to
                            `embed.weight`), except in the one fixture that keeps
                            it. The `recurrent.block.ffn.router_bias` buffer is kept.
  NAME.io.safetensors       `input_ids` (int64, [B, T]) and `logits` (float32,
                            [B, T, V]) computed by open-mythos 0.5.0.

and one manifest.json listing all of them (see README.md for the fields).

Two modes, chosen by the manifest's `decode_from`:

  null  logits = model(input_ids, n_loops=loops)   (no KV cache: ACT may stop
        the loop early once every position has halted)
  K     cache = {}; l0 = model(ids[:, :K], n_loops, kv_cache=cache, start_pos=0);
        then one token at a time, lt = model(ids[:, t:t+1], n_loops,
        kv_cache=cache, start_pos=t) for t in K..T-1; logits = cat([l0, l1, ...], 1)

`loops = null` means the model's max_loop_iters (n_loops=None in the reference).

Determinism: float32 on CPU, one thread, torch.use_deterministic_algorithms(True),
and torch.manual_seed(seed) before each fixture's model is built. The input ids
come from their own torch.Generator. Running the script twice gives
byte-identical files.

Weights: OpenMythos(cfg) with its own init, then the parameters it initialises
to constants are perturbed so that their code paths are really exercised:
  recurrent.injection.log_A, log_dt   <- randn * 0.5
  recurrent.injection.B               <- 0.1 + randn * 0.05
  every RMSNorm weight                <- 1 + randn * 0.1
  recurrent.lora.B *= 10, recurrent.lora.scale.weight *= 50  (LoRA visible in logits)
then per-fixture changes (halt bias, router bias), and the logits are computed
from exactly the tensors that are saved.

Robustness: two decisions in the reference are discontinuous, the ACT halting
test `cum + p >= threshold` and the MoE top-k choice. A fixture whose ids and
weights put any of them within MARGIN of the boundary could flip under float
rounding in another implementation, so for each fixture the script tries seeds
base, base+1, ... and takes the first one whose every decision (every loop
iteration, every forward call) is at least MARGIN from its boundary and that
meets the fixture's own requirement (for example "all positions halted before
the last iteration"). The chosen seeds are printed and written to the README
table by hand; the search itself is deterministic.
"""
import argparse
import copy
import dataclasses
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file, save_file
from open_mythos.main import MythosConfig, OpenMythos, RMSNorm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from count_params import TINY  # noqa: E402  (the tiny presets as MythosConfig fields)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "parity"

# Smallest allowed distance of an ACT halting test (cum + p vs threshold) or of a
# top-k choice (gap between the k-th and (k+1)-th biased router logit) from its
# boundary. Implementations agree to about 1e-6 relative, so 1e-4 is ample.
MARGIN = 1e-4
MAX_SEED_TRIES = 50


@dataclasses.dataclass(frozen=True)
class Fixture:
    name: str
    attn: str  # "mla" or "gqa": which tiny preset
    what: str  # one line for the manifest
    base_seed: int
    loops: Optional[int] = None  # None = the model's max_loop_iters
    decode_from: Optional[int] = None  # None = one full forward without cache
    batch: int = 2
    seq: int = 12
    threshold: Optional[float] = None  # spec override `loop { halt act { threshold = .. } }`
    halt_bias: Optional[float] = None  # value written into recurrent.act.halt.bias
    router_bias: bool = False  # recurrent.block.ffn.router_bias <- randn * 0.5
    keep_head: bool = False  # keep head.weight (tied copy of embed.weight) in the file
    # Config overrides written into the spec too: `dim` (the loop embedding gets
    # dim // 8 channels) and, for GQA, `n_heads` / `n_kv_heads`.
    dim: Optional[int] = None
    heads: Optional[int] = None
    kv_heads: Optional[int] = None
    # Extra requirement on the probe's record; the seed search skips seeds that fail it.
    require: Optional[Callable[["Probe", "Fixture", MythosConfig], Optional[str]]] = None


def _max_iters(fx: "Fixture", cfg: MythosConfig) -> int:
    return fx.loops or cfg.max_loop_iters


def require_early_exit(probe, fx, cfg):
    """Every position halted at the first iteration, so the loop stopped early."""
    want = _max_iters(fx, cfg)
    its = probe.iterations()
    if not all(n == 1 for n in its) or want <= 1:
        return f"expected one iteration of {want}, ran {its}"
    return None


def require_never_halts(probe, fx, cfg):
    """No position ever halts: every iteration runs and the ACT mass is lost."""
    want = _max_iters(fx, cfg)
    if probe.iterations() != [want] or probe.any_halted:
        return f"expected {want} iterations and no halting, ran {probe.iterations()}"
    return None


def require_past_max(probe, fx, cfg):
    """Iterations t >= max_loop_iters ran (the LoRA scale index clamps)."""
    its = probe.iterations()
    if max(its) <= cfg.max_loop_iters:
        return f"expected more than {cfg.max_loop_iters} iterations, ran {its}"
    return None


def require_all_loops(probe, fx, cfg):
    """Every forward call ran all its iterations."""
    want = _max_iters(fx, cfg)
    its = probe.iterations()
    if any(n != want for n in its):
        return f"expected {want} iterations per call, ran {its}"
    return None


FIXTURES = [
    Fixture("mla_act_default", "mla", base_seed=1000,
            what="tiny MLA, default ACT (threshold 0.99), max loops, one full forward"),
    Fixture("gqa_act_default", "gqa", base_seed=2000,
            what="tiny GQA, default ACT (threshold 0.99), max loops, one full forward"),
    Fixture("mla_halts_early", "mla", base_seed=3000, threshold=0.3, halt_bias=3.0,
            require=require_early_exit,
            what="ACT threshold 0.3 and halt bias +3: every position halts at iteration 0, "
                 "the loop exits after 1 of 4 iterations"),
    Fixture("gqa_never_halts", "gqa", base_seed=4000, halt_bias=-20.0,
            require=require_never_halts,
            what="halt bias -20: p ~ 2e-9, no position halts, all 4 iterations run "
                 "and the ACT mass is lost"),
    # The default halt bias (about +-0.1) halts every position after 2 or 3
    # iterations, which would never reach t >= 4. With -1.75, p is about 0.15: all
    # 7 iterations run, t = 4, 5, 6 reuse LoRA scale row 3, 16 of the 24 positions
    # halt at t = 6 (remainder weight) and 8 never halt (mass lost).
    Fixture("mla_loops_beyond_max", "mla", base_seed=5000, loops=7, halt_bias=-1.75,
            router_bias=True, keep_head=True, require=require_past_max,
            what="n_loops 7 > max 4 (LoRA scale index clamps at 3), halt bias -1.75 so all 7 "
                 "iterations run, non-zero router_bias, head.weight kept in the file"),
    Fixture("gqa_router_bias_loops_2", "gqa", base_seed=6000, loops=2, router_bias=True,
            what="n_loops 2 < max, non-zero router_bias changes the top-k choice"),
    Fixture("mla_decode", "mla", base_seed=7000, decode_from=5, require=require_all_loops,
            what="KV-cache path: prefill 5 tokens, then 7 single-token steps, max loops"),
    Fixture("gqa_decode", "gqa", base_seed=8000, decode_from=4, loops=6, require=require_all_loops,
            what="KV-cache path with n_loops 6 > max: prefill 4 tokens, then 8 single-token steps"),
    Fixture("mla_batch1_long", "mla", base_seed=9000, batch=1, seq=40,
            what="tiny MLA, batch 1, 40 tokens, max loops, one full forward"),
    # dim // 8 = 7: the loop embedding has 4 sines and 3 cosines (the 4th is cut).
    Fixture("mla_odd_loop_channels_decode", "mla", base_seed=10000, dim=56, decode_from=5,
            require=require_all_loops,
            what="dim 56: 7 loop-embedding channels (odd, last cosine dropped); prefill 5 "
                 "tokens, then 7 single-token steps through the KV cache"),
    # 5 heads over 72 channels: head_dim 72 // 5 = 14, q/k/v are 70 wide, wo maps
    # 70 back to 72; dim // 8 = 9 loop-embedding channels (odd).
    Fixture("gqa_uneven_heads_decode", "gqa", base_seed=11000, dim=72, heads=5, kv_heads=1,
            decode_from=4, require=require_all_loops,
            what="dim 72 with 5 heads (head_dim 14, q width 70 != dim) and 9 loop-embedding "
                 "channels; prefill 4 tokens, then 8 single-token steps"),
    # dim 4 < 8: dim // 8 = 0 loop-embedding channels, the signal adds nothing.
    Fixture("gqa_dim_4_no_loop_channels", "gqa", base_seed=12000, dim=4, heads=2, kv_heads=1,
            what="dim 4 (2 heads of 2): dim // 8 = 0 loop-embedding channels; one full forward"),
    # Above 1, the halting step's remainder max(1 - cum, 0) is 0 once cum passed 1.
    Fixture("mla_threshold_above_1", "mla", base_seed=13000, threshold=1.5,
            what="ACT threshold 1.5 (warning W0003): positions halt once their summed p "
                 "reaches 1.5, with remainder weight max(1 - cum, 0)"),
]


class Probe:
    """Watches the reference's discontinuous decisions through forward hooks.

    For every call of the recurrent block it counts the loop iterations and
    follows the ACT bookkeeping (cumulative p, halted set) to measure how far
    each `cum + p >= threshold` test is from its boundary; for every router call
    it measures the gap between the k-th and (k+1)-th biased logit.
    """

    def __init__(self, model: OpenMythos, cfg: MythosConfig):
        self.cfg = cfg
        self.calls = []  # iterations run by each recurrent-block call
        self.halted_after = []  # per call: after which iteration every position had halted
        self.act_margin = float("inf")
        self.topk_gap = float("inf")
        self.any_halted = False
        self.halt_hist = {}  # iteration at which a position halted -> count ("never" too)
        self._cum = None
        self._halted = None
        ffn = model.recurrent.block.ffn
        self._router_bias = ffn.router_bias
        self._topk = ffn.topk
        self.handles = [
            model.recurrent.register_forward_pre_hook(self._start),
            model.recurrent.act.register_forward_hook(self._act),
            ffn.router.register_forward_hook(self._router),
        ]

    def _start(self, module, args):
        self._flush()
        self.calls.append(0)
        self.halted_after.append(None)

    def _act(self, module, args, p):
        p = p.detach()
        if self._cum is None:
            self._cum = torch.zeros_like(p)
            self._halted = torch.zeros_like(p, dtype=torch.bool)
            self._halt_at = torch.full(p.shape, -1, dtype=torch.int64)
        running = ~self._halted
        total = self._cum + p
        if running.any():
            dist = (total - self.cfg.act_threshold).abs()[running].min().item()
            self.act_margin = min(self.act_margin, dist)
        self._cum = self._cum + p * running.float()
        newly = running & (self._cum >= self.cfg.act_threshold)
        self._halt_at[newly] = self.calls[-1]
        self._halted = self._halted | newly
        self.any_halted = self.any_halted or bool(self._halted.any())
        self.calls[-1] += 1
        if self._halted.all() and self.halted_after[-1] is None:
            self.halted_after[-1] = self.calls[-1] - 1

    def _router(self, module, args, logits):
        biased = (logits.detach() + self._router_bias).sort(dim=-1, descending=True).values
        gap = (biased[:, self._topk - 1] - biased[:, self._topk]).min().item()
        self.topk_gap = min(self.topk_gap, gap)

    def _flush(self):
        if self._cum is not None:
            for v in self._halt_at.flatten().tolist():
                key = "never" if v < 0 else v
                self.halt_hist[key] = self.halt_hist.get(key, 0) + 1
            self._cum = None

    def iterations(self):
        return list(self.calls)

    def remove(self):
        self._flush()
        for h in self.handles:
            h.remove()


def make_config(fx: Fixture) -> MythosConfig:
    cfg = MythosConfig(attn_type=fx.attn, **TINY)
    if fx.threshold is not None:
        cfg = dataclasses.replace(cfg, act_threshold=fx.threshold)
    for field, value in (("dim", fx.dim), ("n_heads", fx.heads), ("n_kv_heads", fx.kv_heads)):
        if value is not None:
            cfg = dataclasses.replace(cfg, **{field: value})
    return cfg


@torch.no_grad()
def build_model(fx: Fixture, cfg: MythosConfig, seed: int) -> OpenMythos:
    torch.manual_seed(seed)
    model = OpenMythos(cfg)  # OpenMythos runs its own init in the constructor
    model.eval()
    rec = model.recurrent
    rec.injection.log_A.copy_(torch.randn_like(rec.injection.log_A) * 0.5)
    rec.injection.log_dt.copy_(torch.randn_like(rec.injection.log_dt) * 0.5)
    rec.injection.B.copy_(0.1 + torch.randn_like(rec.injection.B) * 0.05)
    for name, m in model.named_modules():  # named_modules order is fixed
        if isinstance(m, RMSNorm):
            m.weight.copy_(1.0 + torch.randn_like(m.weight) * 0.1)
    rec.lora.B.mul_(10.0)
    rec.lora.scale.weight.mul_(50.0)
    if fx.halt_bias is not None:
        rec.act.halt.bias.fill_(fx.halt_bias)
    if fx.router_bias:
        rb = rec.block.ffn.router_bias
        rb.copy_(torch.randn_like(rb) * 0.5)
    return model


@torch.no_grad()
def reference_logits(model: OpenMythos, fx: Fixture, ids: torch.Tensor) -> torch.Tensor:
    if fx.decode_from is None:
        return model(ids, n_loops=fx.loops)
    k = fx.decode_from
    cache: dict = {}
    parts = [model(ids[:, :k], n_loops=fx.loops, kv_cache=cache, start_pos=0)]
    for t in range(k, ids.shape[1]):
        parts.append(model(ids[:, t:t + 1], n_loops=fx.loops, kv_cache=cache, start_pos=t))
    return torch.cat(parts, dim=1)


def spec_text(fx: Fixture) -> str:
    preset = "tiny-mla" if fx.attn == "mla" else "tiny-gqa"
    parent = preset.replace("-", "_")
    lines = [
        f"# Parity fixture {fx.name}, generated by tools/parity/make_fixtures.py; do not edit.",
        f'import "@{preset}"',
        "",
    ]
    body = []
    if fx.dim is not None:
        body.append(f"  dim = {fx.dim}")
    if fx.heads is not None or fx.kv_heads is not None:
        assert fx.attn == "gqa", "head overrides are for the GQA preset"
        heads = fx.heads if fx.heads is not None else TINY["n_heads"]
        kv_heads = fx.kv_heads if fx.kv_heads is not None else TINY["n_kv_heads"]
        body.append(f"  attention gqa {{ heads = {heads}, kv_heads = {kv_heads} }}")
    if fx.threshold is not None:
        body += ["  loop {", f"    halt act {{ threshold = {fx.threshold!r} }}", "  }"]
    if body:
        lines += [f"model {fx.name} extends {parent} {{", *body, "}"]
    else:
        lines.append(f"model {fx.name} extends {parent} {{}}")
    return "\n".join(lines) + "\n"


def weights_to_save(model: OpenMythos, fx: Fixture) -> dict:
    out = {}
    for name, t in model.state_dict().items():
        if name in ("freqs_cis", "freqs_cis_mla"):
            continue
        if name == "head.weight" and not fx.keep_head:
            continue
        # clone: head.weight shares storage with embed.weight, which save_file refuses
        out[name] = t.detach().to(torch.float32).clone().contiguous()
    return out


def generate(fx: Fixture):
    """Returns (seed, model, ids, logits, probe) for the first acceptable seed."""
    cfg = make_config(fx)
    rejected = []
    for seed in range(fx.base_seed, fx.base_seed + MAX_SEED_TRIES):
        model = build_model(fx, cfg, seed)
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, cfg.vocab_size, (fx.batch, fx.seq), generator=gen, dtype=torch.int64)
        probe = Probe(model, cfg)
        logits = reference_logits(model, fx, ids)
        probe.remove()
        why = None
        if probe.act_margin < MARGIN:
            why = f"ACT test {probe.act_margin:.2e} from the threshold"
        elif probe.topk_gap < MARGIN:
            why = f"top-k gap {probe.topk_gap:.2e}"
        elif fx.require is not None:
            why = fx.require(probe, fx, cfg)
        if why is None:
            return seed, cfg, model, ids, logits, probe, rejected
        rejected.append((seed, why))
    raise SystemExit(f"{fx.name}: no acceptable seed in {MAX_SEED_TRIES} tries: {rejected[-3:]}")


def check_spec_with_mythos(binary: str, spec: Path, cfg: MythosConfig):
    """`mythos export openmythos SPEC` must give exactly the config the logits came from."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "config.json"
        subprocess.run([binary, "export", "openmythos", str(spec), "-o", str(out)],
                       check=True, capture_output=True)
        exported = json.loads(out.read_text())
    want = dataclasses.asdict(cfg)
    if cfg.attn_type == "gqa":  # the MLA fields do not exist for a GQA spec (they take defaults)
        for k in ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
            exported.pop(k), want.pop(k)
    assert exported == want, f"{spec.name}: exported config differs: " + str(
        {k: (exported.get(k), want.get(k)) for k in set(exported) | set(want)
         if exported.get(k) != want.get(k)})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--mythos", metavar="BIN",
                    help="also check that `BIN export openmythos NAME.mythos` gives the config "
                         "used for the logits (for example target/release/mythos)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)

    manifest = []
    for fx in FIXTURES:
        seed, cfg, model, ids, logits, probe, rejected = generate(fx)
        assert logits.dtype == torch.float32
        assert tuple(logits.shape) == (fx.batch, fx.seq, cfg.vocab_size), logits.shape
        assert torch.isfinite(logits).all()

        files = {
            "spec": f"{fx.name}.mythos",
            "weights": f"{fx.name}.weights.safetensors",
            "io": f"{fx.name}.io.safetensors",
        }
        (out_dir / files["spec"]).write_text(spec_text(fx))
        if args.mythos:
            check_spec_with_mythos(args.mythos, out_dir / files["spec"], cfg)
        weights = weights_to_save(model, fx)
        save_file(weights, str(out_dir / files["weights"]))
        io = {"input_ids": ids.contiguous(), "logits": logits.contiguous()}
        save_file(io, str(out_dir / files["io"]))

        # Load back and compare bit for bit.
        for path, want in ((files["weights"], weights), (files["io"], io)):
            got = load_file(str(out_dir / path))
            assert got.keys() == want.keys(), path
            for k in want:
                assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), (path, k)

        # The saved tensors alone reproduce the logits (a fresh model, strict load).
        fresh = OpenMythos(cfg)
        sd = dict(load_file(str(out_dir / files["weights"])))
        sd.setdefault("head.weight", sd["embed.weight"])
        sd["freqs_cis"] = fresh.freqs_cis
        sd["freqs_cis_mla"] = fresh.freqs_cis_mla
        fresh.load_state_dict(sd, strict=True)
        fresh.eval()
        again = reference_logits(fresh, fx, ids)
        assert torch.equal(again, logits), f"{fx.name}: reloaded weights give other logits"

        # Conditioning: the same computation in float64 (RoPE stays float32 in the
        # reference) must agree far inside the tests' 1e-4 relative tolerance, or
        # another float32 implementation could not be held to it.
        wide = copy.deepcopy(model).double()
        rel64 = ((reference_logits(wide, fx, ids).float() - logits).abs().max()
                 / logits.abs().max()).item()
        assert rel64 < 1e-5, f"{fx.name}: float64 disagrees by {rel64:.2e} relative"
        note = f", f64 rel diff {rel64:.1e}"

        # In decode mode, compare with one cache-free forward of the whole sequence.
        if fx.decode_from is not None:
            with torch.no_grad():
                full = model(ids, n_loops=fx.loops)
            diff = (full - logits).abs().max().item()
            note += f", decode-vs-full max diff {diff:.2e}"

        max_abs = float(logits.abs().max().item())
        manifest.append({
            "name": fx.name,
            "spec": files["spec"],
            "model": fx.name,
            "weights": files["weights"],
            "io": files["io"],
            "loops": fx.loops,
            "decode_from": fx.decode_from,
            "batch": fx.batch,
            "seq": fx.seq,
            "what": fx.what,
            "max_abs_logit": max_abs,
        })
        print(f"{fx.name}: seed {seed} (rejected {len(rejected)}), ids {list(ids.shape)}, "
              f"logits {list(logits.shape)}, max|logit| {max_abs:.6g}, iterations per call "
              f"{probe.iterations()}, all halted after iteration {probe.halted_after}, "
              f"halted at iteration (positions x calls) {probe.halt_hist}, "
              f"ACT margin {probe.act_margin:.2e}, top-k gap {probe.topk_gap:.2e}, "
              f"{len(weights)} tensors{note}")

    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = 0
    for p in sorted(out_dir.iterdir()):
        total += p.stat().st_size
        print(f"  {p.name:44s} {p.stat().st_size:9d}  {sha256(p)[:16]}")
    print(f"  total {total} bytes")


if __name__ == "__main__":
    main()
