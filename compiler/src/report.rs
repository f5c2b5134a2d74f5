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
            let _ = writeln!(
                s,
                "    halt none (always {} iterations unless --loops)",
                r.max_iters
            );
        }
    }
    if r.lora_rank == 0 {
        let _ = writeln!(s, "    lora off");
    } else {
        let _ = writeln!(
            s,
            "    lora rank {} (per-iteration scale, clamped at iteration {})",
            r.lora_rank,
            r.max_iters - 1
        );
    }
    match r.loop_embedding {
        Some(e) => {
            let _ = writeln!(
                s,
                "    loop_embedding sincos over {} channels (theta {})",
                e.channels, e.theta
            );
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
        lines.push(format!(
            "{run} x block({}, {})",
            attention(&b.attention),
            ffn(&b.ffn)
        ));
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
        FfnKind::Moe {
            experts,
            shared,
            top_k,
            expert_dim,
            shared_dim,
            router_bias,
        } => format!(
            "moe: {experts} experts top-{top_k} x {expert_dim}, {shared} shared x {shared_dim}{}",
            if router_bias { ", router bias" } else { "" }
        ),
    }
}

/// The `mythos inspect` tables.
pub fn inspect(r: &crate::analysis::Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model {}   seq {}   loops {} (max {})   storage {}",
        r.model,
        r.seq,
        r.loops,
        r.max_loops,
        match r.dtype {
            crate::analysis::StorageType::F32 => "f32",
            crate::analysis::StorageType::Bf16 => "bf16",
            crate::analysis::StorageType::Fp8 => "fp8",
        }
    );
    let _ = writeln!(s, "\nparameters");
    let _ = writeln!(
        s,
        "  total             {:>20}  ({})",
        group(r.params.total),
        human(r.params.total as f64, "")
    );
    let _ = writeln!(
        s,
        "  active per token  {:>20}  ({})",
        group(r.params.active_per_token),
        human(r.params.active_per_token as f64, "")
    );
    if r.params.buffers > 0 {
        let _ = writeln!(
            s,
            "  buffers           {:>20}  (router bias; not parameters)",
            group(r.params.buffers)
        );
    }
    let _ = writeln!(
        s,
        "\n  {:<18} {:>16} {:>16} {:>16}",
        "component", "params", "prefill FLOP/tok", "decode FLOP/tok"
    );
    let mut names: Vec<&String> = r
        .params
        .by_component
        .keys()
        .chain(r.flops.by_component.keys())
        .collect();
    names.sort_by_key(|n| component_order(n));
    names.dedup();
    for name in names {
        let p = r.params.by_component.get(name).copied().unwrap_or(0);
        let f = r.flops.by_component.get(name).copied().unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<18} {:>16} {:>16} {:>16}",
            name,
            human(p as f64, ""),
            human(f.prefill_per_token, ""),
            human(f.decode_per_token, "")
        );
    }
    let _ = writeln!(
        s,
        "\nFLOPs (matrix products, 2 per multiply-add; loop counted {} times)",
        r.loops
    );
    let _ = writeln!(
        s,
        "  prefill per token {:>12}   whole prefill of {} tokens {:>12}",
        human(r.flops.prefill_per_token, "FLOP"),
        r.seq,
        human(r.flops.prefill_total, "FLOP")
    );
    let _ = writeln!(
        s,
        "  decode per token  {:>12}   (at context {})",
        human(r.flops.decode_per_token, "FLOP"),
        r.seq
    );
    let _ = writeln!(s, "\nmemory");
    let _ = writeln!(
        s,
        "  weights           {:>12} f32   {:>12} bf16   {:>12} fp8",
        human(r.weights.bytes_f32 as f64, "B"),
        human(r.weights.bytes_bf16 as f64, "B"),
        human(r.weights.bytes_fp8 as f64, "B")
    );
    let _ = writeln!(
        s,
        "  KV cache/token    {:>12} reference   {:>12} compact   ({} entries: prelude + {} loops + coda)",
        human(r.kv_cache.bytes_per_token as f64, "B"),
        human(r.kv_cache.compact_bytes_per_token as f64, "B"),
        r.kv_cache.entries,
        r.loops
    );
    let _ = writeln!(
        s,
        "  KV cache at {:<6}{:>12} compact",
        r.seq,
        human(r.kv_cache.compact_bytes_at_seq as f64, "B")
    );
    let _ = writeln!(s, "\ndecode at batch 1 (memory bound)");
    let _ = writeln!(
        s,
        "  weights read/tok  {:>12}",
        human(r.decode.weight_bytes_per_token as f64, "B")
    );
    let _ = writeln!(
        s,
        "  KV read/tok       {:>12}   (context {})",
        human(r.decode.kv_bytes_per_token as f64, "B"),
        r.seq
    );
    let _ = writeln!(
        s,
        "  ceiling           {:>12}   at {}/s",
        format!("{:.1} tok/s", r.decode.tokens_per_s_ceiling),
        human(r.decode.bandwidth, "B")
    );
    if let Some(o) = &r.optimization {
        let _ = writeln!(
            s,
            "\nkernels (graph nodes a backend runs; -O0 = the IR as lowered)"
        );
        let _ = writeln!(
            s,
            "  {:<24} {:>14} {:>14}",
            "",
            "-O0",
            format!("-O{}", o.level)
        );
        type Figure = fn(&crate::analysis::Kernels) -> u64;
        let rows: [(&str, Figure, &str); 5] = [
            ("kernels per forward", |k| k.per_forward, ""),
            ("kernels per decode step", |k| k.per_decode_step, ""),
            ("bytes moved per forward", |k| k.bytes_per_forward, "B"),
            ("bytes moved per decode", |k| k.bytes_per_decode_step, "B"),
            ("KV cache per token", |k| k.kv_bytes_per_token, "B"),
        ];
        for (name, figure, unit) in rows {
            let _ = writeln!(
                s,
                "  {name:<24} {:>14} {:>14}",
                human(figure(&o.before) as f64, unit),
                human(figure(&o.after) as f64, unit)
            );
        }
        if !o.passes.is_empty() {
            let _ = writeln!(s, "  passes: {}", o.passes.join(", "));
        }
    }
    s
}

/// Order of components in tables: embedding, prelude, loop, coda, head.
fn component_order(name: &str) -> (u8, String) {
    let rank = match name.split('.').next().unwrap_or("") {
        "embedding" => 0,
        "prelude" => 1,
        "loop" => 2,
        "coda" => 3,
        "final_norm" => 4,
        "head" => 5,
        _ => 6,
    };
    // Numbers sort numerically: prelude.10 after prelude.9.
    let key = name
        .split('.')
        .map(|p| {
            p.parse::<u64>()
                .map_or(p.to_string(), |n| format!("{n:08}"))
        })
        .collect::<Vec<_>>()
        .join(".");
    (rank, key)
}

/// `1,064,028,034`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.06 G`, `3.35 TB`.
fn human(v: f64, unit: &str) -> String {
    if v == 0.0 {
        return "-".to_string();
    }
    if v.abs() < 1000.0 && v.fract() == 0.0 {
        let sep = if unit.is_empty() { "" } else { " " };
        return format!("{v}{sep}{unit}");
    }
    let (scaled, prefix) = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .iter()
        .find(|(f, _)| v.abs() >= *f)
        .map_or((v, ""), |&(f, p)| (v / f, p));
    let sep = if unit.is_empty() && prefix.is_empty() {
        ""
    } else {
        " "
    };
    format!("{scaled:.2}{sep}{prefix}{unit}")
}
