//! `mythos grad` end to end: on every fixture of tests/fixtures/grad/ (made
//! by tools/parity/make_grad_fixtures.py: PyTorch autograd on OpenMythos
//! 0.5.0 in float64) the loss, the loop iterations and every parameter's
//! gradient match the reference within the tolerance; `graph
//! --grad` prints the backward IR; bad batches get clear errors.

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mythos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mythos"))
        .args(args)
        .output()
        .expect("run mythos")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grad")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mythos-grad-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f32s(t: &TensorView) -> Vec<f64> {
    match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
            .collect(),
        Dtype::F64 => t
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    }
}

#[test]
fn grad_matches_pytorch_autograd_on_every_fixture() {
    let dir = fixtures();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let list = manifest.as_array().expect("a list of fixtures");
    assert!(list.len() >= 3, "the fixtures cover GQA, MLA and top-1");
    let out_dir = temp("fixtures");
    for f in list {
        let name = f["name"].as_str().unwrap();
        let path = |key: &str| dir.join(f[key].as_str().unwrap());
        let dump = out_dir.join(format!("{name}.safetensors"));
        let loops = f["loops"].as_u64().map(|l| l.to_string());
        let mut args = vec![
            "grad".to_string(),
            path("spec").display().to_string(),
            "--weights".into(),
            path("weights").display().to_string(),
            "--batch".into(),
            path("batch").display().to_string(),
            "--dump-grads".into(),
            dump.display().to_string(),
            "--json".into(),
        ];
        if let Some(l) = &loops {
            args.extend(["--loops".to_string(), l.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = mythos(&args);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            report["iterations"], f["iterations"],
            "{name}: loop iterations"
        );

        let ours_bytes = std::fs::read(&dump).unwrap();
        let ours = SafeTensors::deserialize(&ours_bytes).unwrap();
        let want_bytes = std::fs::read(path("grads")).unwrap();
        let want = SafeTensors::deserialize(&want_bytes).unwrap();
        let names = |s: &SafeTensors| -> BTreeSet<String> {
            s.names().into_iter().map(str::to_string).collect()
        };
        assert_eq!(names(&ours), names(&want), "{name}: the tensors written");

        let loss = f32s(&ours.tensor("loss").unwrap())[0];
        let ref_loss = f32s(&want.tensor("loss").unwrap())[0];
        assert!(
            (loss - ref_loss).abs() <= 1e-5 * ref_loss.abs(),
            "{name}: loss {loss} against {ref_loss}"
        );
        assert!((report["loss"].as_f64().unwrap() - loss).abs() < 1e-6);

        // Per tensor: max|ours - ref| <= 1e-4 * (max|ref| + 1e-3 * the
        // model's largest gradient).
        let largest = f["max_abs_grad"].as_f64().unwrap();
        let mut worst = (0.0f64, String::new());
        for (tensor, r) in want.tensors() {
            if tensor == "loss" {
                continue;
            }
            let r = f32s(&r);
            let o = f32s(&ours.tensor(&tensor).unwrap());
            assert_eq!(o.len(), r.len(), "{name}: {tensor}'s shape");
            let max_ref = r.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let err = o
                .iter()
                .zip(&r)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            let tol = 1e-4 * (max_ref + 1e-3 * largest);
            assert!(
                err <= tol,
                "{name}: {tensor}: max|ours - ref| = {err:.3e} > {tol:.3e} (max|ref| {max_ref:.3e})"
            );
            if err / tol > worst.0 {
                worst = (err / tol, tensor);
            }
        }
        println!(
            "{name}: loss {loss:.7} (ref {ref_loss:.7}), worst error {:.3} of the tolerance ({})",
            worst.0, worst.1
        );
    }
    std::fs::remove_dir_all(&out_dir).ok();
}

#[test]
fn graph_grad_prints_the_backward_ir() {
    let out = mythos(&["graph", "--grad", "@tiny-mla"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ir = text(&out.stdout);
    for op in ["targets", "loss(", "vjp", "loop_vjp", "pick", "record"] {
        assert!(ir.contains(op), "`{op}` missing from:\n{ir}");
    }
}

/// `input_ids` (and `targets` when given) as an I64 safetensors file.
fn batch_file(path: &Path, rows: usize, ids: &[i64], targets: Option<&[i64]>) {
    let bytes = |v: &[i64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (ib, tb) = (bytes(ids), targets.map(bytes));
    let shape = vec![rows, ids.len() / rows];
    let mut views = vec![(
        "input_ids".to_string(),
        TensorView::new(Dtype::I64, shape.clone(), &ib).unwrap(),
    )];
    if let Some(tb) = &tb {
        views.push((
            "targets".to_string(),
            TensorView::new(Dtype::I64, vec![rows, tb.len() / 8 / rows], tb).unwrap(),
        ));
    }
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn grad_refuses_bad_batches() {
    let d = temp("bad");
    let big = d.join("big.safetensors");
    batch_file(&big, 1, &[1, 2, 999, 3], None);
    let short = d.join("short.safetensors");
    batch_file(&short, 1, &[1, 2, 3, 4], Some(&[2, 3]));
    let bin = d.join("ids.bin");
    std::fs::write(&bin, [1u8, 0, 2, 0]).unwrap();
    let missing = d.join("missing.safetensors");
    for (batch, says) in [
        (&big, "999"),
        (&short, "targets"),
        (&bin, "give a .safetensors file"),
        (&missing, "cannot read"),
    ] {
        let out = mythos(&[
            "grad",
            "@tiny-gqa",
            "--seed",
            "0",
            "--batch",
            batch.to_str().unwrap(),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(says) && err.contains(batch.to_str().unwrap()),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&d).ok();
}
