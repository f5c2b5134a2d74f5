//! The CUDA target, checked without a GPU: presets compiled to PTX for
//! sm_80 and sm_90, every PTX assembled by `ptxas` (from `$MYTHOS_PTXAS`, or
//! found/installed by `tools/ptxas.sh`; `MYTHOS_SKIP_PTXAS=1` skips it when
//! there is no way to get one), no unresolved `.extern` (libdevice) calls,
//! and a table of registers, spills and PTX size per kernel.

use mythos_backend::compile::{compile, Compiled, Options, Target};
use mythos_backend::ptxas::{self, KernelResources};
use mythos_compiler::ir::{lower::lower, Module};
use mythos_compiler::passes::{self, Options as PassOptions};
use mythos_compiler::sema::{self, Loader};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

const ARCHS: &[&str] = &["sm_80", "sm_90"];

/// Kernel kinds the CPU backend has and the CUDA target does not have yet.
/// Until this is empty the models compile with `partial: true`; a kind
/// added to the CPU backend must get a GPU variant or be listed here.
const PENDING: &[&str] = &[];

fn module(name: &str) -> Module {
    spec_module(&format!("@{name}"), None)
}

/// Model `model` (or the file's first) of the spec at `path`, at -O2.
fn spec_module(path: &str, model: Option<&str>) -> Module {
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, path);
    assert!(!checked.has_errors(), "{path}");
    let mut m = lower(sema::select(&checked, model, path).unwrap());
    let opts = PassOptions {
        level: 2,
        verify_each: true,
        ..PassOptions::default()
    };
    passes::run(&mut m, &opts).unwrap();
    m
}

fn cuda(m: &Module, arch: &str, partial: bool) -> Result<Compiled, String> {
    compile(
        m,
        &|_| None,
        &Options {
            target: Target::Cuda { arch: arch.into() },
            partial,
            ..Options::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// The ptxas to use, or `None` with `MYTHOS_SKIP_PTXAS=1` when none can be had.
fn ptxas_path() -> Option<PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("MYTHOS_PTXAS").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/ptxas.sh");
        let why = match std::process::Command::new("bash").arg(script).output() {
            Ok(out) if out.status.success() => {
                return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            }
            Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
            Err(e) => format!("cannot run {script}: {e}"),
        };
        if std::env::var("MYTHOS_SKIP_PTXAS").as_deref() == Ok("1") {
            eprintln!("MYTHOS_SKIP_PTXAS=1: not validating PTX with ptxas ({why})");
            return None;
        }
        panic!(
            "no ptxas to validate the PTX with: {why}\n\
             Set MYTHOS_PTXAS=/path/to/ptxas, or MYTHOS_SKIP_PTXAS=1 to skip the check."
        )
    })
    .clone()
}

/// Bytes of PTX per kernel: from its `.entry` to the next one.
fn entry_sizes(ptx: &str) -> Vec<(String, usize)> {
    let starts: Vec<usize> = ptx.match_indices(".entry ").map(|(i, _)| i).collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &s)| {
            let end = starts.get(n + 1).copied().unwrap_or(ptx.len());
            let name = ptx[s + 7..]
                .split(|c: char| c == '(' || c.is_whitespace())
                .next()
                .unwrap_or_default();
            (name.to_string(), end - s)
        })
        .collect()
}

/// Compiles `name` for every arch, writes the PTX, runs ptxas, prints the
/// figures; returns the kernel kinds left to the host.
fn check_model(name: &str) -> BTreeSet<String> {
    check_module(name, &module(name))
}

fn check_module(name: &str, m: &Module) -> BTreeSet<String> {
    let cpu_kinds: BTreeSet<String> = mythos_backend::kernels::lower(m, &|_| None, true)
        .unwrap()
        .plan
        .kernels
        .iter()
        .map(|k| k.kind.clone())
        .collect();
    let full = PENDING.iter().all(|k| !cpu_kinds.contains(*k));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ptx");
    std::fs::create_dir_all(&dir).unwrap();
    let mut missing = BTreeSet::new();
    for arch in ARCHS {
        let compiled = cuda(m, arch, !full).unwrap_or_else(|e| panic!("{name} {arch}: {e}"));
        let gpu_kinds: BTreeSet<String> = compiled
            .plan
            .kernels
            .iter()
            .map(|k| k.kind.clone())
            .collect();
        missing = cpu_kinds.difference(&gpu_kinds).cloned().collect();
        for k in &compiled.plan.kernels {
            assert!(k.gpu.is_some(), "{name}: kernel {} has no launch", k.symbol);
        }
        assert_eq!(compiled.ptx.len(), 1, "one gpu.module");
        let (module_name, ptx) = &compiled.ptx[0];
        assert_eq!(module_name, "kernels");
        assert!(
            !ptx.contains(".extern"),
            "{name} {arch}: unresolved externs in the PTX"
        );
        assert!(!ptx.contains("__nv_"), "{name} {arch}: libdevice calls");
        assert!(ptx.contains(&format!(".target {arch}")));
        assert!(compiled.code.ends_with(ptx.as_bytes()));
        std::fs::write(dir.join(format!("{name}.gpu.mlir")), &compiled.mlir).unwrap();
        let path = dir.join(format!("{name}.{arch}.ptx"));
        std::fs::write(&path, ptx).unwrap();
        let sizes = entry_sizes(ptx);
        assert_eq!(
            sizes.len(),
            compiled.plan.kernels.len(),
            "one .entry per kernel"
        );
        let resources: Vec<KernelResources> = match ptxas_path() {
            Some(p) => ptxas::check(&p, ptx, arch).unwrap_or_else(|e| {
                panic!("{name} {arch}: ptxas rejected {}:\n{e}", path.display())
            }),
            None => Vec::new(),
        };
        println!(
            "{name} {arch}: {} kernels, {} bytes of PTX ({}){}",
            compiled.plan.kernels.len(),
            ptx.len(),
            path.display(),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; left to the host (no GPU kernel yet): {missing:?}")
            }
        );
        println!(
            "  {:<38} {:>5} {:>6} {:>8} {:>8} {:>6} {:>9}",
            "kernel", "regs", "stack", "spill-st", "spill-ld", "smem", "PTX bytes"
        );
        for (kernel, bytes) in &sizes {
            let r = resources.iter().find(|r| &r.name == kernel);
            let f = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
            println!(
                "  {kernel:<38} {:>5} {:>6} {:>8} {:>8} {:>6} {bytes:>9}",
                f(r.map(|r| r.registers)),
                f(r.map(|r| r.stack_frame_bytes)),
                f(r.map(|r| r.spill_store_bytes)),
                f(r.map(|r| r.spill_load_bytes)),
                f(r.map(|r| r.shared_bytes)),
            );
        }
        if !resources.is_empty() {
            assert_eq!(resources.len(), sizes.len(), "ptxas saw every kernel");
            // The compiler's own shared-memory count (its 48 KiB check) agrees with ptxas.
            let shared = mythos_backend::cuda::shared_bytes(ptx);
            for r in &resources {
                let ours = shared.get(&r.name).copied().unwrap_or(0);
                assert_eq!(u64::from(r.shared_bytes), ours, "{name} {arch}: {}", r.name);
            }
        }
    }
    for kind in &missing {
        assert!(
            PENDING.contains(&kind.as_str()),
            "{name}: the CPU kernel kind `{kind}` has no GPU variant and is not listed as pending"
        );
    }
    missing
}

#[test]
fn tiny_gqa_ptx_assembles() {
    check_model("tiny-gqa");
}

#[test]
fn tiny_mla_ptx_assembles() {
    check_model("tiny-mla");
}

#[test]
fn openmythos_1b_ptx_assembles() {
    check_model("openmythos-1b");
}

/// The parity fixtures with shapes the presets lack: 7 loop-embedding
/// channels (odd: 4 sines, 3 cosines) and GQA q/k/v narrower than `dim`
/// (5 heads of 72 // 5 = 14 over dim 72).
#[test]
fn odd_loop_channels_and_uneven_heads_ptx_assembles() {
    for name in ["mla_odd_loop_channels_decode", "gqa_uneven_heads_decode"] {
        let path = format!(
            "{}/../tests/fixtures/parity/{name}.mythos",
            env!("CARGO_MANIFEST_DIR")
        );
        check_module(name, &spec_module(&path, Some(name)));
    }
}

/// Presets whose widest kernels would need more than 48 KiB of static
/// shared memory: they fail with a clear error (none now).
const TOO_WIDE: &[&str] = &[];

/// Every other preset compiles for sm_90 and ptxas accepts it.
#[test]
fn every_preset_compiles_for_sm_90() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".mythos")
                .map(String::from)
        })
        .filter(|n| !["tiny-gqa", "tiny-mla", "openmythos-1b"].contains(&n.as_str()))
        .collect();
    names.sort();
    for name in names {
        let m = module(&name);
        match cuda(&m, "sm_90", false) {
            Err(e) if TOO_WIDE.contains(&name.as_str()) => {
                assert!(e.contains("bytes of shared memory"), "{name}: {e}")
            }
            Err(e) => panic!("{name}: {e}"),
            Ok(c) => {
                assert!(
                    !TOO_WIDE.contains(&name.as_str()),
                    "{name} compiles now: update TOO_WIDE"
                );
                let ptx = &c.ptx[0].1;
                assert!(!ptx.contains(".extern"), "{name}");
                if let Some(p) = ptxas_path() {
                    let k =
                        ptxas::check(&p, ptx, "sm_90").unwrap_or_else(|e| panic!("{name}: {e}"));
                    let spills: Vec<&str> = k
                        .iter()
                        .filter(|k| k.spill_store_bytes > 0)
                        .map(|k| k.name.as_str())
                        .collect();
                    let regs = k.iter().map(|k| k.registers).max().unwrap_or(0);
                    println!(
                        "{name} sm_90: {} kernels, {} bytes of PTX, max {regs} registers, spills in {spills:?}",
                        k.len(),
                        ptx.len()
                    );
                }
            }
        }
    }
}

#[test]
fn unsupported_arch_is_an_error() {
    let m = module("tiny-gqa");
    let e = cuda(&m, "sm_70", true).expect_err("sm_70 is refused");
    assert!(e.contains("sm_80 or newer"), "{e}");
}
