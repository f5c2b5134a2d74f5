//! Offline validation of the emitted PTX with NVIDIA's `ptxas` (no GPU
//! needed): assembles a PTX text for an architecture and reads the
//! per-kernel resource figures `ptxas -v` prints. `tools/ptxas.sh` finds or
//! installs a `ptxas` (PyPI `nvidia-cuda-nvcc`).

use std::path::Path;
use std::process::Command;

/// What `ptxas -v` says about one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    pub stack_frame_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    /// Static shared memory.
    pub shared_bytes: u32,
}

/// Assembles `ptx` for `arch` (`sm_90`) with `ptxas -v`; on success returns
/// the figures of every kernel, else ptxas's messages.
pub fn check(ptxas: &Path, ptx: &str, arch: &str) -> Result<Vec<KernelResources>, String> {
    let dir = crate::mlir::scratch_dir().map_err(|e| e.to_string())?;
    let input = dir.join("kernels.ptx");
    let result = (|| {
        std::fs::write(&input, ptx)
            .map_err(|e| format!("cannot write {}: {e}", input.display()))?;
        let out = Command::new(ptxas)
            .arg("--gpu-name")
            .arg(arch)
            .arg("-v")
            .arg(&input)
            .arg("-o")
            .arg(dir.join("kernels.cubin"))
            .output()
            .map_err(|e| format!("cannot run {}: {e}", ptxas.display()))?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            Ok(parse_verbose(&log))
        } else {
            Err(format!(
                "ptxas --gpu-name {arch} failed ({}):\n{log}",
                out.status
            ))
        }
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Reads `ptxas -v` output:
/// ```text
/// ptxas info    : Compiling entry function 'k' for 'sm_90'
/// ptxas info    : Function properties for k
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 20 registers, used 1 barriers, 128 bytes smem
/// ```
pub fn parse_verbose(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            out.push(KernelResources {
                name: name.to_string(),
                ..KernelResources::default()
            });
            continue;
        }
        let Some(k) = out.last_mut() else { continue };
        let figure = |what: &str| -> Option<u32> {
            let at = line.find(what)?;
            line[..at]
                .split([' ', ','])
                .rfind(|w| !w.is_empty())?
                .parse()
                .ok()
        };
        if line.contains("bytes stack frame") {
            k.stack_frame_bytes = figure(" bytes stack frame").unwrap_or(0);
            k.spill_store_bytes = figure(" bytes spill stores").unwrap_or(0);
            k.spill_load_bytes = figure(" bytes spill loads").unwrap_or(0);
        } else if line.contains("Used ") && line.contains(" registers") {
            k.registers = figure(" registers").unwrap_or(0);
            k.shared_bytes = figure(" bytes smem").unwrap_or(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ptxas_verbose_output() {
        let log = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'rms' for 'sm_90'\n\
            ptxas info    : Function properties for rms\n\
            \x20   8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
            ptxas info    : Used 20 registers, used 1 barriers, 128 bytes smem\n\
            ptxas info    : Compiling entry function 'mm' for 'sm_90'\n\
            ptxas info    : Function properties for mm\n\
            \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 64 registers, used 1 barriers\n";
        let k = parse_verbose(log);
        assert_eq!(k.len(), 2);
        assert_eq!(
            k[0],
            KernelResources {
                name: "rms".into(),
                registers: 20,
                stack_frame_bytes: 8,
                spill_store_bytes: 4,
                spill_load_bytes: 12,
                shared_bytes: 128,
            }
        );
        assert_eq!((k[1].registers, k[1].shared_bytes), (64, 0));
    }
}
