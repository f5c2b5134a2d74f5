//! OpenMythos `MythosConfig` JSON import/export. Being written.
use crate::model::Model;
use crate::{Diagnostic, SourceMap};

/// A spec made from a config, with warnings about what it could not keep.
pub struct Imported {
    pub spec: String,
    pub warnings: Vec<Diagnostic>,
}

pub fn import(_sources: &mut SourceMap, _name: &str, _json: &str, _model_name: &str) -> Result<Imported, Vec<Diagnostic>> {
    Err(Vec::new())
}

pub fn export(_model: &Model) -> Result<String, Vec<Diagnostic>> {
    Err(Vec::new())
}
