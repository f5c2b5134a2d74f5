//! `mythos eval` end to end: its loss and accuracy on every parity fixture
//! equal the cross-entropy and arg-max accuracy of the reference's own
//! logits (OpenMythos 0.5.0, from the fixture), scored on the next tokens;
//! the files it writes; its errors on bad data.

#[path = "../runtime/tests/common/fixtures.rs"]
mod fixtures;

use std::path::PathBuf;
use std::process::{Command, Output};

fn mythos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mythos"))
        .args(args)
        .output()
        .expect("run mythos")
}

/// `mythos eval @tiny-gqa --seed 0 ARGS...`.
fn eval_tiny(args: &[&str]) -> Output {
    let mut all = vec!["eval", "@tiny-gqa", "--seed", "0"];
    all.extend_from_slice(args);
    mythos(&all)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The mean next-token cross-entropy (f64) and arg-max accuracy of `logits`
/// `[B, T, V]` against `ids` shifted by one (the last position not scored).
fn reference_scores(ids: &[i64], logits: &[f32], seq: usize, vocab: usize) -> (f64, f64, usize) {
    let (mut loss, mut correct, mut n) = (0.0f64, 0usize, 0usize);
    for (p, row) in logits.chunks_exact(vocab).enumerate() {
        if p % seq == seq - 1 {
            continue;
        }
        let target = ids[p + 1] as usize;
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
        let lse = max
            + row
                .iter()
                .map(|&x| (f64::from(x) - max).exp())
                .sum::<f64>()
                .ln();
        loss += lse - f64::from(row[target]);
        let argmax = (0..vocab).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        correct += usize::from(argmax == target);
        n += 1;
    }
    (loss / n as f64, correct as f64 / n as f64, n)
}

#[test]
fn eval_loss_matches_the_reference_logits_on_every_fixture() {
    let dir = fixtures::dir();
    let all = fixtures::manifest();
    assert!(all.len() >= 10, "the parity fixtures are there");
    for f in &all {
        let io = f.io();
        let vocab = io.logits.len() / (io.batch * io.seq);
        let (want_loss, want_acc, scored) = reference_scores(&io.ids, &io.logits, io.seq, vocab);
        let spec = dir.join(&f.spec);
        let weights = dir.join(&f.weights);
        let data = dir.join(&f.io);
        let loops = f.loops.map_or_else(String::new, |l| l.to_string());
        let mut args = vec![
            "eval",
            spec.to_str().unwrap(),
            "--model",
            &f.model,
            "--weights",
            weights.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ];
        if f.loops.is_some() {
            args.extend(["--loops", &loops]);
        }
        let out = mythos(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            f.name,
            text(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["schema"], "mythos.eval/1");
        let results = report["results"].as_array().unwrap();
        // Without --loops, the default curve includes the trained depth.
        let max_loops = report["max_loops"].as_u64().unwrap();
        let at = f.loops.unwrap_or(max_loops);
        let r = results
            .iter()
            .find(|r| r["loops"].as_u64() == Some(at))
            .unwrap_or_else(|| panic!("{}: no result at {at} loops", f.name));
        let loss = r["loss"].as_f64().unwrap();
        assert!(
            (loss - want_loss).abs() <= 1e-6 * want_loss,
            "{}: eval loss {loss} vs the reference's {want_loss}",
            f.name
        );
        assert_eq!(r["tokens"].as_u64(), Some(scored as u64), "{}", f.name);
        let acc = r["accuracy"].as_f64().unwrap();
        assert!(
            (acc - want_acc).abs() < 1e-12,
            "{}: accuracy {acc} vs {want_acc}",
            f.name
        );
    }
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mythos-eval-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn eval_writes_its_files_and_refuses_bad_data() {
    let d = temp("files");
    // 3 rows of 16 tokens plus one: uint16 ids below tiny-gqa's vocabulary (256).
    let tokens: Vec<u8> = (0..3 * 17u16)
        .flat_map(|i| ((i * 7 + 3) % 256).to_le_bytes())
        .collect();
    let bin = d.join("val.bin");
    std::fs::write(&bin, &tokens).unwrap();
    let out_dir = d.join("out");
    let out = eval_tiny(&[
        "--data",
        bin.to_str().unwrap(),
        "--seq",
        "16",
        "--loops",
        "1,2,6",
        "--batch",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("3 rows x 16 tokens, 48 scored"), "{table}");
    let csv = std::fs::read_to_string(out_dir.join("eval.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("loops,loss,perplexity,accuracy,tokens"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("eval.json")).unwrap()).unwrap();
    let r = json["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    for p in r {
        let (loss, ppl) = (
            p["loss"].as_f64().unwrap(),
            p["perplexity"].as_f64().unwrap(),
        );
        assert!(loss > 0.0 && (ppl - loss.exp()).abs() < 1e-9 * ppl, "{p}");
        assert_eq!(p["tokens"].as_u64(), Some(48));
    }
    for svg in ["eval_loss.svg", "eval_accuracy.svg"] {
        let s = std::fs::read_to_string(out_dir.join(svg)).unwrap();
        assert!(s.starts_with("<svg") && s.contains("<polyline"), "{svg}");
    }
    // Bad data: each a clear error naming the file, exit 1, no panic.
    let odd = d.join("odd.bin");
    std::fs::write(&odd, [1u8, 2, 3]).unwrap();
    let big = d.join("big.bin");
    std::fs::write(&big, [0u8, 0, 0x10, 0x27, 0, 0]).unwrap(); // ids 0, 10000, 0
    for (data, extra, says) in [
        (&odd, "16", "not a whole number of 2-byte token ids"),
        (
            &big,
            "2",
            "input id 10000 at row 0, position 1 is outside the model's vocabulary",
        ),
        (&bin, "100", "fewer than one row"),
    ] {
        let out = eval_tiny(&["--data", data.to_str().unwrap(), "--seq", extra]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(says) && err.contains(data.to_str().unwrap()),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn eval_scores_synthetic_tasks_on_their_answers_only() {
    let run = |data: &str| {
        let out = eval_tiny(&["--data", data, "--loops", "2", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            r["rows"].as_u64().unwrap(),
            r["seq"].as_u64().unwrap(),
            r["results"][0].clone(),
        )
    };
    // p-hop: one answer per row; parity: every position; addition: the
    // sum's 4 digits (3 terms of 3 digits) per row.
    let (rows, seq, r) = run("task:phop,len=32,hops=4,rows=12");
    assert_eq!((rows, seq, r["tokens"].as_u64()), (12, 32, Some(12)));
    let (rows, seq, r) = run("task:parity,bits=10,rows=5");
    assert_eq!((rows, seq, r["tokens"].as_u64()), (5, 10, Some(50)));
    let (rows, _, r) = run("task:add,terms=3,digits=3,rows=7");
    assert_eq!((rows, r["tokens"].as_u64()), (7, Some(28)));
    let out = eval_tiny(&["--data", "task:sort"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown task `sort`; the tasks are parity, phop, add"));
}
