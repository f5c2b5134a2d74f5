//! The MLIR toolchain behind the backend: one context with every dialect,
//! pass and translation registered; parsing with verification; pass
//! pipelines; translation to LLVM IR; object code and PTX out.
//!
//! Every MLIR diagnostic is collected, so a failure comes back as an
//! [`Error`] carrying MLIR's own messages with their locations (the spec's
//! `file:line:col` where the kernel came from).

use melior::{
    dialect::DialectRegistry,
    ir::{attribute::ArrayAttribute, Module},
    ir::{attribute::AttributeLike, block::BlockLike, operation::OperationLike},
    pass::PassManager,
    utility::{
        parse_pass_pipeline, register_all_dialects, register_all_llvm_translations,
        register_all_passes,
    },
    Context, ExecutionEngine,
};
use std::sync::{Arc, Mutex, Once};

/// What went wrong inside MLIR, with the diagnostics it printed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("MLIR could not parse the generated module (a compiler bug; please report it):\n{0}")]
    Parse(String),
    #[error("the generated MLIR does not verify (a compiler bug; please report it):\n{0}")]
    Verify(String),
    #[error("MLIR pass pipeline `{pipeline}` failed:\n{diagnostics}")]
    Pipeline {
        pipeline: String,
        diagnostics: String,
    },
    #[error("LLVM could not compile the lowered module to machine code:\n{0}")]
    Codegen(String),
    #[error("{0}")]
    Other(String),
}

/// Registers MLIR's passes once per process (a global registry).
fn register_passes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(register_all_passes);
}

/// An MLIR context with everything registered and a diagnostics sink.
pub struct Toolchain {
    context: Context,
    diagnostics: Arc<Mutex<Vec<String>>>,
}

impl Default for Toolchain {
    fn default() -> Self {
        Self::new()
    }
}

impl Toolchain {
    pub fn new() -> Toolchain {
        register_passes();
        let registry = DialectRegistry::new();
        register_all_dialects(&registry);
        let context = Context::new();
        context.append_dialect_registry(&registry);
        context.load_all_available_dialects();
        register_all_llvm_translations(&context);
        let diagnostics = Arc::new(Mutex::new(Vec::new()));
        let sink = diagnostics.clone();
        context.attach_diagnostic_handler(move |d| {
            let mut line = format!("{}: {}", d.location(), d);
            for i in 0..d.note_count() {
                if let Ok(note) = d.note(i) {
                    line.push_str(&format!("\n  note: {note}"));
                }
            }
            sink.lock().expect("diagnostics lock").push(line);
            true
        });
        Toolchain {
            context,
            diagnostics,
        }
    }

    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Takes the diagnostics printed since the last call, one per line.
    fn take_diagnostics(&self) -> String {
        std::mem::take(&mut *self.diagnostics.lock().expect("diagnostics lock")).join("\n")
    }

    /// Parses MLIR text and verifies it (before any pass runs).
    pub fn parse(&self, text: &str) -> Result<Module<'_>, Error> {
        self.take_diagnostics();
        let module = Module::parse(&self.context, text)
            .ok_or_else(|| Error::Parse(self.take_diagnostics()))?;
        if !module.as_operation().verify() {
            return Err(Error::Verify(self.take_diagnostics()));
        }
        Ok(module)
    }

    /// Runs a textual pass pipeline (`builtin.module(...)`) on `module`.
    pub fn run_pipeline(&self, module: &mut Module, pipeline: &str) -> Result<(), Error> {
        self.take_diagnostics();
        let pm = PassManager::new(&self.context);
        parse_pass_pipeline(pm.as_operation_pass_manager(), pipeline).map_err(|e| {
            Error::Pipeline {
                pipeline: pipeline.to_string(),
                diagnostics: format!("{e}\n{}", self.take_diagnostics()),
            }
        })?;
        pm.run(module).map_err(|_| Error::Pipeline {
            pipeline: pipeline.to_string(),
            diagnostics: self.take_diagnostics(),
        })?;
        if !module.as_operation().verify() {
            return Err(Error::Verify(self.take_diagnostics()));
        }
        Ok(())
    }

    /// The LLVM IR of a module already lowered to the LLVM dialect.
    pub fn llvm_ir(&self, module: &Module) -> Result<String, Error> {
        unsafe {
            let llvm_ctx = mlir_sys::LLVMContextCreate();
            let m = mlir_sys::mlirTranslateModuleToLLVMIR(module.as_operation().to_raw(), llvm_ctx);
            if m.is_null() {
                mlir_sys::LLVMContextDispose(llvm_ctx);
                return Err(Error::Codegen(self.take_diagnostics()));
            }
            let s = mlir_sys::LLVMPrintModuleToString(m);
            let text = std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned();
            mlir_sys::LLVMDisposeMessage(s);
            mlir_sys::LLVMDisposeModule(m);
            mlir_sys::LLVMContextDispose(llvm_ctx);
            Ok(text)
        }
    }

    /// Machine code (an ELF relocatable object) of a module lowered to the
    /// LLVM dialect, compiled at LLVM `-O<opt>` for this machine.
    pub fn object_code(&self, module: &Module, opt: usize) -> Result<Vec<u8>, Error> {
        self.take_diagnostics();
        let engine = ExecutionEngine::new(module, opt, &[], true, true);
        // `ExecutionEngine::new` reports failure only through diagnostics (and
        // a null engine that must not be used).
        let diags = self.take_diagnostics();
        if !diags.is_empty() {
            return Err(Error::Codegen(diags));
        }
        let dir = scratch_dir()?;
        let path = dir.join("kernels.o");
        let path_str = path
            .to_str()
            .ok_or_else(|| Error::Other(format!("non-UTF-8 temp path {}", path.display())))?;
        engine.dump_to_object_file(path_str);
        let bytes = std::fs::read(&path).map_err(|e| {
            Error::Codegen(format!(
                "the execution engine wrote no object file ({e}); {}",
                self.take_diagnostics()
            ))
        });
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    }

    /// The PTX text of every `gpu.binary` in a module lowered with
    /// `gpu-module-to-binary{format=isa}`, as `(module name, PTX)`.
    pub fn ptx(&self, module: &Module) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        let mut op = module.body().first_operation();
        while let Some(o) = op {
            if o.name().as_string_ref().as_str().ok() == Some("gpu.binary") {
                let name = o
                    .attribute("sym_name")
                    .ok()
                    .map(|a| a.to_string().trim_matches('"').to_string())
                    .unwrap_or_default();
                let objects = o
                    .attribute("objects")
                    .ok()
                    .and_then(|a| ArrayAttribute::try_from(a).ok())
                    .ok_or_else(|| Error::Other("gpu.binary without objects".into()))?;
                for i in 0..objects.len() {
                    let obj = objects
                        .element(i)
                        .map_err(|e| Error::Other(format!("gpu.binary object {i}: {e}")))?;
                    unsafe {
                        if !mlir_sys::mlirAttributeIsAGPUObjectAttr(obj.to_raw()) {
                            return Err(Error::Other("gpu.binary holds a non-object".into()));
                        }
                        let s = mlir_sys::mlirGPUObjectAttrGetObject(obj.to_raw());
                        let bytes = std::slice::from_raw_parts(s.data as *const u8, s.length);
                        out.push((name.clone(), String::from_utf8_lossy(bytes).into_owned()));
                    }
                }
            }
            op = o.next_in_block();
        }
        Ok(out)
    }
}

/// A fresh private directory under the system temp dir.
pub fn scratch_dir() -> Result<std::path::PathBuf, Error> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mythos-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Other(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Links an object file into a shared object with the system C compiler
/// (`cc -shared`), so that the runtime can `dlopen` the kernels.
pub fn link_shared(object: &[u8]) -> Result<Vec<u8>, Error> {
    let dir = scratch_dir()?;
    let obj = dir.join("kernels.o");
    let so = dir.join("kernels.so");
    std::fs::write(&obj, object)
        .map_err(|e| Error::Other(format!("cannot write {}: {e}", obj.display())))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = std::process::Command::new(&cc)
        .args(["-shared", "-o"])
        .arg(&so)
        .arg(&obj)
        .arg("-lm")
        .output()
        .map_err(|e| {
            Error::Other(format!(
                "cannot run the C compiler `{cc}` to link the CPU kernels ({e}); \
                 install one (apt-get install gcc) or set CC"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "`{cc} -shared` failed to link the CPU kernels:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let bytes =
        std::fs::read(&so).map_err(|e| Error::Other(format!("cannot read {}: {e}", so.display())));
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}
