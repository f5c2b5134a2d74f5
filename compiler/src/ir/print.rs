//! Deterministic printers: a text form (snapshots, `mythos graph --format
//! text`, `--print-ir-after` later) and Graphviz DOT (`--format dot`).
//! Nodes are numbered in topological order, so the text is stable across runs.

use super::attrs::Attr;
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
            type_text(g, n),
            node.label
        );
        if let Op::Fused(f) = &node.op {
            graph_text(module, &f.body, "group", indent + 2, s);
        }
        if let Some(region) = node.op.loop_region() {
            if !region.header.is_empty() {
                graph_text(
                    module,
                    &region.header,
                    "header(%t = param 0)",
                    indent + 2,
                    s,
                );
            }
            let mut params = "%h = param 0, %e = param 1, %t = param 2".to_string();
            for (i, c) in region.carried.iter().enumerate() {
                let _ = write!(params, ", %{} = param {}", c.name, region.carried_param(i));
            }
            let first = region.first_invariant();
            let extra = region.invariants + region.header.outputs.len();
            if extra > 0 {
                let _ = write!(params, ", params {first}..{}", first + extra);
            }
            if let Op::LoopVjp(_) = &node.op {
                let cotangents = 1 + region.carried.len();
                let at = first + extra;
                let _ = write!(params, ", cotangents {at}..{}", at + cotangents);
            }
            graph_text(
                module,
                &region.body,
                &format!("body({params})"),
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

/// `[attr, ...]` after the op name (nothing without attributes).
fn attributes(module: &Module, op: &Op) -> String {
    let parts: Vec<String> = op
        .attrs()
        .iter()
        .map(|a| match a {
            Attr::Weight(id) => format!("{a} {}", module.weight(*id).name),
            a => a.to_string(),
        })
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("[{}]", parts.join(" "))
    }
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
        let label =
            format!("{}\\n{}\\n{}", node.op.name(), node.label, type_text(g, n)).replace('"', "'");
        let _ = writeln!(s, "  {} [label=\"{label}\"];", id(n));
        if let Some(region) = node.op.loop_region() {
            // The header's per-iteration constants are not drawn (they are listed by `--format text`).
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

/// A node's type; a tuple's element types in parentheses.
fn type_text(g: &Graph, n: NodeId) -> String {
    match g.results(n) {
        None => g.ty(n).to_string(),
        Some(items) => {
            let items: Vec<String> = items.iter().map(|t| t.to_string()).collect();
            format!("({})", items.join(", "))
        }
    }
}
