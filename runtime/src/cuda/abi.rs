//! The GPU kernels' calling convention, as plain data: no CUDA call here,
//! so everything in this file is tested without a GPU.
//!
//! A kernel of the CUDA target is a `gpu.func` whose arguments are those of
//! the CPU kernel of the same kind, in the same order (`KernelInfo::args`:
//! `f32[]`, `i64[]` or `index`). `convert-gpu-to-nvvm` expands each 1-D
//! memref into five kernel parameters (MLIR's memref descriptor: allocated
//! pointer, aligned pointer, offset, size, stride) and each `index` into one
//! 64-bit integer. The kernels use the aligned pointer with a static offset
//! of 0, so a view into a buffer is passed as a pointer to its first element.

use super::CudaError;
pub use crate::launch::{Arg, GridSizes};
use mythos_compiler::plan::{ArgKind, GpuLaunch, GridDim};

/// The kernel parameters of `args`, one 64-bit word each: five per buffer
/// (allocated = aligned = `ptr`, offset 0, size `len`, stride 1), one per
/// index. `cuLaunchKernel` gets a pointer to each word.
pub fn pack(args: &[Arg]) -> Vec<u64> {
    let mut words = Vec::with_capacity(args.len() * 5);
    for a in args {
        match *a {
            Arg::Buf { ptr, len } => words.extend([ptr, ptr, 0, len as u64, 1]),
            Arg::Index(i) => words.push(i),
        }
    }
    words
}

/// Checks `args` against the kernel's declared argument kinds (a mismatch
/// means the artifact and this runtime disagree on the ABI: a stale
/// artifact or a runtime bug, never something to launch).
pub fn check_kinds(symbol: &str, kinds: &[ArgKind], args: &[Arg]) -> Result<(), CudaError> {
    let ok = kinds.len() == args.len() && kinds.iter().zip(args).all(|(&k, a)| a.matches(k));
    if ok {
        Ok(())
    } else {
        Err(CudaError::Abi(format!(
            "kernel `{symbol}` takes ({}), the runtime passes {} arguments ({:?}); \
             the artifact is stale, recompile it (`mythos compile --target cuda`)",
            kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            args.len(),
            args
        )))
    }
}

/// Blocks in x, y, z for a launch, given the sizes known at launch time by
/// the names the grid uses (`rows`, `tokens`, `len`).
pub fn grid(
    symbol: &str,
    launch: &GpuLaunch,
    sizes: GridSizes,
) -> Result<(u32, u32, u32), CudaError> {
    let size = |name: &str| sizes.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let mut dims = [0u32; 3];
    for (d, g) in dims.iter_mut().zip(&launch.grid) {
        let blocks = g.blocks(size).ok_or_else(|| {
            let name = match g {
                GridDim::CeilDiv { size, .. } => size.as_str(),
                GridDim::Fixed(_) => "",
            };
            CudaError::Abi(format!(
                "kernel `{symbol}`'s grid needs the size `{name}`, which this launch does not give"
            ))
        })?;
        *d = u32::try_from(blocks.max(1)).map_err(|_| {
            CudaError::Abi(format!(
                "kernel `{symbol}` would need {blocks} blocks, more than a grid holds"
            ))
        })?;
    }
    Ok((dims[0], dims[1], dims[2]))
}

/// The PTX modules of a bundle (`mythos_backend::cuda::bundle`, the
/// `code` of a CUDA compile): `// mythos-ptx-module <name> <bytes>` before
/// each module's text.
pub fn unbundle(code: &[u8]) -> Result<Vec<(String, String)>, CudaError> {
    let bad = |why: &str| CudaError::Load(format!("not a PTX bundle: {why}"));
    let mut out = Vec::new();
    let mut rest = code;
    while !rest.is_empty() {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("a header line without its end"))?;
        let header = std::str::from_utf8(&rest[..nl]).map_err(|_| bad("a header not UTF-8"))?;
        let mut words = header
            .strip_prefix("// mythos-ptx-module ")
            .ok_or_else(|| bad("no `// mythos-ptx-module` header"))?
            .split(' ');
        let (Some(name), Some(len), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad("a header without a name and a length"));
        };
        let len: usize = len.parse().map_err(|_| bad("a length that is no number"))?;
        let body = rest
            .get(nl + 1..nl + 1 + len)
            .ok_or_else(|| bad("a module shorter than its header says"))?;
        let text = String::from_utf8(body.to_vec()).map_err(|_| bad("PTX text not UTF-8"))?;
        out.push((name.to_string(), text));
        rest = &rest[nl + 1 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_five_words_an_index_one() {
        let words = pack(&[
            Arg::Buf {
                ptr: 0x7f00_0000_1000,
                len: 96,
            },
            Arg::Index(7),
            Arg::Buf {
                ptr: 0x2000,
                len: 1,
            },
        ]);
        assert_eq!(
            words,
            [
                0x7f00_0000_1000,
                0x7f00_0000_1000,
                0,
                96,
                1,
                7,
                0x2000,
                0x2000,
                0,
                1,
                1
            ]
        );
    }

    #[test]
    fn kinds_are_checked() {
        let kinds = [ArgKind::F32, ArgKind::I64, ArgKind::Index];
        let b = Arg::Buf { ptr: 1, len: 1 };
        assert!(check_kinds("k", &kinds, &[b, b, Arg::Index(3)]).is_ok());
        assert!(check_kinds("k", &kinds, &[b, Arg::Index(3), b]).is_err());
        let e = check_kinds("k", &kinds, &[b, b]).unwrap_err().to_string();
        assert!(e.contains("kernel `k` takes (f32[], i64[], index)"), "{e}");
    }

    #[test]
    fn grids_from_launch_sizes() {
        let linear = GpuLaunch {
            block: [256, 1, 1],
            grid: [GridDim::Fixed(3), GridDim::rows(64), GridDim::Fixed(1)],
        };
        assert_eq!(grid("k", &linear, &[("rows", 1)]).unwrap(), (3, 1, 1));
        assert_eq!(grid("k", &linear, &[("rows", 64)]).unwrap(), (3, 1, 1));
        assert_eq!(grid("k", &linear, &[("rows", 65)]).unwrap(), (3, 2, 1));
        let core = GpuLaunch {
            block: [256, 1, 1],
            grid: [
                GridDim::CeilDiv {
                    size: "tokens".into(),
                    per_block: 1,
                },
                GridDim::Fixed(1),
                GridDim::Fixed(1),
            ],
        };
        assert_eq!(
            grid("k", &core, &[("rows", 9), ("tokens", 5)]).unwrap(),
            (5, 1, 1)
        );
        let e = grid("k", &core, &[("rows", 9)]).unwrap_err().to_string();
        assert!(e.contains("needs the size `tokens`"), "{e}");
        let huge = GpuLaunch {
            block: [32, 1, 1],
            grid: [GridDim::rows(1), GridDim::Fixed(1), GridDim::Fixed(1)],
        };
        assert!(grid("k", &huge, &[("rows", 1 << 40)]).is_err());
    }

    #[test]
    fn bundles_round_trip() {
        let a = "// PTX a\n.version 8.0\n";
        let b = ".entry k()\n{\n}\n";
        let mut code = format!("// mythos-ptx-module kernels {}\n{a}", a.len()).into_bytes();
        code.extend(format!("// mythos-ptx-module more {}\n{b}", b.len()).bytes());
        let mods = unbundle(&code).unwrap();
        assert_eq!(
            mods,
            [
                ("kernels".to_string(), a.to_string()),
                ("more".to_string(), b.to_string())
            ]
        );
        assert!(unbundle(b"// mythos-ptx-module k 99\nshort").is_err());
        assert!(unbundle(b".version 8.0\n").is_err());
        assert!(unbundle(b"").unwrap().is_empty());
    }
}
