//! Pitfall: melior 0.27's ExecutionEngine::new never reports failure. If the module is not fully
//! lowered to the llvm dialect, MLIR returns a null engine and the next lookup()/invoke_packed()
//! segfaults. Guard: count error diagnostics emitted while the engine is being created.
use melior::{
    Context, ExecutionEngine, diagnostic::DiagnosticSeverity, dialect::DialectRegistry, ir::Module,
    utility::*,
};
use std::{cell::Cell, rc::Rc};

fn main() {
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let ctx = Context::new();
    ctx.append_dialect_registry(&registry);
    ctx.load_all_available_dialects();
    register_all_llvm_translations(&ctx);
    let errors = Rc::new(Cell::new(0usize));
    let e2 = errors.clone();
    ctx.attach_diagnostic_handler(move |d| {
        if matches!(d.severity(), DiagnosticSeverity::Error) {
            e2.set(e2.get() + 1);
        }
        eprintln!("diag: {d}");
        true
    });
    // NOT lowered: still func/arith.
    let m = Module::parse(
        &ctx,
        "func.func @f(%x: i32) -> i32 attributes {llvm.emit_c_interface} { %y = arith.addi %x, %x : i32\n return %y : i32 }",
    )
    .unwrap();
    let before = errors.get();
    let engine = ExecutionEngine::new(&m, 2, &[], false, false);
    if errors.get() > before {
        println!(
            "engine creation failed (caught via diagnostics); NOT calling lookup(), which would segfault"
        );
        std::mem::forget(engine); // Drop calls mlirExecutionEngineDestroy(null): avoid it to be safe
        return;
    }
    println!("lookup = {:?}", engine.lookup("f"));
}
