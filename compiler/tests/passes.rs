//! The pass pipeline: every level keeps every preset valid (verifier after
//! each pass), each pass rewrites what it should on the tiny models (IR
//! snapshots per pass), and the pass manager's options behave.

use mythos_compiler::ir::{self, lower::lower, verify::verify, Module, Op, RowOp};
use mythos_compiler::passes::{self, Options, PASSES};
use mythos_compiler::presets::PRESETS;
use mythos_compiler::sema::{self, Loader};

fn module(name: &str) -> Module {
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, &format!("@{name}"));
    assert!(!checked.has_errors());
    lower(&checked.models[0])
}

fn optimized(name: &str, level: u8) -> Module {
    let mut m = module(name);
    passes::run(
        &mut m,
        &Options {
            level,
            verify_each: true,
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name} -O{level}: {e}"));
    m
}

/// Compute nodes of a graph and its loop bodies (not headers).
fn count(g: &ir::Graph, f: &dyn Fn(&Op) -> bool) -> usize {
    g.nodes()
        .map(|n| {
            let op = g.op(n);
            let inner = match op {
                Op::Loop(r) => count(&r.body, f),
                _ => 0,
            };
            inner + usize::from(f(op))
        })
        .sum()
}

#[test]
fn every_level_keeps_every_preset_valid() {
    for p in PRESETS {
        for level in 0..=2 {
            let m = optimized(p.name, level);
            assert!(verify(&m).is_empty(), "{} -O{level}", p.name);
        }
    }
}

#[test]
fn o2_is_a_fixed_point() {
    for name in ["tiny-gqa", "tiny-mla", "tiny-huginn", "openmythos-1b"] {
        let mut m = optimized(name, 2);
        let before = ir::print::text(&m);
        let report = passes::run(
            &mut m,
            &Options {
                level: 2,
                verify_each: true,
                ..Options::default()
            },
        )
        .unwrap();
        let rewrites: usize = report.passes.iter().map(|p| p.2).sum();
        assert_eq!(rewrites, 0, "{name}: a second -O2 rewrote {report:?}");
        assert_eq!(before, ir::print::text(&m), "{name}");
    }
}

#[test]
fn o2_loop_body_kernels_on_tiny_mla() {
    // -O0 body: loop_embedding, add, rmsnorm, (rmsnorm, attention, add, rmsnorm, moe, add),
    // lora, add, lti_update, act_halt and the ACT rule's act.weight, act.accumulate,
    // act.cumulate, act.halted = 17 compute nodes.
    let body = |m: &Module| {
        let g = &m.graph;
        let l = g.nodes().find(|&n| matches!(g.op(n), Op::Loop(_))).unwrap();
        match g.op(l) {
            Op::Loop(r) => (
                count(&r.body, &|o| o.is_compute()),
                r.invariants,
                r.header.outputs.len(),
            ),
            _ => unreachable!(),
        }
    };
    assert_eq!(body(&optimized("tiny-mla", 0)), (17, 0, 0));
    // -O1 splits lti_update, loop_embedding and lora (+4), then hoists B*e and
    // the LTI decay (2 invariants) and the loop embedding vector and LoRA
    // scale row (2 header outputs): 17 again, all of them per-token work.
    assert_eq!(body(&optimized("tiny-mla", 1)), (17, 2, 2));
    // -O2: fused(add_prefix+add+rmsnorm), attention(prenorm, residual),
    // moe(prenorm, residual), lora_apply, fused(add+lti_apply), act_halt and
    // the four ACT steps (never fused).
    assert_eq!(body(&optimized("tiny-mla", 2)), (10, 2, 2));
    let m = optimized("tiny-mla", 2);
    assert_eq!(count(&m.graph, &|o| matches!(o, Op::Fused(_))), 2);
    assert_eq!(
        count(&m.graph, &|o| matches!(o, Op::Row(RowOp::RmsNorm { .. }))),
        0
    );
    assert_eq!(count(&m.graph, &|o| matches!(o, Op::Row(RowOp::Add))), 0);
}

#[test]
fn per_pass_snapshots() {
    for name in ["tiny-gqa", "tiny-mla"] {
        let mut m = module(name);
        for pass in passes::pipeline(2) {
            let report = passes::run(
                &mut m,
                &Options {
                    passes: Some(vec![pass.to_string()]),
                    verify_each: true,
                    ..Options::default()
                },
            )
            .unwrap();
            let changes = report.passes[0].2;
            insta::with_settings!({ snapshot_suffix => format!("{name}-{pass}"), prepend_module_to_snapshot => false }, {
                insta::assert_snapshot!("ir_after", format!("# rewrites: {changes}\n{}", ir::print::text(&m)));
            });
        }
    }
}

#[test]
fn cse_merges_duplicate_weight_reads_and_dce_removes_dead_nodes() {
    let mut m = module("tiny-gqa");
    // Duplicate the head's table read: a second Weight node for the same weight.
    let g = &mut m.graph;
    let head = g.outputs[0];
    let ops = g.operands(head);
    let table = ops[1];
    let (op, ty) = (g.op(table).clone(), g.ty(table).clone());
    let dup = g.add(op, &[], ty, "dup");
    g.set_operands(head, &[ops[0], dup]);
    // And a dead norm.
    let norm_w = g
        .nodes()
        .find(
            |&n| matches!(g.op(n), Op::Weight(w) if m.weights[w.0 as usize].name == "norm.weight"),
        )
        .unwrap();
    let x = ops[0];
    let ty = g.ty(x).clone();
    g.add(
        Op::Row(RowOp::RmsNorm { eps: 1e-6 }),
        &[x, norm_w],
        ty,
        "dead",
    );
    let before = m.graph.len();
    let r = passes::run(
        &mut m,
        &Options {
            passes: Some(vec!["cse".into(), "dce".into()]),
            verify_each: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(r.passes[0].2, 1, "cse merges the duplicate read");
    assert_eq!(r.passes[1].2, 1, "dce removes the dead norm");
    assert_eq!(m.graph.len(), before - 2);
}

#[test]
fn print_ir_after_and_unknown_passes() {
    let mut m = module("tiny-gqa");
    let r = passes::run(
        &mut m,
        &Options {
            level: 2,
            print_ir_after: Some("hoist".into()),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(r.printed.len(), 1);
    assert_eq!(r.printed[0].0, "hoist");
    assert!(r.printed[0].1.contains("header(%t = param 0)"));
    let all = passes::run(
        &mut module("tiny-gqa"),
        &Options {
            level: 2,
            print_ir_after: Some("all".into()),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(all.printed.len(), PASSES.len());
    let e = passes::run(
        &mut module("tiny-gqa"),
        &Options {
            print_ir_after: Some("fusee".into()),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "unknown pass `fusee` (did you mean `fuse`?)");
}

/// The one walker names every graph once: the top level, the loop's header
/// and body, each fused group's body; backends plan all but fused bodies.
#[test]
fn graph_walk_names_every_graph_once() {
    use mythos_compiler::ir::walk::{GraphKind, Graphs};
    let m = optimized("tiny-mla", 2);
    let graphs = m.graphs();
    let main = graphs.get(Graphs::MAIN);
    assert_eq!((main.path.as_str(), main.kind), ("main", GraphKind::Main));
    let l = m
        .graph
        .nodes()
        .find(|&n| matches!(m.graph.op(n), Op::Loop(_)))
        .unwrap();
    let Op::Loop(region) = m.graph.op(l) else {
        unreachable!()
    };
    let (header, body) = graphs.loop_graphs(Graphs::MAIN, l);
    assert!(std::ptr::eq(graphs.graph(header), &region.header));
    assert!(std::ptr::eq(graphs.graph(body), &region.body));
    assert_eq!(graphs.get(body).path, format!("main/{}/body", l.index()));
    assert_eq!(graphs.get(header).kind, GraphKind::LoopHeader);
    assert_eq!(graphs.by_path(&graphs.get(body).path), Some(body));
    // -O2 makes two fused groups in the body (see above): one graph each.
    let fused: Vec<_> = graphs
        .iter()
        .filter(|(_, g)| g.kind == GraphKind::FusedBody)
        .collect();
    assert_eq!(fused.len(), 2);
    assert!(fused
        .iter()
        .all(|(_, g)| g.path.ends_with("/group") && g.depth == 1));
    assert_eq!(graphs.len(), 3 + fused.len());
    assert_eq!(graphs.planned().count(), 3);
}
