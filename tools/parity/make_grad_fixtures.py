"""Generate the OpenMythos gradient-parity fixtures in tests/fixtures/grad/.

The Rust tests of `mythos grad` load these files and compare the gradient of
the mean next-token cross-entropy with respect to every parameter with the one
PyTorch autograd computes for open-mythos 0.5.0 in float64. `make test` only
reads the committed files; this script (and its venv) is needed only to
regenerate them.

    tools/parity/.venv/bin/python -B tools/parity/make_grad_fixtures.py [--out DIR] [--mythos BIN]

Set-up: python3 -m venv tools/parity/.venv &&
        tools/parity/.venv/bin/pip install open-mythos==0.5.0 safetensors

The models, their weight perturbations, the seed search and the spec files are
those of make_fixtures.py (imported from it). For every fixture NAME it writes:

  NAME.mythos               the spec (as the parity fixtures', plus an
                            `ffn moe { top_k = .. }` override where needed).
  NAME.weights.safetensors  the float32 state_dict (no freqs_cis buffers, no
                            head.weight; router_bias kept).
  NAME.batch.safetensors    I64 `input_ids` [B, T] and I64 `targets` [B, T]
                            (-100 = not scored).
  NAME.grads.safetensors    the truth: F32 `.grad` of every parameter under its
                            state_dict name, from a float64 copy of the model
                            (`copy.deepcopy(model).double()`, train mode):
                              loss = F.cross_entropy(logits.view(-1, V),
                                                     targets.view(-1), ignore_index=-100)
                              loss.backward()
                            plus the F64 scalar `loss` (that float64 loss).
                            Parameters whose .grad is None are written as zeros.

and manifest.json (fields: see README.md).

logits = model(input_ids, n_loops=loops), no KV cache, model.train(): the loop
breaks once every position has halted, exactly as in the reference's training.

Determinism: CPU, one thread, torch.use_deterministic_algorithms(True),
torch.manual_seed(seed) before each model is built, ids and targets from their
own torch.Generator. Running the script twice gives byte-identical files.
"""
import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable, Optional

sys.dont_write_bytecode = True  # do not rewrite tools/parity/__pycache__ (it is tracked)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
import open_mythos.main as om  # noqa: E402
from open_mythos.main import MythosConfig, OpenMythos  # noqa: E402

import make_fixtures as mf  # noqa: E402  (build_model, make_config, Probe, spec_text, ...)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "grad"
IGNORE = -100
# LTI clamp fixture: log_dt + log_A is put at least this far beyond +-20.
CLAMP_MARGIN = 0.5


@dataclasses.dataclass(frozen=True)
class GradFixture:
    name: str
    attn: str  # "mla" or "gqa"
    what: str
    base_seed: int
    loops: Optional[int] = None  # None = max_loop_iters
    batch: int = 2
    seq: int = 12
    threshold: Optional[float] = None
    halt_bias: Optional[float] = None
    router_bias: bool = False
    top_k: Optional[int] = None  # spec override `ffn moe { top_k = .. }`
    lti_clamp: bool = False  # some channels of log_dt + log_A above 20, some below -20
    ignore: bool = False  # about a third of the targets -100
    require: Optional[Callable] = None  # as make_fixtures.Fixture.require

    def base(self) -> mf.Fixture:
        """The make_fixtures.Fixture with the same model settings."""
        return mf.Fixture(self.name, self.attn, self.what, self.base_seed, loops=self.loops,
                          batch=self.batch, seq=self.seq, threshold=self.threshold,
                          halt_bias=self.halt_bias, router_bias=self.router_bias,
                          require=self.require)


def require_mixed_halting(probe, fx, cfg):
    """The loop exits early (every position halted before max_loop_iters) and the
    positions halt at different iterations (both ACT weight branches are used)."""
    its = probe.iterations()
    steps = [k for k in probe.halt_hist if k != "never"]
    if its[0] >= cfg.max_loop_iters or "never" in probe.halt_hist or len(steps) < 2:
        return f"expected an early exit with mixed halting, ran {its}, halted {probe.halt_hist}"
    return None


def require_past_max_some_never(probe, fx, cfg):
    """All n_loops iterations run (past max_loop_iters); some positions halt, some never."""
    its = probe.iterations()
    h = probe.halt_hist
    if its != [fx.loops] or "never" not in h or len(h) < 2:
        return f"expected {fx.loops} iterations with some never halting, ran {its}, halted {h}"
    return None


# Three fixtures (each tiny model is about 0.5 MB of weights plus 0.5 MB of gradients, so the
# folder stays under 3 MB) that between them cover: GQA and MLA, batch 2, an early exit with
# positions halting at different iterations, halting at iteration 0, positions that never halt
# (lost ACT mass), n_loops > max_loop_iters, a non-zero router_bias, top-1 routing, the LTI
# clamp region, ignored targets.
FIXTURES = [
    GradFixture("gqa_grad_batch2", "gqa", base_seed=21000, router_bias=True, lti_clamp=True,
                ignore=True, require=require_mixed_halting,
                what="tiny GQA, batch 2 x 12, default ACT (threshold 0.99), max loops 4: the loop "
                     "exits early, positions halt at different iterations; router_bias randn*0.5 "
                     "(top-k by logits + bias, gates from the unbiased softmax); log_dt + log_A "
                     "beyond +20 on 6 channels and below -20 on 6 others (clamp: zero gradient "
                     "there); 8 of 24 targets -100"),
    GradFixture("mla_grad_loops_beyond_max", "mla", base_seed=23000, loops=7, halt_bias=-1.75,
                router_bias=True, require=require_past_max_some_never,
                what="tiny MLA, batch 2 x 12, n_loops 7 > max 4: LoRA scale row 3 serves t = 3..6; "
                     "halt bias -1.75 so all 7 iterations run, some positions halt at the last "
                     "ones (remainder weight) and the rest never halt (their ACT mass is lost); "
                     "router_bias randn*0.5"),
    GradFixture("gqa_grad_top1_halts_at_0", "gqa", base_seed=24000, top_k=1, threshold=0.3,
                halt_bias=3.0, require=mf.require_early_exit,
                what="tiny GQA, batch 2 x 12, top_k 1 (the renormalised gate is s/s = 1, so the "
                     "router's gradient is 0 up to rounding); ACT threshold 0.3 and halt bias +3: "
                     "every position halts at iteration 0 with weight max(1 - 0, 0) = 1, the loop "
                     "exits after 1 of 4 (halting head and LoRA scale rows 1..3 get zero gradient)"),
]


def make_config(fx: GradFixture) -> MythosConfig:
    cfg = mf.make_config(fx.base())
    if fx.top_k is not None:
        cfg = dataclasses.replace(cfg, n_experts_per_tok=fx.top_k)
    return cfg


def spec_text(fx: GradFixture) -> str:
    text = mf.spec_text(fx.base())
    lines = text.splitlines()
    assert lines[0].startswith("# Parity fixture ")
    lines[0] = (f"# Gradient fixture {fx.name}, generated by tools/parity/make_grad_fixtures.py; "
                "do not edit.")
    if fx.top_k is not None:
        override = f"  ffn moe {{ top_k = {fx.top_k} }}"
        last = lines[-1]
        if last.endswith("{}"):  # `model NAME extends parent {}`
            lines[-1:] = [last[:-2] + "{", override, "}"]
        else:
            assert last == "}"
            lines[-1:] = [override, "}"]
    return "\n".join(lines) + "\n"


@torch.no_grad()
def build_model(fx: GradFixture, cfg: MythosConfig, seed: int):
    """make_fixtures.build_model, then the LTI clamp change; returns (model, extra)."""
    model = mf.build_model(fx.base(), cfg, seed)
    extra = {}
    if fx.lti_clamp:
        inj = model.recurrent.injection
        dim = inj.log_A.numel()
        perm = torch.randperm(dim)
        high, low = perm[:6].sort().values, perm[6:12].sort().values
        dt = inj.log_dt.item()
        # log_dt + log_A in [20.5, 23] (A = exp(-exp(..)) = 0) and [-23, -20.5] (A ~ 1)
        inj.log_A[high] = 20.0 + CLAMP_MARGIN + torch.rand(6) * 2.5 - dt
        inj.log_A[low] = -20.0 - CLAMP_MARGIN - torch.rand(6) * 2.5 - dt
        s = (inj.log_dt + inj.log_A)
        inside = s.abs() < 20.0
        assert inside.sum().item() == dim - 12
        assert (s[high] > 20.0 + CLAMP_MARGIN * 0.99).all()
        assert (s[low] < -20.0 - CLAMP_MARGIN * 0.99).all()
        assert (s[inside].abs() < 20.0 - CLAMP_MARGIN).all()
        extra["lti_clamped_high"] = high.tolist()
        extra["lti_clamped_low"] = low.tolist()
    model.train()
    return model, extra


def make_batch(fx: GradFixture, cfg: MythosConfig, seed: int):
    gen = torch.Generator().manual_seed(seed)
    # the same first draw as make_fixtures.generate: ids, then targets
    ids = torch.randint(0, cfg.vocab_size, (fx.batch, fx.seq), generator=gen, dtype=torch.int64)
    targets = torch.randint(0, cfg.vocab_size, (fx.batch, fx.seq), generator=gen,
                            dtype=torch.int64)
    if fx.ignore:
        assert fx.batch == 2 and fx.seq == 12
        targets[1, 0:4] = IGNORE  # a block: the start of row 1, as a masked prompt would be
        rest = [i for i in range(fx.batch * fx.seq) if not (i // fx.seq == 1 and i % fx.seq < 4)]
        pick = torch.randperm(len(rest), generator=gen)[:4].tolist()
        flat = targets.view(-1)
        for j in pick:
            flat[rest[j]] = IGNORE
        assert (targets == IGNORE).sum().item() == 8
    return ids, targets


def loss_and_grads(model: OpenMythos, fx: GradFixture, cfg: MythosConfig, ids, targets):
    """One forward in train mode, the loss, backward; returns (loss, {name: grad or None}, probe)."""
    model.train()
    model.zero_grad(set_to_none=True)
    probe = mf.Probe(model, cfg)
    logits = model(ids, n_loops=fx.loops)
    loss = F.cross_entropy(logits.view(-1, cfg.vocab_size), targets.view(-1), ignore_index=IGNORE)
    loss.backward()
    probe.remove()
    grads = {n: (None if p.grad is None else p.grad.detach().clone())
             for n, p in model.named_parameters()}
    return loss.detach(), grads, probe


def check_probe(probe) -> Optional[str]:
    if probe.act_margin < mf.MARGIN:
        return f"ACT test {probe.act_margin:.2e} from the threshold"
    if probe.topk_gap < mf.MARGIN:
        return f"top-k gap {probe.topk_gap:.2e}"
    return None


def generate(fx: GradFixture):
    cfg = make_config(fx)
    rejected = []
    for seed in range(fx.base_seed, fx.base_seed + mf.MAX_SEED_TRIES):
        model, extra = build_model(fx, cfg, seed)
        wide = copy.deepcopy(model).double()  # before any backward: no .grad copied
        ids, targets = make_batch(fx, cfg, seed)
        loss32, g32, probe32 = loss_and_grads(model, fx, cfg, ids, targets)
        why = check_probe(probe32)
        if why is None and fx.require is not None:
            why = fx.require(probe32, fx.base(), cfg)
        if why is None:
            loss64, g64, probe64 = loss_and_grads(wide, fx, cfg, ids, targets)
            why = check_probe(probe64)
            if why is None and probe64.iterations() != probe32.iterations():
                why = f"f64 ran {probe64.iterations()}, f32 {probe32.iterations()}"
        if why is None:
            return dict(seed=seed, cfg=cfg, model=model, wide=wide, extra=extra, ids=ids,
                        targets=targets, loss32=loss32, g32=g32, probe32=probe32, loss64=loss64,
                        g64=g64, probe64=probe64, rejected=rejected)
        rejected.append((seed, why))
    raise SystemExit(f"{fx.name}: no acceptable seed in {mf.MAX_SEED_TRIES} tries: "
                     f"{rejected[-3:]}")


def apply_rope_f64(x, freqs_cis):
    """apply_rope without the float32 round trip (for measuring its effect only)."""
    if x.dtype != torch.float64:
        return _apply_rope_ref(x, freqs_cis)
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs_cis.to(torch.complex128).unsqueeze(0).unsqueeze(2)) \
        .flatten(-2)


_apply_rope_ref = om.apply_rope


FD_EPS = 1e-5
FD_PICKS = 3
FD_MAX_REL = 1e-5


def finite_difference_check(r: dict, fx: GradFixture, cfg: MythosConfig, ids, targets,
                            max_abs_grad: float) -> list:
    """Central differences (L(w + eps) - L(w - eps)) / 2 eps on FD_PICKS scalar parameters.

    The reference's apply_rope rounds q and k to float32 even in a float64 model, which makes
    the loss a step function at the 1e-8 level (useless for a difference quotient), so the
    differences are taken on the float64 model with apply_rope_f64 and compared with autograd
    of that same model; the saved truth (float32 RoPE) is reported beside them. The scalars:
    FD_PICKS distinct parameter tensors drawn with a generator seeded by the fixture's seed,
    then one entry of each drawn among those with |grad| >= 1e-2 * max_abs_grad (smaller ones
    would measure the rounding of the loss, not the gradient). Each perturbed forward must take
    exactly the same ACT and top-k decisions (the probe's margins are >= 1e-4 >> eps).
    """
    om.apply_rope = apply_rope_f64
    try:
        model = copy.deepcopy(r["wide"])
        _, g_pure, probe0 = loss_and_grads(model, fx, cfg, ids, targets)
        floor = 1e-2 * max_abs_grad
        named = [(n, p) for n, p in model.named_parameters()
                 if g_pure[n] is not None and g_pure[n].abs().max().item() >= floor]
        gen = torch.Generator().manual_seed(r["seed"])
        out = []
        for i in torch.randperm(len(named), generator=gen)[:FD_PICKS].tolist():
            name, param = named[i]
            g = g_pure[name].reshape(-1)
            cand = (g.abs() >= floor).nonzero().reshape(-1)
            j = cand[torch.randint(len(cand), (1,), generator=gen)].item()
            flat = param.data.view(-1)
            orig = flat[j].item()
            losses = []
            with torch.no_grad():
                for delta in (FD_EPS, -FD_EPS):
                    flat[j] = orig + delta
                    probe = mf.Probe(model, cfg)
                    logits = model(ids, n_loops=fx.loops)
                    probe.remove()
                    assert probe.iterations() == probe0.iterations() and \
                        probe.halt_hist == probe0.halt_hist, (fx.name, name, j)
                    losses.append(F.cross_entropy(logits.view(-1, cfg.vocab_size),
                                                  targets.view(-1), ignore_index=IGNORE).item())
                flat[j] = orig
            fdq = (losses[0] - losses[1]) / (2 * FD_EPS)
            ag = g[j].item()
            truth = r["g64"][name].reshape(-1)[j].item()
            rel = abs(fdq - ag) / abs(ag)
            out.append({"param": name, "index": j, "autograd_f64": ag, "finite_difference": fdq,
                        "rel_err": rel, "reference_f64": truth,
                        "rel_err_vs_reference": abs(fdq - truth) / abs(truth)})
            assert rel < FD_MAX_REL, (fx.name, out[-1])
        return out
    finally:
        om.apply_rope = _apply_rope_ref


def rel_gap(ga: dict, gb: dict, max_abs_grad: float) -> float:
    """max over tensors of max|a - b| / (max|b| + 1e-3 * max_abs_grad); b is the truth."""
    worst = 0.0
    for n, b in gb.items():
        a = ga[n]
        if a is None and b is None:
            continue
        b = torch.zeros_like(a) if b is None else b
        a = torch.zeros_like(b) if a is None else a
        d = (a.double() - b.double()).abs().max().item()
        worst = max(worst, d / (b.abs().max().item() + 1e-3 * max_abs_grad))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--mythos", metavar="BIN",
                    help="also check that `BIN export openmythos NAME.mythos` gives the config "
                         "the gradients came from (for example target/release/mythos)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)

    manifest = []
    for fx in FIXTURES:
        r = generate(fx)
        cfg, model, ids, targets = r["cfg"], r["model"], r["ids"], r["targets"]
        g32, g64 = r["g32"], r["g64"]
        names = list(g64)

        # The parameter names are exactly the saved weights minus the buffers.
        weights = mf.weights_to_save(model, fx.base())
        assert set(names) == set(weights) - {"recurrent.block.ffn.router_bias"}, \
            set(weights) ^ set(names)
        grad_none = [n for n in names if g64[n] is None]
        assert grad_none == [n for n in names if g32[n] is None], fx.name

        grads = {n: (torch.zeros_like(weights[n]) if g64[n] is None
                     else g64[n].to(torch.float32).contiguous()) for n in names}
        grads["loss"] = r["loss64"].to(torch.float64).reshape(())
        max_abs_grad = max(g.abs().max().item() for n, g in grads.items() if n in g64)
        f32_vs_f64 = rel_gap(g32, g64, max_abs_grad)

        entry_extra = {}
        router = g64["recurrent.block.ffn.router.weight"]
        router_max = router.abs().max().item()
        if fx.top_k == 1:
            # d(s / s)/ds = 1/s - s/s^2 is 0 only up to rounding: the reference's router
            # gradient is a few 1e-20 (float64), not exactly 0.
            router32 = g32["recurrent.block.ffn.router.weight"].abs().max().item()
            assert router_max <= 1e-15 * max_abs_grad, f"{fx.name}: router grad {router_max:.3e}"
            assert router32 <= 1e-6 * max_abs_grad, f"{fx.name}: f32 router grad {router32:.3e}"
            entry_extra = {"router_max_abs_grad_f32": router32}
        else:
            assert router_max > 0.0
        if fx.lti_clamp:
            gA = g64["recurrent.injection.log_A"]
            clamped = r["extra"]["lti_clamped_high"] + r["extra"]["lti_clamped_low"]
            assert (gA[clamped] == 0).all(), gA[clamped]
            assert (gA[[i for i in range(gA.numel()) if i not in clamped]] != 0).all()

        # Effect of the reference's float32 RoPE inside the float64 truth (information).
        om.apply_rope = apply_rope_f64
        try:
            _, g64_rope, p_rope = loss_and_grads(copy.deepcopy(r["wide"]), fx, cfg, ids, targets)
        finally:
            om.apply_rope = _apply_rope_ref
        assert p_rope.iterations() == r["probe64"].iterations()
        rope_effect = rel_gap(g64_rope, g64, max_abs_grad)
        fd_check = finite_difference_check(r, fx, cfg, ids, targets, max_abs_grad)
        # Parameters whose gradient exists but is exactly 0 everywhere (e.g. the halting head
        # when every position halts at iteration 0, or the clamped LTI channels' log_A entries).
        grad_zero = [n for n in names if g64[n] is not None and not g64[n].any()]

        files = {
            "spec": f"{fx.name}.mythos",
            "weights": f"{fx.name}.weights.safetensors",
            "batch": f"{fx.name}.batch.safetensors",
            "grads": f"{fx.name}.grads.safetensors",
        }
        (out_dir / files["spec"]).write_text(spec_text(fx))
        if args.mythos:
            mf.check_spec_with_mythos(args.mythos, out_dir / files["spec"], cfg)
        batch = {"input_ids": ids.contiguous(), "targets": targets.contiguous()}
        save_file(weights, str(out_dir / files["weights"]))
        save_file(batch, str(out_dir / files["batch"]))
        save_file(grads, str(out_dir / files["grads"]))

        # Load back and compare bit for bit.
        for path, want in ((files["weights"], weights), (files["batch"], batch),
                           (files["grads"], grads)):
            got = load_file(str(out_dir / path))
            assert got.keys() == want.keys(), path
            for k in want:
                assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape and \
                    torch.equal(got[k], want[k]), (path, k)

        # The saved files alone reproduce the gradients (fresh model, strict load).
        fresh = OpenMythos(cfg)
        sd = dict(load_file(str(out_dir / files["weights"])))
        sd["head.weight"] = sd["embed.weight"]
        sd["freqs_cis"] = fresh.freqs_cis
        sd["freqs_cis_mla"] = fresh.freqs_cis_mla
        fresh.load_state_dict(sd, strict=True)
        assert fresh.head.weight is fresh.embed.weight
        b = load_file(str(out_dir / files["batch"]))
        fresh64 = copy.deepcopy(fresh).double()
        loss_a, ga, _ = loss_and_grads(fresh64, fx, cfg, b["input_ids"], b["targets"])
        saved = load_file(str(out_dir / files["grads"]))
        assert loss_a.item() == saved["loss"].item(), fx.name
        for n in names:
            want = saved[n]
            got = torch.zeros_like(want) if ga[n] is None else ga[n].float()
            assert torch.equal(got, want), (fx.name, n)
        loss_b, gb, _ = loss_and_grads(fresh, fx, cfg, b["input_ids"], b["targets"])
        assert loss_b.item() == r["loss32"].item()
        for n in names:
            assert (gb[n] is None and g32[n] is None) or torch.equal(gb[n], g32[n]), (fx.name, n)

        probe = r["probe64"]
        hist = probe.halt_hist
        halted_at = {str(k): hist[k] for k in sorted(k for k in hist if k != "never")}
        if "never" in hist:
            halted_at["never"] = hist["never"]
        entry = {
            "name": fx.name,
            "spec": files["spec"],
            "model": fx.name,
            "weights": files["weights"],
            "batch": files["batch"],
            "grads": files["grads"],
            "loops": fx.loops,
            "batch_size": fx.batch,
            "seq": fx.seq,
            "what": fx.what,
            "seed": r["seed"],
            "iterations": probe.iterations()[0],
            "halted_at": halted_at,
            "act_margin": min(probe.act_margin, r["probe32"].act_margin),
            "topk_gap": min(probe.topk_gap, r["probe32"].topk_gap),
            "scored": int((targets != IGNORE).sum().item()),
            "loss": r["loss64"].item(),
            "loss_f32": r["loss32"].item(),
            "max_abs_grad": max_abs_grad,
            "f32_vs_f64": f32_vs_f64,
            "rope_f32_effect": rope_effect,
            "grad_none": grad_none,
            "grad_zero": grad_zero,
            "buffers": ["recurrent.block.ffn.router_bias"],
            "tied": {"head.weight": "embed.weight"},
            "router_max_abs_grad": router_max,
        }
        entry.update(entry_extra)
        entry.update(r["extra"])
        entry["fd_check"] = fd_check
        manifest.append(entry)
        print(f"{fx.name}: seed {r['seed']} (rejected {r['rejected']}), loss {entry['loss']:.6f} "
              f"(f32 {entry['loss_f32']:.6f}), scored {entry['scored']}, iterations "
              f"{probe.iterations()}, halted at {halted_at}, ACT margin {entry['act_margin']:.2e}, "
              f"top-k gap {entry['topk_gap']:.2e}, max|g| {max_abs_grad:.4g}, f32_vs_f64 "
              f"{f32_vs_f64:.2e}, rope_f32_effect {rope_effect:.2e}, router max|g| "
              f"{router_max:.3e}, grad None: {grad_none}, grad all zero: {grad_zero}"
              + (f", {r['extra']}" if r["extra"] else ""))
        for c in fd_check:
            print(f"    finite difference {c['param']}[{c['index']}]: autograd {c['autograd_f64']:.10e}"
                  f" fd {c['finite_difference']:.10e} rel {c['rel_err']:.2e} (vs the reference's own f64 autograd "
                  f"{c['rel_err_vs_reference']:.2e})")

    expected = {"manifest.json"} | {f for e in manifest
                                    for f in (e["spec"], e["weights"], e["batch"], e["grads"])}
    stale = sorted(p.name for p in out_dir.iterdir() if p.name not in expected)
    if stale:
        raise SystemExit(f"{out_dir} holds files no fixture wrote (remove them): {stale}")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = 0
    for p in sorted(out_dir.iterdir()):
        total += p.stat().st_size
        print(f"  {p.name:44s} {p.stat().st_size:9d}  {mf.sha256(p)[:16]}")
    print(f"  total {total} bytes")


if __name__ == "__main__":
    main()
