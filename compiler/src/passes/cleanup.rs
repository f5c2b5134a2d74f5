//! `canonicalize`, `cse` and `dce`.

use super::{add_typed, each_graph};
use crate::ir::effects::OpKey;
use crate::ir::{Graph, Module, NodeId, Op, RowOp};
use std::collections::{HashMap, HashSet};

/// Splits the composite loop ops into an invariant or per-step part and a
/// row-local part, so that `hoist` can move the first out of the loop:
/// - `lti_update(h, e, out, log_A, log_dt, B)` -> `lti_apply(h, scale(e, B), out, lti_decay(log_A, log_dt))`
/// - `loop_embedding(h, t)` -> `add_prefix(h, loop_embedding_vec(t))`
/// - `lora(x, down, B, scale, t)` -> `lora_apply(x, down, B, lora_scale(scale, t))`
///
/// The arithmetic is the same, in the same order.
pub fn canonicalize(module: &mut Module) -> usize {
    let (weights, graph) = (&module.weights, &mut module.graph);
    each_graph(graph, &mut |g| {
        let mut n = 0;
        let ids: Vec<NodeId> = g.nodes().collect();
        for id in ids {
            let label = g.node(id).label.clone();
            let ops = g.operands(id);
            // Nodes made besides the replacement; they share its span.
            let parts: Vec<NodeId>;
            let new = match g.op(id).clone() {
                Op::LtiUpdate => {
                    let (h, e, out, log_a, log_dt, b) =
                        (ops[0], ops[1], ops[2], ops[3], ops[4], ops[5]);
                    let a = add_typed(
                        g,
                        weights,
                        Op::LtiDecay,
                        &[log_a, log_dt],
                        &format!("{label}.decay"),
                    );
                    let be = add_typed(
                        g,
                        weights,
                        Op::Row(RowOp::Scale),
                        &[e, b],
                        &format!("{label}.b_e"),
                    );
                    parts = vec![a, be];
                    add_typed(
                        g,
                        weights,
                        Op::Row(RowOp::LtiApply),
                        &[h, be, out, a],
                        &label,
                    )
                }
                Op::LoopEmbedding { channels, theta } => {
                    let v = add_typed(
                        g,
                        weights,
                        Op::LoopEmbeddingVec { channels, theta },
                        &[ops[1]],
                        &format!("{label}.vec"),
                    );
                    parts = vec![v];
                    add_typed(g, weights, Op::Row(RowOp::AddPrefix), &[ops[0], v], &label)
                }
                Op::Lora { rank, max_iters } => {
                    let s = add_typed(
                        g,
                        weights,
                        Op::LoraScale { max_iters },
                        &[ops[3], ops[4]],
                        &format!("{label}.scale"),
                    );
                    parts = vec![s];
                    add_typed(
                        g,
                        weights,
                        Op::LoraApply { rank },
                        &[ops[0], ops[1], ops[2], s],
                        &label,
                    )
                }
                _ => continue,
            };
            if let Some(span) = g.span(id) {
                for made in parts.into_iter().chain([new]) {
                    g.set_span(made, span);
                }
            }
            g.replace_uses(id, new);
            g.remove(id);
            n += 1;
        }
        n
    })
}

/// Merges nodes with the same op and operands (a weight read twice, the same
/// norm of the same value), by [`Op::cse_key`]: attention and loops are never
/// merged (they own cache slots and regions), nor are fused groups.
pub fn cse(module: &mut Module) -> usize {
    each_graph(&mut module.graph, &mut |g| {
        let Ok(order) = g.topo_order() else {
            return 0;
        };
        let mut seen: HashMap<(OpKey, Vec<NodeId>), NodeId> = HashMap::new();
        let mut n = 0;
        for id in order {
            let Some(op_key) = g.op(id).cse_key() else {
                continue;
            };
            let key = (op_key, g.operands(id));
            match seen.get(&key) {
                Some(&first) => {
                    g.replace_uses(id, first);
                    g.remove(id);
                    n += 1;
                }
                None => {
                    seen.insert(key, id);
                }
            }
        }
        n
    })
}

/// Removes nodes that no output depends on. Loop-body params are kept (their
/// positions are the loop's interface).
pub fn dce(module: &mut Module) -> usize {
    each_graph(&mut module.graph, &mut dce_graph)
}

pub(super) fn dce_graph(g: &mut Graph) -> usize {
    let mut live: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = g.outputs.clone();
    while let Some(n) = stack.pop() {
        if live.insert(n) {
            stack.extend(g.operands(n));
        }
    }
    let dead: Vec<NodeId> = g
        .nodes()
        .filter(|n| !live.contains(n) && !matches!(g.op(*n), Op::Param(_)))
        .collect();
    for &n in &dead {
        g.remove(n);
    }
    dead.len()
}
