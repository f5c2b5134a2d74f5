//! Kernel templates (`templates/mlir/*.mlir.tera`), embedded in the binary
//! and rendered from typed contexts (see `kernels::ctx`).

use crate::vocab::LowerError;
use serde_json::Value as Json;

// `TEMPLATES`: every file of templates/mlir/ and templates/mlir/gpu/, listed
// by build.rs.
include!(concat!(env!("OUT_DIR"), "/templates.rs"));

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
