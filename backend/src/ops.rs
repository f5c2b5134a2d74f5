//! Kernels of the composite ops (attention, SwiGLU, MoE, ACT, LoRA, the
//! loop-header constants). See `kernels` for the generic ABI.

use crate::kernels::Request;
use mythos_compiler::ir::{Graph, Module, NodeId, Op};

/// The kernels of a composite node, or `None` when it cannot be lowered yet.
pub(crate) fn requests(
    _module: &Module,
    _g: &Graph,
    _n: NodeId,
    _op: &Op,
    _args: Vec<String>,
    _width: &dyn Fn(NodeId) -> u64,
) -> Option<Vec<Request>> {
    None
}
