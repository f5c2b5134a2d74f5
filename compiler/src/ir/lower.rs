//! Checked model -> graph IR, following OpenMythos's module structure so that
//! every weight carries its state_dict name:
//!
//! ```text
//! x = embed(ids); x = prelude blocks; e = x
//! h = loop(h0 = e, e) { x = entry(h, e, t); x = body blocks; x += lora(x, t); h = update(h, e, x); act(h) }
//! logits = head(norm(coda blocks(h)))
//! ```
//! where `act(h)` (with ACT) is `p = act_halt(h)` and the `act.*` steps on the
//! carried `cum_p`, `halted` and `h_out`; the loop then yields `h_out`.
//! where `entry` is `rmsnorm(loop_emb(h) + e)` (lti, add), `linear(concat(loop_emb(h), e))`
//! (concat) or `loop_emb(h)` (none), and `update` is the LTI update (lti) or `x` (others).

use super::args::{ExpertWeights, MoeArgs, SwiGluArgs};
use super::*;
use crate::model::{Attention, AttentionKind, Block, Ffn, FfnKind, Halting, Injection, Model};

/// Lowers a checked model. Cannot fail: the model's invariants make every
/// op well-typed (the verifier re-checks in tests).
pub fn lower(model: &Model) -> Module {
    let mut b = Builder {
        weights: Vec::new(),
        model,
        kv_layers: 0,
    };
    let d = model.dim;
    let mut g = Graph::default();
    let ids = b.node(&mut g, Op::Input, &[], "input_ids");
    g.set_span(ids, model.span);
    let embed = b.weight(
        &mut g,
        "embed.weight",
        vec![model.vocab, d],
        normal(),
        "embedding",
    );
    let mut x = b.node(&mut g, Op::Embedding, &[ids, embed], "embed");
    for (i, block) in model.prelude.iter().enumerate() {
        x = b.block(
            &mut g,
            x,
            block,
            &format!("prelude.{i}"),
            &format!("prelude_{i}"),
            &format!("prelude.{i}"),
        );
    }
    let region = b.loop_region();
    let h = b.node(&mut g, Op::Loop(Box::new(region)), &[x, x], "recurrent");
    x = h;
    for (i, block) in model.coda.iter().enumerate() {
        x = b.block(
            &mut g,
            x,
            block,
            &format!("coda.{i}"),
            &format!("coda_{i}"),
            &format!("coda.{i}"),
        );
    }
    x = b.norm(&mut g, x, "norm", "final_norm");
    let table = if model.tie_embeddings {
        embed
    } else {
        b.weight(
            &mut g,
            "head.weight",
            vec![model.vocab, d],
            normal(),
            "head",
        )
    };
    let logits = b.node(&mut g, Op::Head(Fusion::default()), &[x, table], "head");
    g.outputs = vec![logits];
    // The rest (embedding, loop, final norm, head) points at the model or its loop.
    g.set_span(h, model.recurrence.span);
    span_new_nodes(&mut g, 0, model.span);
    Module {
        name: model.name.clone(),
        dim: d,
        vocab: model.vocab,
        max_seq: model.max_seq,
        weights: b.weights,
        graph: g,
        gradients: Vec::new(),
    }
}

/// The index the next node added to `g` gets (lowering never removes nodes).
fn next_index(g: &Graph) -> usize {
    g.nodes().map(|n| n.index() + 1).max().unwrap_or(0)
}

/// Gives `span` to the nodes added since `since` that have none yet.
fn span_new_nodes(g: &mut Graph, since: usize, span: crate::source::Span) {
    let new: Vec<NodeId> = g
        .nodes()
        .filter(|&n| n.index() >= since && g.span(n).is_none())
        .collect();
    for n in new {
        g.set_span(n, span);
    }
}

fn normal() -> Init {
    Init::Normal { std: 0.02 }
}
fn ones() -> Init {
    Init::Const { value: 1.0 }
}
fn zeros() -> Init {
    Init::Const { value: 0.0 }
}

struct Builder<'m> {
    weights: Vec<Weight>,
    model: &'m Model,
    /// KV-cache layers numbered so far.
    kv_layers: u32,
}

impl Builder<'_> {
    /// Adds a node whose type follows from the typing rules.
    fn node(&self, g: &mut Graph, op: Op, operands: &[NodeId], label: &str) -> NodeId {
        let types: Vec<&TensorType> = operands.iter().map(|&o| g.ty(o)).collect();
        let ty = infer(&op, &types, &self.weights).unwrap_or_else(|e| {
            panic!("lowering built an ill-typed {label}: {e} (a compiler bug)")
        });
        g.add(op, operands, ty, label)
    }

    fn weight(
        &mut self,
        g: &mut Graph,
        name: &str,
        shape: Vec<u64>,
        init: Init,
        component: &str,
    ) -> NodeId {
        self.weight_full(g, name, shape, init, component, None, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn weight_full(
        &mut self,
        g: &mut Graph,
        name: &str,
        shape: Vec<u64>,
        init: Init,
        component: &str,
        stacked: Option<Stacked>,
        buffer: bool,
    ) -> NodeId {
        let id = WeightId(self.weights.len() as u32);
        self.weights.push(Weight {
            name: name.to_string(),
            shape,
            init,
            buffer,
            stacked,
            component: component.to_string(),
        });
        let label = name.trim_end_matches(".weight").to_string();
        self.node(g, Op::Weight(id), &[], &label)
    }

    /// RMSNorm of `x` with its own weight `{name}.weight` (initialised to 1).
    fn norm(&mut self, g: &mut Graph, x: NodeId, name: &str, component: &str) -> NodeId {
        let d = self.model.dim;
        let w = self.weight(g, &format!("{name}.weight"), vec![d], ones(), component);
        let eps = self.model.norm_eps;
        self.node(g, Op::Row(RowOp::RmsNorm { eps }), &[x, w], name)
    }

    /// A pre-norm block: `x + attn(norm(x))`, then `+ ffn(norm(.))`.
    fn block(
        &mut self,
        g: &mut Graph,
        x: NodeId,
        block: &Block,
        prefix: &str,
        cache: &str,
        component: &str,
    ) -> NodeId {
        let since = next_index(g);
        let xn = self.norm(g, x, &format!("{prefix}.attn_norm"), component);
        let attn = self.attention(g, xn, &block.attention, prefix, cache, component);
        let x = self.node(
            g,
            Op::Row(RowOp::Add),
            &[x, attn],
            &format!("{prefix}.attn_residual"),
        );
        let xn = self.norm(g, x, &format!("{prefix}.ffn_norm"), component);
        let f = self.ffn(g, xn, &block.ffn, prefix, component);
        let out = self.node(
            g,
            Op::Row(RowOp::Add),
            &[x, f],
            &format!("{prefix}.ffn_residual"),
        );
        span_new_nodes(g, since, block.span);
        out
    }

    fn attention(
        &mut self,
        g: &mut Graph,
        x: NodeId,
        a: &Attention,
        prefix: &str,
        cache: &str,
        component: &str,
    ) -> NodeId {
        let d = self.model.dim;
        let kind = match a.kind {
            AttentionKind::Gqa { heads, kv_heads } => AttnKind::Gqa {
                heads,
                kv_heads,
                head_dim: d / heads,
            },
            AttentionKind::Mha { heads } => AttnKind::Gqa {
                heads,
                kv_heads: heads,
                head_dim: d / heads,
            },
            AttentionKind::Mla {
                heads,
                q_rank,
                kv_rank,
                rope_dim,
                nope_dim,
                v_dim,
                ..
            } => AttnKind::Mla {
                heads,
                q_rank,
                kv_rank,
                rope_dim,
                nope_dim,
                v_dim,
            },
        };
        let layer = self.kv_layers;
        self.kv_layers += 1;
        let op = AttentionOp {
            kind,
            rope_theta: self.model.rope_theta,
            norm_eps: self.model.norm_eps,
            cache: KvSlot {
                layer,
                name: cache.to_string(),
            },
            kv_layout: KvLayout::Reference,
            absorb: false,
            fusion: Fusion::default(),
        };
        let mut operands = vec![x];
        for (name, shape) in op.weight_names().iter().zip(op.weight_shapes(d)) {
            let init = if shape.len() == 1 { ones() } else { normal() };
            operands.push(self.weight(
                g,
                &format!("{prefix}.attn.{name}.weight"),
                shape,
                init,
                component,
            ));
        }
        self.node(g, Op::Attention(op), &operands, &format!("{prefix}.attn"))
    }

    fn ffn(&mut self, g: &mut Graph, x: NodeId, f: &Ffn, prefix: &str, component: &str) -> NodeId {
        let d = self.model.dim;
        match f.kind {
            FfnKind::Dense { hidden } => {
                let gate = self.weight(
                    g,
                    &format!("{prefix}.ffn.gate.weight"),
                    vec![hidden, d],
                    normal(),
                    component,
                );
                let up = self.weight(
                    g,
                    &format!("{prefix}.ffn.up.weight"),
                    vec![hidden, d],
                    normal(),
                    component,
                );
                let down = self.weight(
                    g,
                    &format!("{prefix}.ffn.down.weight"),
                    vec![d, hidden],
                    normal(),
                    component,
                );
                let operands = SwiGluArgs {
                    x,
                    prenorm: None,
                    gate,
                    up,
                    down,
                }
                .operands();
                self.node(
                    g,
                    Op::SwiGlu(Fusion::default()),
                    &operands,
                    &format!("{prefix}.ffn"),
                )
            }
            FfnKind::Moe {
                experts,
                shared,
                top_k,
                expert_dim,
                shared_dim,
                router_bias,
            } => {
                let op = MoeOp {
                    experts,
                    top_k,
                    expert_dim,
                    shared,
                    shared_dim,
                    router_bias,
                    batched: false,
                    fusion: Fusion::default(),
                };
                let router = self.weight(
                    g,
                    &format!("{prefix}.ffn.router.weight"),
                    vec![experts, d],
                    normal(),
                    component,
                );
                let bias = router_bias.then(|| {
                    let name = format!("{prefix}.ffn.router_bias");
                    self.weight_full(g, &name, vec![experts], zeros(), component, None, true)
                });
                let mut group = |group: &str, count: u64, hidden: u64, active: u64| {
                    let stacked = Some(Stacked { count, active });
                    let mut proj = |proj: &str, shape: [u64; 3]| {
                        let name = format!("{prefix}.ffn.{group}.{{e}}.{proj}.weight");
                        self.weight_full(
                            g,
                            &name,
                            shape.to_vec(),
                            normal(),
                            component,
                            stacked,
                            false,
                        )
                    };
                    ExpertWeights {
                        gate: proj("gate", [count, hidden, d]),
                        up: proj("up", [count, hidden, d]),
                        down: proj("down", [count, d, hidden]),
                    }
                };
                let routed = group("routed_experts", experts, expert_dim, top_k);
                let shared =
                    (shared > 0).then(|| group("shared_experts", shared, shared_dim, shared));
                let operands = MoeArgs {
                    x,
                    prenorm: None,
                    router,
                    bias,
                    routed,
                    shared,
                }
                .operands();
                self.node(g, Op::Moe(op), &operands, &format!("{prefix}.ffn"))
            }
        }
    }

    /// The loop body graph and the loop control.
    fn loop_region(&mut self) -> LoopRegion {
        let m = self.model;
        let r = &m.recurrence;
        let d = m.dim;
        let mut g = Graph::default();
        let params: Vec<NodeId> = (0..3)
            .map(|i| g.add(Op::Param(i), &[], param_type(i, d), ["h", "e", "t"][i]))
            .collect();
        let (h, e, t) = (params[0], params[1], params[2]);
        let mut state = h;
        // 0 channels (OpenMythos's `dim // 8` for dim < 8) adds nothing.
        if let Some(le) = r.loop_embedding.filter(|le| le.channels > 0) {
            let op = Op::LoopEmbedding {
                channels: le.channels,
                theta: le.theta,
            };
            state = self.node(&mut g, op, &[h, t], "recurrent.loop_embedding");
        }
        let mut x = match r.inject {
            Injection::Lti | Injection::Add => {
                let sum = self.node(
                    &mut g,
                    Op::Row(RowOp::Add),
                    &[state, e],
                    "recurrent.combine",
                );
                self.norm(&mut g, sum, "recurrent.norm", "loop.norm")
            }
            Injection::Concat => {
                let cat = self.node(
                    &mut g,
                    Op::Row(RowOp::Concat),
                    &[state, e],
                    "recurrent.concat",
                );
                let w = self.weight(
                    &mut g,
                    "recurrent.injection.adapter.weight",
                    vec![d, 2 * d],
                    normal(),
                    "loop.injection",
                );
                self.node(&mut g, Op::Linear, &[cat, w], "recurrent.injection.adapter")
            }
            Injection::None => state,
        };
        for (i, block) in r.body.iter().enumerate() {
            // OpenMythos has one looped block, `recurrent.block`; more are numbered.
            let prefix = if r.body.len() == 1 {
                "recurrent.block".to_string()
            } else {
                format!("recurrent.blocks.{i}")
            };
            let cache = if r.body.len() == 1 {
                "recurrent_loop".to_string()
            } else {
                format!("recurrent_loop_block_{i}")
            };
            x = self.block(
                &mut g,
                x,
                block,
                &prefix,
                &cache,
                &format!("loop.block.{i}"),
            );
        }
        if r.lora_rank > 0 {
            let rank = r.lora_rank;
            let down = self.weight(
                &mut g,
                "recurrent.lora.down.weight",
                vec![rank, d],
                normal(),
                "loop.lora",
            );
            let b = self.weight(
                &mut g,
                "recurrent.lora.B",
                vec![rank, d],
                normal(),
                "loop.lora",
            );
            let scale = self.weight(
                &mut g,
                "recurrent.lora.scale.weight",
                vec![r.max_iters, rank],
                normal(), // an nn.Embedding in OpenMythos: N(0, 0.02)
                "loop.lora",
            );
            let op = Op::Lora {
                rank,
                max_iters: r.max_iters,
            };
            let delta = self.node(&mut g, op, &[x, down, b, scale, t], "recurrent.lora");
            x = self.node(
                &mut g,
                Op::Row(RowOp::Add),
                &[x, delta],
                "recurrent.lora_residual",
            );
        }
        let next = if r.inject == Injection::Lti {
            let log_a = self.weight(
                &mut g,
                "recurrent.injection.log_A",
                vec![d],
                zeros(),
                "loop.injection",
            );
            let log_dt = self.weight(
                &mut g,
                "recurrent.injection.log_dt",
                vec![1],
                zeros(),
                "loop.injection",
            );
            let b = self.weight(
                &mut g,
                "recurrent.injection.B",
                vec![d],
                Init::Const { value: 0.1 },
                "loop.injection",
            );
            self.node(
                &mut g,
                Op::LtiUpdate,
                &[h, e, x, log_a, log_dt, b],
                "recurrent.injection",
            )
        } else {
            x
        };
        g.outputs = vec![next];
        let (carried, halted, result) = match r.halt {
            Halting::Act { threshold } => {
                let bound = 1.0 / (d as f64).sqrt();
                let w = self.weight(
                    &mut g,
                    "recurrent.act.halt.weight",
                    vec![1, d],
                    normal(),
                    "loop.act",
                );
                let b = self.weight(
                    &mut g,
                    "recurrent.act.halt.bias",
                    vec![1],
                    Init::Uniform { bound },
                    "loop.act",
                );
                let p = self.node(&mut g, Op::ActHalt, &[next, w, b], "recurrent.act");
                // OpenMythos's names: cumulative_p, halted, h_out.
                let carried = vec![
                    Carried {
                        name: "cum_p".into(),
                        width: 1,
                    },
                    Carried {
                        name: "halted".into(),
                        width: 1,
                    },
                    Carried {
                        name: "h_out".into(),
                        width: d,
                    },
                ];
                let [cum, halted, h_out] = [0, 1, 2].map(|i| {
                    let c: &Carried = &carried[i];
                    g.add(
                        Op::Param(3 + i),
                        &[],
                        TensorType::activations(c.width),
                        c.name.clone(),
                    )
                });
                let act = |step| Op::Row(RowOp::Act(step));
                let weight = self.node(
                    &mut g,
                    act(ActStep::Weight { threshold }),
                    &[p, cum, halted],
                    "recurrent.act.weight",
                );
                let h_out = self.node(
                    &mut g,
                    act(ActStep::Accumulate),
                    &[h_out, next, weight],
                    "recurrent.act.h_out",
                );
                let cum = self.node(
                    &mut g,
                    act(ActStep::Cumulate),
                    &[cum, p, halted],
                    "recurrent.act.cum_p",
                );
                let halted = self.node(
                    &mut g,
                    act(ActStep::Halted { threshold }),
                    &[halted, cum],
                    "recurrent.act.halted",
                );
                g.outputs.extend([cum, halted, h_out]);
                (carried, Some(1), Some(2))
            }
            Halting::None => (Vec::new(), None, None),
        };
        span_new_nodes(&mut g, 0, r.span);
        LoopRegion {
            body: g,
            max_iters: r.max_iters,
            inject: r.inject,
            carried,
            halted,
            result,
            invariants: 0,
            header: Graph::default(),
            record: false,
        }
    }
}
