//! `fuse`: the kernels a backend launches.
//!
//! 1. Norm into the consumer's prologue: an RMSNorm whose every user is an
//!    attention, SwiGLU, MoE or head taking it as input disappears into them
//!    (`prenorm`; the norm weight becomes their operand 1).
//! 2. Residual add into the producer's epilogue: `x + op(x)` where `op` is
//!    such a composite used once becomes `op` with `residual`.
//! 3. Row-local chains (`add`, `scale`, `lti_apply`, `add_prefix`, `rmsnorm`,
//!    `concat`) where each value but the last has one use become one `fused`
//!    node: e.g. the loop's entry (loop embedding + `e` + norm) and its update
//!    (LoRA residual + LTI).
//!
//! Each rewrite keeps the arithmetic of every element (float addition is
//! commutative, so `op(x) + x` equals `x + op(x)` bit for bit).

use super::add_typed;
use crate::ir::{args, FusedOp, Fusion, Graph, Module, NodeId, Op, RowOp, Weight};
use std::collections::{BTreeMap, HashMap};

pub fn fuse(module: &mut Module) -> usize {
    fuse_graph(&mut module.graph, &module.weights)
}

/// The graph and its loop bodies; not fused bodies (already one kernel) and
/// not loop headers (constants computed once).
fn fuse_graph(g: &mut Graph, weights: &[Weight]) -> usize {
    let mut n = prologue_norms(g) + epilogue_residuals(g) + row_groups(g, weights);
    let ids: Vec<NodeId> = g.nodes().collect();
    for id in ids {
        if let Op::Loop(region) = &mut g.node_mut(id).op {
            n += fuse_graph(&mut region.body, weights);
        }
    }
    n
}

fn prologue_norms(g: &mut Graph) -> usize {
    let norms: Vec<NodeId> = g
        .nodes()
        .filter(|&n| matches!(g.op(n), Op::Row(RowOp::RmsNorm { .. })))
        .collect();
    let mut n = 0;
    for norm in norms {
        let Op::Row(RowOp::RmsNorm { eps }) = *g.op(norm) else {
            continue;
        };
        let users = g.users(norm);
        let fits = |u: NodeId| {
            let ops = g.operands(u);
            g.op(u).can_fuse().0
                && g.op(u).fusion().prenorm.is_none()
                && ops[0] == norm
                && ops[1..].iter().all(|&o| o != norm)
        };
        if users.is_empty() || g.outputs.contains(&norm) || !users.iter().all(|&u| fits(u)) {
            continue;
        }
        let (x, w) = {
            let ops = g.operands(norm);
            (ops[0], ops[1])
        };
        for u in users {
            let before = g.op(u).fusion();
            let old = g.operands(u);
            let (_, _, own) = before.split(&old);
            let ops = args::join(x, Some(w), own.iter().copied());
            let fusion = Fusion {
                prenorm: Some(eps),
                ..before
            };
            g.node_mut(u).op = g.op(u).with_fusion(fusion);
            g.set_operands(u, &ops);
            let label = format!("{}+{}", g.node(norm).label, g.node(u).label);
            g.node_mut(u).label = label;
        }
        g.remove(norm);
        n += 1;
    }
    n
}

fn epilogue_residuals(g: &mut Graph) -> usize {
    let adds: Vec<NodeId> = g
        .nodes()
        .filter(|&n| matches!(g.op(n), Op::Row(RowOp::Add)))
        .collect();
    let mut n = 0;
    for add in adds {
        let ops = g.operands(add);
        let producer = [(ops[1], ops[0]), (ops[0], ops[1])]
            .into_iter()
            .find(|&(y, x)| {
                let f = g.op(y).fusion();
                g.op(y).can_fuse().1 && !f.residual && g.use_count(y) == 1 && g.operands(y)[0] == x
            });
        let Some((y, _)) = producer else {
            continue;
        };
        let fusion = Fusion {
            residual: true,
            ..g.op(y).fusion()
        };
        g.node_mut(y).op = g.op(y).with_fusion(fusion);
        let label = format!("{}+{}", g.node(y).label, g.node(add).label);
        g.node_mut(y).label = label;
        g.replace_uses(add, y);
        g.remove(add);
        n += 1;
    }
    n
}

/// Groups chains of row-local ops into `fused` nodes; returns the number of groups.
fn row_groups(g: &mut Graph, weights: &[Weight]) -> usize {
    let Ok(order) = g.topo_order() else {
        return 0;
    };
    let admits = |n: NodeId| FusedOp::admits(g.op(n));
    // Union each row-local value with its only user when that user is row-local too.
    let mut root: HashMap<NodeId, NodeId> = HashMap::new();
    fn find(root: &HashMap<NodeId, NodeId>, mut n: NodeId) -> NodeId {
        while let Some(&r) = root.get(&n) {
            if r == n {
                break;
            }
            n = r;
        }
        n
    }
    for &n in &order {
        if admits(n) {
            root.insert(n, n);
        }
    }
    for &n in &order {
        if !admits(n) || g.use_count(n) != 1 || g.outputs.contains(&n) {
            continue;
        }
        let user = g.users(n)[0];
        if admits(user) {
            let (a, b) = (find(&root, n), find(&root, user));
            root.insert(a, b);
        }
    }
    let mut groups: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
    for &n in &order {
        if admits(n) {
            groups.entry(find(&root, n)).or_default().push(n);
        }
    }
    let mut made = 0;
    for (_, members) in groups {
        if members.len() < 2 {
            continue;
        }
        // The sink is the member whose users are all outside (members are in
        // topo order). `map` takes members and outside operands to body nodes.
        let sink = *members.last().expect("two members");
        let mut body = Graph::default();
        let mut map: HashMap<NodeId, NodeId> = HashMap::new();
        let mut inputs: Vec<NodeId> = Vec::new();
        for &m in &members {
            let mut ops = Vec::new();
            for o in g.operands(m) {
                let mapped = if let Some(&p) = map.get(&o) {
                    p
                } else {
                    let p = body.add(
                        Op::Param(inputs.len()),
                        &[],
                        g.ty(o).clone(),
                        g.node(o).label.clone(),
                    );
                    inputs.push(o);
                    map.insert(o, p);
                    p
                };
                ops.push(mapped);
            }
            let copy = body.add(
                g.op(m).clone(),
                &ops,
                g.ty(m).clone(),
                g.node(m).label.clone(),
            );
            map.insert(m, copy);
        }
        body.outputs = vec![map[&sink]];
        let labels: Vec<&str> = members.iter().map(|&m| g.node(m).label.as_str()).collect();
        let label = labels.join("+");
        let span = g.span(sink);
        let fused = add_typed(
            g,
            weights,
            Op::Fused(Box::new(FusedOp { body })),
            &inputs,
            &label,
        );
        if let Some(span) = span {
            g.set_span(fused, span);
        }
        g.replace_uses(sink, fused);
        for m in members.into_iter().rev() {
            g.remove(m);
        }
        made += 1;
    }
    made
}
