//! Human-readable structure of a checked model (`mythos show`).

use crate::model::*;
use std::fmt::Write;

/// A tree view of the model: settings, then each stage with its blocks
/// (runs of identical blocks folded into `N x`).
pub fn structure(m: &Model) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "model {}", m.name);
    let _ = writeln!(
        s,
        "  vocab {}  dim {}  max_seq {}  rope_theta {}  norm_eps {:e}  tied head {}  dropout {}",
        m.vocab,
        m.dim,
        m.max_seq,
        m.rope_theta,
        m.norm_eps,
        if m.tie_embeddings { "yes" } else { "no" },
        m.dropout
    );
    stage(&mut s, "prelude", &m.prelude);
    let r = &m.recurrence;
    let _ = writeln!(s, "  loop (max {} iterations)", r.max_iters);
    for line in block_lines(&r.body) {
        let _ = writeln!(s, "    {line}");
    }
    let inject = match r.inject {
        Injection::Lti => "lti   h = A*h + B*e + block(norm(h + e)), A = exp(-exp(log_dt + log_A))",
        Injection::Add => "add   h = block(norm(h + e))",
        Injection::Concat => "concat   h = block(adapter([h, e])), adapter: Linear(2*dim -> dim)",
        Injection::None => "none   h = block(h)",
    };
    let _ = writeln!(s, "    inject {inject}");
    match r.halt {
        Halting::Act { threshold } => {
            let _ = writeln!(s, "    halt act (threshold {threshold})");
        }
        Halting::None => {
            let _ = writeln!(s, "    halt none (always {} iterations unless --loops)", r.max_iters);
        }
    }
    if r.lora_rank == 0 {
        let _ = writeln!(s, "    lora off");
    } else {
        let _ = writeln!(s, "    lora rank {} (per-iteration scale, clamped at iteration {})", r.lora_rank, r.max_iters - 1);
    }
    match r.loop_embedding {
        Some(e) => {
            let _ = writeln!(s, "    loop_embedding sincos over {} channels (theta {})", e.channels, e.theta);
        }
        None => {
            let _ = writeln!(s, "    loop_embedding off");
        }
    }
    stage(&mut s, "coda", &m.coda);
    s
}

fn stage(s: &mut String, name: &str, blocks: &[Block]) {
    if blocks.is_empty() {
        let _ = writeln!(s, "  {name} (none)");
        return;
    }
    let _ = writeln!(s, "  {name} ({} blocks)", blocks.len());
    for line in block_lines(blocks) {
        let _ = writeln!(s, "    {line}");
    }
}

fn block_lines(blocks: &[Block]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let run = blocks[i..].iter().take_while(|b| **b == blocks[i]).count();
        let b = &blocks[i];
        lines.push(format!("{run} x block({}, {})", attention(&b.attention), ffn(&b.ffn)));
        i += run;
    }
    lines
}

/// `gqa(heads 16, kv_heads 4)` etc.
pub fn attention(a: &Attention) -> String {
    match a.kind {
        AttentionKind::Gqa { heads, kv_heads } => format!("gqa: {heads} heads, {kv_heads} kv heads"),
        AttentionKind::Mha { heads } => format!("mha: {heads} heads"),
        AttentionKind::Mla { heads, q_rank, kv_rank, rope_dim, nope_dim, v_dim, .. } => format!(
            "mla: {heads} heads, q_rank {q_rank}, kv_rank {kv_rank}, qk {nope_dim}+{rope_dim} (rope), v {v_dim}"
        ),
    }
}

/// `dense(hidden 2730)` or `moe(...)`.
pub fn ffn(f: &Ffn) -> String {
    match f.kind {
        FfnKind::Dense { hidden } => format!("dense swiglu: hidden {hidden}"),
        FfnKind::Moe { experts, shared, top_k, expert_dim, shared_dim, router_bias } => format!(
            "moe: {experts} experts top-{top_k} x {expert_dim}, {shared} shared x {shared_dim}{}",
            if router_bias { ", router bias" } else { "" }
        ),
    }
}
