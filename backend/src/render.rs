//! Kernel templates (`templates/mlir/*.mlir.tera`), embedded in the binary
//! and rendered from typed contexts (see `kernels::ctx`).

use crate::kernels::LowerError;
use serde_json::Value as Json;

/// Every kernel template, by name (the file name without `.mlir.tera`).
pub const TEMPLATES: &[(&str, &str)] = &[
    // GPU variants (`crate::cuda`), named `gpu/<kind>`.
    (
        "gpu/macros.tera",
        include_str!("../../templates/mlir/gpu/macros.tera"),
    ),
    (
        "gpu/rowwise",
        include_str!("../../templates/mlir/gpu/rowwise.mlir.tera"),
    ),
    (
        "gpu/linear",
        include_str!("../../templates/mlir/gpu/linear.mlir.tera"),
    ),
    (
        "gpu/embedding",
        include_str!("../../templates/mlir/gpu/embedding.mlir.tera"),
    ),
    (
        "gpu/attention.tera",
        include_str!("../../templates/mlir/gpu/attention.tera"),
    ),
    (
        "gpu/attention_core",
        include_str!("../../templates/mlir/gpu/attention_core.mlir.tera"),
    ),
    (
        "gpu/attention_gqa_proj",
        include_str!("../../templates/mlir/gpu/attention_gqa_proj.mlir.tera"),
    ),
    (
        "gpu/attention_mla_proj",
        include_str!("../../templates/mlir/gpu/attention_mla_proj.mlir.tera"),
    ),
    (
        "gpu/attention_mla_expand",
        include_str!("../../templates/mlir/gpu/attention_mla_expand.mlir.tera"),
    ),
    (
        "gpu/attention_mla_absorbed",
        include_str!("../../templates/mlir/gpu/attention_mla_absorbed.mlir.tera"),
    ),
    (
        "gpu/ffn.tera",
        include_str!("../../templates/mlir/gpu/ffn.tera"),
    ),
    (
        "gpu/swiglu",
        include_str!("../../templates/mlir/gpu/swiglu.mlir.tera"),
    ),
    (
        "gpu/moe",
        include_str!("../../templates/mlir/gpu/moe.mlir.tera"),
    ),
    (
        "gpu/act_halt",
        include_str!("../../templates/mlir/gpu/act_halt.mlir.tera"),
    ),
    (
        "gpu/lti_decay",
        include_str!("../../templates/mlir/gpu/lti_decay.mlir.tera"),
    ),
    (
        "gpu/lora_scale",
        include_str!("../../templates/mlir/gpu/lora_scale.mlir.tera"),
    ),
    (
        "gpu/lora_apply",
        include_str!("../../templates/mlir/gpu/lora_apply.mlir.tera"),
    ),
    (
        "gpu/loop_embedding_vec",
        include_str!("../../templates/mlir/gpu/loop_embedding_vec.mlir.tera"),
    ),
    (
        "macros.tera",
        include_str!("../../templates/mlir/macros.tera"),
    ),
    (
        "rowwise",
        include_str!("../../templates/mlir/rowwise.mlir.tera"),
    ),
    (
        "linear",
        include_str!("../../templates/mlir/linear.mlir.tera"),
    ),
    (
        "embedding",
        include_str!("../../templates/mlir/embedding.mlir.tera"),
    ),
    (
        "attention_macros.tera",
        include_str!("../../templates/mlir/attention_macros.tera"),
    ),
    (
        "attention_gqa_proj",
        include_str!("../../templates/mlir/attention_gqa_proj.mlir.tera"),
    ),
    (
        "attention_mla_proj",
        include_str!("../../templates/mlir/attention_mla_proj.mlir.tera"),
    ),
    (
        "attention_mla_expand",
        include_str!("../../templates/mlir/attention_mla_expand.mlir.tera"),
    ),
    (
        "attention_core",
        include_str!("../../templates/mlir/attention_core.mlir.tera"),
    ),
    (
        "attention_mla_absorbed",
        include_str!("../../templates/mlir/attention_mla_absorbed.mlir.tera"),
    ),
    ("ffn.tera", include_str!("../../templates/mlir/ffn.tera")),
    (
        "swiglu",
        include_str!("../../templates/mlir/swiglu.mlir.tera"),
    ),
    ("moe", include_str!("../../templates/mlir/moe.mlir.tera")),
    (
        "act_halt",
        include_str!("../../templates/mlir/act_halt.mlir.tera"),
    ),
    (
        "lti_decay",
        include_str!("../../templates/mlir/lti_decay.mlir.tera"),
    ),
    (
        "loop_embedding_vec",
        include_str!("../../templates/mlir/loop_embedding_vec.mlir.tera"),
    ),
    (
        "lora_scale",
        include_str!("../../templates/mlir/lora_scale.mlir.tera"),
    ),
    (
        "lora_apply",
        include_str!("../../templates/mlir/lora_apply.mlir.tera"),
    ),
];

pub struct Templates {
    tera: tera::Tera,
}

impl Templates {
    pub fn new() -> Result<Templates, LowerError> {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![]);
        tera.add_raw_templates(TEMPLATES.iter().map(|&(n, t)| (n, t)))
            .map_err(|e| LowerError::Template {
                template: "(all)".into(),
                message: error_chain(&e),
            })?;
        Ok(Templates { tera })
    }

    /// Renders `template` with `ctx` plus the kernel's symbol, location and
    /// a one-line comment saying where it comes from.
    pub fn render(
        &self,
        template: &str,
        ctx: &Json,
        symbol: &str,
        loc: &str,
        comment: &str,
    ) -> Result<String, LowerError> {
        let mut c = tera::Context::from_value(ctx.clone()).map_err(|e| LowerError::Template {
            template: template.into(),
            message: error_chain(&e),
        })?;
        c.insert("symbol", symbol);
        c.insert("loc", loc);
        c.insert("comment", comment);
        self.tera
            .render(template, &c)
            .map_err(|e| LowerError::Template {
                template: template.into(),
                message: error_chain(&e),
            })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
