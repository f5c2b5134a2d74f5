//! Deterministic printers: a text form (snapshots, `mythos graph --format
//! text`, `--print-ir-after` later) and Graphviz DOT (`--format dot`).
//! Nodes are numbered in topological order, so the text is stable across runs.

use super::*;
use std::collections::HashMap;
use std::fmt::Write;

/// The text form of a module.
pub fn text(module: &Module) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "module {} (dim {}, vocab {}, max_seq {})",
        module.name, module.dim, module.vocab, module.max_seq
    );
    let _ = writeln!(s, "weights {{");
    for (i, w) in module.weights.iter().enumerate() {
        let shape: Vec<String> = w.shape.iter().map(|d| d.to_string()).collect();
        let mut extra = String::new();
        if let Some(st) = w.stacked {
            let _ = write!(extra, " stacked {}/{} active", st.active, st.count);
        }
        if w.buffer {
            extra.push_str(" buffer");
        }
        let init = match w.init {
            Init::Normal { std } => format!("normal({std})"),
            Init::Uniform { bound } => format!("uniform(+-{bound:.6})"),
            Init::Const { value } => format!("const({value})"),
        };
        let _ = writeln!(
            s,
            "  w{i} {} [{}] init {init}{extra}  # {}",
            w.name,
            shape.join(", "),
            w.component
        );
    }
    let _ = writeln!(s, "}}");
    graph_text(module, &module.graph, "main", 0, &mut s);
    s
}

fn graph_text(module: &Module, g: &Graph, header: &str, indent: usize, s: &mut String) {
    let pad = "  ".repeat(indent);
    let order = g.topo_order().unwrap_or_else(|_| g.nodes().collect());
    let number: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let _ = writeln!(s, "{pad}{header} {{");
    for &n in &order {
        let node = g.node(n);
        let operands: Vec<String> = g
            .operands(n)
            .iter()
            .map(|o| number.get(o).map_or("%?".to_string(), |i| format!("%{i}")))
            .collect();
        let attrs = attributes(module, &node.op);
        let args = if operands.is_empty() {
            String::new()
        } else {
            format!("({})", operands.join(", "))
        };
        let _ = writeln!(
            s,
            "{pad}  %{} = {}{attrs}{args} : {}  # {}",
            number[&n],
            node.op.name(),
            g.ty(n),
            node.label
        );
        if let Op::Loop(region) = &node.op {
            graph_text(
                module,
                &region.body,
                "body(%h = param 0, %e = param 1, %t = param 2)",
                indent + 2,
                s,
            );
        }
    }
    let outs: Vec<String> = g
        .outputs
        .iter()
        .map(|o| number.get(o).map_or("%?".into(), |i| format!("%{i}")))
        .collect();
    let _ = writeln!(s, "{pad}  return {}", outs.join(", "));
    let _ = writeln!(s, "{pad}}}");
}

/// `[attr, ...]` after the op name.
fn attributes(module: &Module, op: &Op) -> String {
    let a = match op {
        Op::Param(i) => format!("{i}"),
        Op::Weight(id) => format!("w{} {}", id.0, module.weight(*id).name),
        Op::RmsNorm { eps } => format!("eps={eps:e}"),
        Op::Attention(a) => {
            let kind = match a.kind {
                AttnKind::Gqa { heads, kv_heads, head_dim } => format!("heads={heads} kv_heads={kv_heads} head_dim={head_dim}"),
                AttnKind::Mla { heads, q_rank, kv_rank, rope_dim, nope_dim, v_dim } => format!(
                    "heads={heads} q_rank={q_rank} kv_rank={kv_rank} rope_dim={rope_dim} nope_dim={nope_dim} v_dim={v_dim}"
                ),
            };
            format!("{kind} rope_theta={} cache={}", a.rope_theta, a.cache)
        }
        Op::Moe(m) => format!(
            "experts={} top_k={} expert_dim={} shared={} shared_dim={} router_bias={}",
            m.experts, m.top_k, m.expert_dim, m.shared, m.shared_dim, m.router_bias
        ),
        Op::LoopEmbedding { channels, theta } => format!("channels={channels} theta={theta}"),
        Op::Lora { rank, max_iters } => format!("rank={rank} max_iters={max_iters}"),
        Op::Loop(r) => {
            let halt = r
                .act_threshold
                .map_or("none".to_string(), |t| format!("act({t})"));
            format!(
                "max_iters={} inject={} halt={halt}",
                r.max_iters,
                r.inject.name()
            )
        }
        _ => return String::new(),
    };
    format!("[{a}]")
}

/// Graphviz DOT; loop bodies are clusters.
pub fn dot(module: &Module) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", module.name);
    let _ = writeln!(
        s,
        "  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];"
    );
    let mut counter = 0usize;
    dot_graph(&module.graph, "g", &mut counter, &mut s);
    let _ = writeln!(s, "}}");
    s
}

fn dot_graph(g: &Graph, prefix: &str, counter: &mut usize, s: &mut String) {
    let order = g.topo_order().unwrap_or_else(|_| g.nodes().collect());
    let id = |n: NodeId| format!("{prefix}_{}", n.index());
    for &n in &order {
        let node = g.node(n);
        if let Op::Weight(_) = node.op {
            // Weights are listed in the node that uses them, to keep the picture readable.
            continue;
        }
        let label = format!("{}\\n{}\\n{}", node.op.name(), node.label, g.ty(n)).replace('"', "'");
        let _ = writeln!(s, "  {} [label=\"{label}\"];", id(n));
        if let Op::Loop(region) = &node.op {
            *counter += 1;
            let inner = format!("{prefix}_l{}", *counter);
            let _ = writeln!(
                s,
                "  subgraph cluster_{inner} {{\n  label=\"loop max {}\"; style=dashed;",
                region.max_iters
            );
            dot_graph(&region.body, &inner, counter, s);
            let _ = writeln!(s, "  }}");
            for &o in &region.body.outputs {
                let _ = writeln!(s, "  {inner}_{} -> {} [style=dotted];", o.index(), id(n));
            }
        }
        for o in g.operands(n) {
            if !matches!(g.op(o), Op::Weight(_)) {
                let _ = writeln!(s, "  {} -> {};", id(o), id(n));
            }
        }
    }
}
