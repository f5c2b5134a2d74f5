//! Times `Weights::load_bytes` on a weights file, and a separate finiteness
//! scan of the loaded values (an upper bound on what the check fused into the
//! loader's conversion costs). To compare two versions of the loader, build
//! this example from each and alternate the binaries, several rounds each:
//! load times on a shared machine drift by tens of percent.
//!
//! ```sh
//! mythos init @openmythos-1b --seed 0 -o /tmp/1b.safetensors
//! cargo run --release -p mythos-runtime --example load_weights -- @openmythos-1b /tmp/1b.safetensors 5
//! cargo run --release -p mythos-runtime --example load_weights -- @openmythos-1b /tmp/1b.safetensors 5 bf16
//! ```
//!
//! The file is read once; each round loads from the bytes in memory (no disk),
//! so the figure is parsing, allocation and conversion. `bf16` converts the
//! (f32) file to bf16 first and times loading that.

use mythos_compiler::sema::{check_file, Loader};
use mythos_runtime::finite;
use mythos_runtime::weights::Weights;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, file, rest @ ..] = args.as_slice() else {
        eprintln!("usage: load_weights SPEC WEIGHTS.safetensors [ROUNDS] [bf16]");
        std::process::exit(1);
    };
    let rounds: usize = rest.first().map_or(5, |r| r.parse().expect("ROUNDS"));
    let bf16 = rest.get(1).is_some_and(|d| d == "bf16");
    let mut loader = Loader::new();
    let checked = check_file(&mut loader, spec);
    assert!(!checked.has_errors(), "{spec} does not check");
    let module = mythos_compiler::ir::lower::lower(&checked.models[0]);
    let path = Path::new(file);
    let mut bytes = std::fs::read(path).expect("the weights file");
    if bf16 {
        bytes = to_bf16(&bytes);
    }
    let gb = bytes.len() as f64 / 1e9;
    let dtype = if bf16 { "bf16" } else { "f32" };
    let (mut best_load, mut best_scan) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        let t = Instant::now();
        let w = Weights::load_bytes(&module, &bytes, path).expect("the weights load");
        let load = t.elapsed().as_secs_f64();
        // The check as a separate pass over the loaded (warm) f32 values: an
        // upper bound on what it adds fused into the conversion.
        let t = Instant::now();
        let bad: usize = w.tensors().iter().map(|t| finite::count(&t.data)).sum();
        let scan = t.elapsed().as_secs_f64();
        assert_eq!(bad, 0, "non-finite values in a file that loaded");
        let f32_gb = w.tensors().iter().map(|t| t.data.len()).sum::<usize>() as f64 * 4.0 / 1e9;
        drop(w);
        println!(
            "{gb:.3} GB {dtype}: load {:.1} ms ({:.1} ms/GB); separate scan of {f32_gb:.3} GB f32 {:.1} ms",
            load * 1e3,
            load * 1e3 / gb,
            scan * 1e3
        );
        best_load = best_load.min(load);
        best_scan = best_scan.min(scan);
    }
    println!(
        "best: load {:.1} ms ({:.1} ms/GB of file), separate scan {:.1} ms ({:.1}% of load)",
        best_load * 1e3,
        best_load * 1e3 / gb,
        best_scan * 1e3,
        100.0 * best_scan / best_load
    );
}

/// The f32 safetensors `bytes` with every tensor as bf16.
fn to_bf16(bytes: &[u8]) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).expect("safetensors");
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .iter()
        .map(|(name, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .flat_map(|c| {
                    let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    half::bf16::from_f32(x).to_le_bytes()
                })
                .collect();
            (name.to_string(), v.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            let view = TensorView::new(Dtype::BF16, shape.clone(), data).expect("a view");
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}
