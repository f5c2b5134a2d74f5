//! `hoist`: loop-invariant code motion out of the recurrence.
//!
//! A loop-body value that depends only on `e` (the prelude output) and
//! weights is the same in every iteration: it moves before the loop and
//! enters as a new loop operand (`B*e`, the LTI decay `A`). A value that
//! depends only on the iteration index `t` and weights is the same for every
//! token: it moves into the loop header, which a runtime evaluates once per
//! index (loop-embedding vectors, LoRA scale rows).

use super::cleanup::dce_graph;
use crate::ir::effects::Effect;
use crate::ir::{Graph, Module, NodeId, Op};
use std::collections::HashMap;

/// What a body value depends on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Class {
    /// Weights only.
    Const,
    /// `e`, loop invariants and weights.
    Invariant,
    /// `t` and weights.
    PerStep,
    /// The state, or both `e` and `t`, or a side effect (attention's cache).
    Variant,
}

fn join(a: Class, b: Class) -> Class {
    use Class::*;
    match (a, b) {
        (Variant, _) | (_, Variant) => Variant,
        (Const, x) | (x, Const) => x,
        (Invariant, Invariant) => Invariant,
        (PerStep, PerStep) => PerStep,
        _ => Variant,
    }
}

pub fn hoist(module: &mut Module) -> usize {
    let g = &mut module.graph;
    let loops: Vec<NodeId> = g
        .nodes()
        .filter(|&n| matches!(g.op(n), Op::Loop(_)))
        .collect();
    let mut moved = 0;
    for l in loops {
        let Op::Loop(mut region) = std::mem::replace(&mut g.node_mut(l).op, Op::Input) else {
            unreachable!("filtered on loops")
        };
        moved += hoist_loop(g, l, &mut region);
        g.node_mut(l).op = Op::Loop(region);
    }
    moved
}

fn hoist_loop(parent: &mut Graph, l: NodeId, region: &mut crate::ir::LoopRegion) -> usize {
    let body = &region.body;
    let Ok(order) = body.topo_order() else {
        return 0;
    };
    let first_invariant = region.first_invariant();
    let first_header = region.first_header_param();
    let mut class: HashMap<NodeId, Class> = HashMap::new();
    for &id in &order {
        let c = match body.op(id) {
            Op::Param(0) => Class::Variant,
            Op::Param(1) => Class::Invariant,
            Op::Param(2) => Class::PerStep,
            // Carried values change every iteration.
            Op::Param(i) if *i < first_invariant => Class::Variant,
            Op::Param(i) if *i < first_header => Class::Invariant,
            Op::Param(_) => Class::PerStep,
            Op::Weight(_) => Class::Const,
            op => match op.effect() {
                Effect::Source | Effect::CacheWrite | Effect::Region => Class::Variant,
                Effect::Pure => body
                    .operands(id)
                    .iter()
                    .fold(Class::Const, |acc, o| join(acc, class[o])),
            },
        };
        class.insert(id, c);
    }
    // Values worth moving: computed (not params or weights) and used by the varying part.
    let feeds_variant = |id: NodeId| {
        body.users(id).iter().any(|u| class[u] == Class::Variant) || body.outputs.contains(&id)
    };
    let mut to_parent = Vec::new();
    let mut to_header = Vec::new();
    for &id in &order {
        if !body.op(id).is_compute() || !feeds_variant(id) {
            continue;
        }
        match class[&id] {
            Class::Const | Class::Invariant => to_parent.push(id),
            Class::PerStep => to_header.push(id),
            Class::Variant => {}
        }
    }
    let moved = to_parent.len() + to_header.len();
    let mut memo = HashMap::new();
    let mut new_operands = parent.operands(l);
    for id in to_parent {
        // Invariant params are `e` (operand 1) and the loop's invariant
        // operands (from 2), including those this pass added.
        let operands = &new_operands;
        let outside = copy(&region.body, id, parent, &mut memo, &|i| {
            if i == 1 {
                operands[1]
            } else {
                operands[2 + i - first_invariant]
            }
        });
        new_operands.push(outside);
        let index = region.first_header_param();
        // Header outputs come after the invariants: shift them up by one.
        let body = &mut region.body;
        let header_params: Vec<NodeId> = body
            .nodes()
            .filter(|&n| matches!(body.op(n), Op::Param(i) if *i >= index))
            .collect();
        for p in header_params {
            if let Op::Param(i) = &mut body.node_mut(p).op {
                *i += 1;
            }
        }
        let ty = body.ty(id).clone();
        let label = body.node(id).label.clone();
        let param = body.add(Op::Param(index), &[], ty, label);
        body.replace_uses(id, param);
        region.invariants += 1;
    }
    parent.set_operands(l, &new_operands);
    let mut memo = HashMap::new();
    let header_t = region
        .header
        .nodes()
        .find(|&n| matches!(region.header.op(n), Op::Param(0)));
    let header_t = header_t.unwrap_or_else(|| {
        region.header.add(
            Op::Param(0),
            &[],
            crate::ir::param_type(2, 0),
            "t".to_string(),
        )
    });
    for id in to_header {
        let inside = copy(&region.body, id, &mut region.header, &mut memo, &|_| {
            header_t
        });
        region.header.outputs.push(inside);
        let index = region.first_header_param() + region.header.outputs.len() - 1;
        let body = &mut region.body;
        let ty = body.ty(id).clone();
        let label = body.node(id).label.clone();
        let param = body.add(Op::Param(index), &[], ty, label);
        body.replace_uses(id, param);
    }
    if region.header.outputs.is_empty() {
        region.header = Graph::default();
    }
    dce_graph(&mut region.body);
    moved
}

/// Copies `id` and what it depends on from `from` into `to` (once each, via
/// `memo`); body params become the nodes `param` gives.
fn copy(
    from: &Graph,
    id: NodeId,
    to: &mut Graph,
    memo: &mut HashMap<NodeId, NodeId>,
    param: &dyn Fn(usize) -> NodeId,
) -> NodeId {
    if let Some(&done) = memo.get(&id) {
        return done;
    }
    let new = match from.op(id) {
        Op::Param(i) => param(*i),
        op => {
            let operands: Vec<NodeId> = from
                .operands(id)
                .into_iter()
                .map(|o| copy(from, o, to, memo, param))
                .collect();
            let n = to.add(
                op.clone(),
                &operands,
                from.ty(id).clone(),
                from.node(id).label.clone(),
            );
            if let Some(span) = from.span(id) {
                to.set_span(n, span);
            }
            n
        }
    };
    memo.insert(id, new);
    new
}
