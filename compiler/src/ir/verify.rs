//! The IR verifier: run after lowering and after every pass in tests
//! (`--verify-each` later). It re-derives every type from the typing rules
//! and checks the structural invariants listed in `ir/mod.rs`.

use super::effects::Effect;
use super::*;
use std::collections::{HashMap, HashSet};

/// One broken invariant, with the node it was found at.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{graph} %{node} ({label}): {message}")]
pub struct VerifyError {
    /// `main` or `loop body`.
    pub graph: &'static str,
    pub node: usize,
    pub label: String,
    pub message: String,
}

/// Checks the module; returns every problem found (empty = valid).
pub fn verify(module: &Module) -> Vec<VerifyError> {
    let mut errors = Vec::new();
    let mut used = HashSet::new();
    verify_graph(module, &module.graph, "main", None, &mut used, &mut errors);
    let want_outputs = 1 + module.gradients.len();
    if module.graph.outputs.len() != want_outputs {
        errors.push(VerifyError {
            graph: "main",
            node: 0,
            label: "module".into(),
            message: format!(
                "the module must have {want_outputs} outputs (logits, or the loss and {} gradients), has {}",
                module.gradients.len(),
                module.graph.outputs.len()
            ),
        });
    }
    // Each attention op owns its KV-cache layer: two sharing one would
    // append to each other's keys.
    let mut layers: HashMap<u32, String> = HashMap::new();
    for (_, info) in module.graphs().iter() {
        let g = info.graph;
        for n in g.nodes() {
            if let Op::Attention(a) = g.op(n) {
                let label = g.node(n).label.clone();
                if let Some(first) = layers.insert(a.cache.layer, label.clone()) {
                    errors.push(VerifyError {
                        graph: "main",
                        node: n.index(),
                        label,
                        message: format!(
                            "KV-cache layer {} is also `{first}`'s; each attention op needs its own",
                            a.cache.layer
                        ),
                    });
                }
            }
        }
    }
    for (i, w) in module.weights.iter().enumerate() {
        if !used.contains(&WeightId(i as u32)) {
            errors.push(VerifyError {
                graph: "main",
                node: 0,
                label: w.name.clone(),
                message: format!("weight w{i} `{}` is never used", w.name),
            });
        }
    }
    errors
}

fn verify_graph(
    module: &Module,
    g: &Graph,
    name: &'static str,
    params: Option<&[TensorType]>,
    used: &mut HashSet<WeightId>,
    errors: &mut Vec<VerifyError>,
) {
    let at = |n: NodeId, message: String| VerifyError {
        graph: name,
        node: n.index(),
        label: g.node(n).label.clone(),
        message,
    };
    if g.outputs.is_empty() {
        errors.push(VerifyError {
            graph: name,
            node: 0,
            label: "graph".into(),
            message: "graph has no outputs".into(),
        });
    }
    for &o in &g.outputs {
        if !g.contains(o) {
            errors.push(VerifyError {
                graph: name,
                node: o.index(),
                label: "output".into(),
                message: "output is not a node of this graph".into(),
            });
        }
    }
    if let Err(n) = g.topo_order() {
        errors.push(at(n, "the graph has a cycle through this node".into()));
        return;
    }
    let mut nested = Vec::new();
    for n in g.nodes() {
        let positions = g.operand_positions(n);
        if positions.iter().enumerate().any(|(i, &p)| i != p) {
            errors.push(at(
                n,
                format!(
                    "operand positions are {positions:?}, not 0..{}",
                    positions.len()
                ),
            ));
            continue;
        }
        let op = g.op(n);
        let operand_types: Vec<&TensorType> = g.operands(n).iter().map(|&o| g.ty(o)).collect();
        if let Some(results) = op::grad::results(op, &operand_types, &module.weights, module.dim) {
            match results {
                Err(e) => errors.push(at(n, e.0)),
                Ok(r) if Some(&r[..]) != g.results(n) => errors.push(at(
                    n,
                    "the recorded tuple types differ from the rules'".into(),
                )),
                Ok(_) => {}
            }
        }
        for o in g.operands(n) {
            if g.results(o).is_some() != matches!(op, Op::Pick(_)) {
                errors.push(at(n, "only `pick` reads a tuple, and only a tuple".into()));
            }
        }
        let inferred = match op {
            _ if g.results(n).is_some() => Ok(g.ty(n).clone()),
            Op::Pick(k) => g
                .operands(n)
                .first()
                .and_then(|&t| g.results(t))
                .and_then(|r| r.get(*k))
                .cloned()
                .ok_or_else(|| TypeError(format!("pick {k} of a tuple without element {k}"))),
            Op::Param(i) => match params {
                Some(p) if *i < p.len() => Ok(p[*i].clone()),
                Some(p) => Err(TypeError(format!(
                    "this body has params 0..{}, not {i}",
                    p.len()
                ))),
                None => Err(TypeError("`param` outside a loop or fused body".into())),
            },
            _ => {
                let operands = g.operands(n);
                let types: Vec<&TensorType> = operands.iter().map(|&o| g.ty(o)).collect();
                infer(op, &types, &module.weights)
            }
        };
        match inferred {
            Err(e) => errors.push(at(n, e.0)),
            Ok(t) if &t != g.ty(n) => errors.push(at(
                n,
                format!("recorded type {} but the rules give {t}", g.ty(n)),
            )),
            Ok(_) => {}
        }
        match op {
            Op::Weight(id) => {
                used.insert(*id);
            }
            Op::Loop(region) => {
                nested.push((&**region, region.param_types(&operand_types, module.dim)));
            }
            Op::LoopVjp(l) => {
                // The forward body's params, then the cotangents of its outputs.
                let forward = &operand_types[..2 + l.region.invariants];
                let mut types = l.region.param_types(forward, module.dim);
                types.push(forward[0].clone());
                types.extend(
                    l.region
                        .carried
                        .iter()
                        .map(|c| TensorType::activations(c.width)),
                );
                nested.push((&l.region, types));
            }
            Op::Fused(f) => {
                let types: Vec<TensorType> =
                    g.operands(n).iter().map(|&o| g.ty(o).clone()).collect();
                for b in f.body.nodes() {
                    if !FusedOp::admits(f.body.op(b)) && f.body.op(b).is_compute() {
                        errors.push(at(
                            n,
                            format!("`{}` cannot be in a fused group", f.body.op(b).name()),
                        ));
                    }
                    if let Op::Weight(_) | Op::Input = f.body.op(b) {
                        errors.push(at(n, "a fused body reads its inputs as params".into()));
                    }
                }
                verify_graph(module, &f.body, "fused body", Some(&types), used, errors);
            }
            Op::Input if params.is_some() => {
                errors.push(at(n, "`input` inside a loop body".into()))
            }
            _ => {}
        }
    }
    for (region, types) in nested {
        verify_graph(
            module,
            &region.body,
            "loop body",
            Some(&types),
            used,
            errors,
        );
        if !region.header.is_empty() {
            let t = [param_type(2, module.dim)];
            verify_graph(
                module,
                &region.header,
                "loop header",
                Some(&t),
                used,
                errors,
            );
            for n in region.header.nodes() {
                let op = region.header.op(n);
                if matches!(op, Op::Input)
                    || matches!(op.effect(), Effect::CacheWrite | Effect::Region)
                {
                    errors.push(VerifyError {
                        graph: "loop header",
                        node: n.index(),
                        label: region.header.node(n).label.clone(),
                        message: "a loop header holds per-iteration constants only".into(),
                    });
                }
            }
        }
        if region.max_iters == 0 {
            errors.push(VerifyError {
                graph: name,
                node: 0,
                label: "loop".into(),
                message: "loop with max_iters 0".into(),
            });
        }
    }
}
