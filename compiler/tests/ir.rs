//! The graph IR: lowering of every preset verifies; text snapshots of the
//! tiny models; the verifier catches broken modules.

use mythos_compiler::ir::{self, lower::lower, verify::verify, Init, Op, RowOp, Weight};
use mythos_compiler::model::Model;
use mythos_compiler::presets::PRESETS;
use mythos_compiler::sema::{self, Loader};

fn preset(name: &str) -> Model {
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, &format!("@{name}"));
    assert!(!checked.has_errors());
    checked.models[0].clone()
}

#[test]
fn every_preset_lowers_to_a_valid_module() {
    for p in PRESETS {
        let module = lower(&preset(p.name));
        let errors = verify(&module);
        assert!(errors.is_empty(), "{}: {errors:#?}", p.name);
        // Every weight name is unique (state_dict names).
        let mut names: Vec<&str> = module.weights.iter().map(|w| w.name.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "{}: duplicate weight names", p.name);
    }
}

/// The gradient module of every preset verifies: the loss and one gradient
/// per parameter (none for a buffer), one `loop_vjp` per loop whose body
/// yields what its typing rule says.
#[test]
fn every_preset_has_a_valid_gradient_module() {
    for p in PRESETS {
        let forward = lower(&preset(p.name));
        let m = ir::grad::gradient(&forward).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        let errors = verify(&m);
        assert!(errors.is_empty(), "{}: {errors:#?}", p.name);
        let parameters = m.weights.iter().filter(|w| !w.buffer).count();
        assert_eq!(m.gradients.len(), parameters, "{}: every parameter", p.name);
        assert_eq!(m.graph.outputs.len(), 1 + parameters);
        let loop_vjps = m
            .graph
            .nodes()
            .filter(|&n| matches!(m.graph.op(n), Op::LoopVjp(_)));
        assert_eq!(loop_vjps.count(), 1, "{}", p.name);
        assert_eq!(
            ir::grad::gradient(&m).unwrap_err(),
            ir::grad::GradError::AlreadyGradient
        );
    }
}

#[test]
fn tiny_models_ir_snapshots() {
    for name in ["tiny-gqa", "tiny-mla", "tiny-huginn"] {
        let module = lower(&preset(name));
        insta::with_settings!({ snapshot_suffix => name, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!("ir_text", ir::print::text(&module));
        });
    }
    // The printer is deterministic.
    let m = lower(&preset("tiny-mla"));
    assert_eq!(
        ir::print::text(&m),
        ir::print::text(&lower(&preset("tiny-mla")))
    );
}

#[test]
fn dot_output_has_the_loop_as_a_cluster() {
    let dot = ir::print::dot(&lower(&preset("tiny-gqa")));
    assert!(dot.starts_with("digraph \"tiny_gqa\" {"));
    assert!(dot.contains("subgraph cluster_"));
    assert!(dot.contains("label=\"loop max 4\""));
    assert!(dot.trim_end().ends_with('}'));
}

#[test]
fn openmythos_state_dict_names() {
    let module = lower(&preset("tiny-mla"));
    let names: Vec<&str> = module.weights.iter().map(|w| w.name.as_str()).collect();
    for expected in [
        "embed.weight",
        "prelude.0.attn_norm.weight",
        "prelude.0.attn.q_down.weight",
        "prelude.0.attn.kv_norm.weight",
        "prelude.0.ffn.gate.weight",
        "recurrent.norm.weight",
        "recurrent.block.ffn.router.weight",
        "recurrent.block.ffn.router_bias",
        "recurrent.block.ffn.routed_experts.{e}.gate.weight",
        "recurrent.block.ffn.shared_experts.{e}.down.weight",
        "recurrent.lora.down.weight",
        "recurrent.lora.B",
        "recurrent.lora.scale.weight",
        "recurrent.injection.log_A",
        "recurrent.injection.log_dt",
        "recurrent.injection.B",
        "recurrent.act.halt.weight",
        "recurrent.act.halt.bias",
        "coda.0.ffn.down.weight",
        "norm.weight",
    ] {
        assert!(names.contains(&expected), "missing {expected}");
    }
    assert!(
        !names.contains(&"head.weight"),
        "the head is tied to embed.weight"
    );
}

#[test]
fn verifier_reports_broken_modules() {
    let good = lower(&preset("tiny-gqa"));
    assert!(verify(&good).is_empty());

    // An unused weight.
    let mut m = good.clone();
    m.weights.push(Weight {
        name: "stray.weight".into(),
        shape: vec![4],
        init: Init::Const { value: 0.0 },
        buffer: false,
        stacked: None,
        component: "other".into(),
    });
    let errors = verify(&m);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.contains("`stray.weight` is never used"),
        "{errors:?}"
    );

    // A weight whose shape no longer fits its op.
    let mut m = good.clone();
    let id = m
        .weights
        .iter()
        .position(|w| w.name == "prelude.0.attn.wq.weight")
        .unwrap();
    m.weights[id].shape = vec![64, 63];
    let errors = verify(&m);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].label, "prelude.0.attn.wq");
    assert!(
        errors[0].message.contains("rules give [64, 63] f32"),
        "{errors:?}"
    );
    // ... and once the node's recorded type follows, the attention no longer fits.
    let mut m = good.clone();
    let id = m
        .weights
        .iter()
        .position(|w| w.name == "prelude.0.attn.wq.weight")
        .unwrap();
    m.weights[id].shape = vec![64, 63];
    let wq = m
        .graph
        .nodes()
        .find(|&n| m.graph.node(n).label == "prelude.0.attn.wq")
        .unwrap();
    let attn = m
        .graph
        .nodes()
        .find(|&n| m.graph.node(n).label == "prelude.0.attn")
        .unwrap();
    let relabelled = m.graph.node(wq).op.clone();
    let operands = m.graph.operands(attn);
    let ty = ir::infer(&relabelled, &[], &m.weights).unwrap();
    let new_wq = m.graph.add(relabelled, &[], ty, "prelude.0.attn.wq");
    let mut ops = operands.clone();
    ops[1] = new_wq;
    let attn_op = m.graph.op(attn).clone();
    let attn_ty = m.graph.ty(attn).clone();
    let _broken = m.graph.add(attn_op, &ops, attn_ty, "broken.attn");
    let errors = verify(&m);
    assert!(
        errors
            .iter()
            .any(|e| e.label == "broken.attn" && e.message.contains("expected shape [64, 64]")),
        "{errors:?}"
    );

    // An op with the wrong operands.
    let mut m = good.clone();
    let head = m.graph.outputs[0];
    m.graph.node_mut(head).op = Op::Row(RowOp::Add);
    let errors = verify(&m);
    assert!(
        errors
            .iter()
            .any(|e| e.label == "head" && e.message.contains("add of")),
        "{errors:?}"
    );

    // A loop-body parameter outside a loop.
    let mut m = good.clone();
    let input = m
        .graph
        .nodes()
        .find(|&n| matches!(m.graph.op(n), Op::Input))
        .unwrap();
    m.graph.node_mut(input).op = Op::Param(0);
    let errors = verify(&m);
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("`param` outside a loop or fused body")),
        "{errors:?}"
    );

    // Two attention ops on one KV-cache layer.
    let mut m = good.clone();
    let attns: Vec<_> = m
        .graph
        .nodes()
        .filter(|&n| matches!(m.graph.op(n), Op::Attention(_)))
        .collect();
    let first = match m.graph.op(attns[0]) {
        Op::Attention(a) => a.cache.layer,
        _ => unreachable!(),
    };
    if let Op::Attention(a) = &mut m.graph.node_mut(attns[1]).op {
        a.cache.layer = first;
    }
    let errors = verify(&m);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.contains(&format!(
            "KV-cache layer {first} is also `prelude.0.attn`'s"
        )),
        "{errors:?}"
    );

    // A carried value whose declared width the body does not yield.
    let mut m = good.clone();
    let l = m
        .graph
        .nodes()
        .find(|&n| matches!(m.graph.op(n), Op::Loop(_)))
        .unwrap();
    if let Op::Loop(r) = &mut m.graph.node_mut(l).op {
        assert_eq!(r.carried[0].name, "cum_p");
        r.carried[0].width = 2;
    }
    let errors = verify(&m);
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("carried `cum_p` is [B, T, 2] f32")),
        "{errors:?}"
    );
}
