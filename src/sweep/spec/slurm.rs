//! `[slurm]`: how `mythos sweep --backend slurm` submits its job arrays.

use super::parse::{Parser, Table, Val};
use super::*;

const SLURM_KEYS: &[&str] = &[
    "partition",
    "time",
    "cpus_per_task",
    "gpus_per_task",
    "sbatch",
    "max_parallel",
    "retries",
    "signal_before",
    "result_grace",
    "poll",
];

/// A value `sbatch` would misread inside one `#SBATCH` line.
fn one_line(p: &mut Parser, key: &str, s: &str, v: &Val) -> bool {
    if s.trim().is_empty() || s.contains(['\n', '\r']) {
        p.error(
            Code::InvalidSweep,
            format!("`{key}` must be one non-empty line"),
            v.span(),
            "empty or several lines",
            format!("write one value, for example {}", example(key)),
        );
        return false;
    }
    true
}

fn example(key: &str) -> &'static str {
    match key {
        "partition" => "partition = \"gpu\"",
        "time" => "time = \"02:00:00\"",
        _ => "sbatch = [\"--mem=8G\", \"--account=lab\"]",
    }
}

pub(super) fn parse(p: &mut Parser, t: &Table, s: &mut SlurmTable) {
    for (key, v) in Parser::entries(t) {
        let name: &str = key.get_ref();
        match name {
            "partition" | "time" => {
                if let Some(x) = p.string(name, v) {
                    if one_line(p, name, &x, v) {
                        let x = Some(x.trim().to_string());
                        if name == "partition" {
                            s.partition = x;
                        } else {
                            s.time = x;
                        }
                    }
                }
            }
            "cpus_per_task" => s.cpus_per_task = p.uint(name, v, 1),
            "gpus_per_task" => s.gpus_per_task = p.uint(name, v, 0),
            "max_parallel" => s.max_parallel = p.uint(name, v, 1),
            "retries" => {
                if let Some(n) = p.uint(name, v, 0) {
                    s.retries = n;
                }
            }
            "signal_before" => {
                if let Some(n) = p.uint(name, v, 0) {
                    s.signal_before = n;
                }
            }
            "result_grace" => {
                if let Some(n) = p.uint(name, v, 0) {
                    s.result_grace = n;
                }
            }
            "poll" => match p.lit(v) {
                Some(l @ (Lit::Int(_) | Lit::Float(_))) if l.as_f64() >= 0.1 => s.poll = l.as_f64(),
                _ => p.error(
                    Code::InvalidSweep,
                    "`poll` must be a number of seconds, at least 0.1",
                    v.span(),
                    "expected seconds",
                    "for example poll = 2",
                ),
            },
            "sbatch" => {
                let Some(list) = v.get_ref().as_array() else {
                    p.error(
                        Code::InvalidSweep,
                        "`sbatch` must be a list of strings",
                        v.span(),
                        "expected a list",
                        example("sbatch"),
                    );
                    continue;
                };
                for item in list {
                    if let Some(x) = p.string("sbatch", item) {
                        if !one_line(p, "sbatch", &x, item) {
                            continue;
                        }
                        let x = x.trim().to_string();
                        if !x.starts_with('-') {
                            p.error(
                                Code::InvalidSweep,
                                format!("`{x}` is not an sbatch option"),
                                item.span(),
                                "options start with `-`",
                                example("sbatch"),
                            );
                            continue;
                        }
                        s.sbatch.push(x);
                    }
                }
            }
            _ => p.unknown_key(key, "[slurm]", SLURM_KEYS),
        }
    }
}
