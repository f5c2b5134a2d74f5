//! Seeded generators of the synthetic reasoning tasks used to show depth
//! extrapolation in looped models (see the training notes): each makes
//! [`Rows`] whose targets score the answer only, so `eval`'s accuracy is
//! the task's answer accuracy. A harder test set is the same task with a
//! larger size (`bits`, `hops`, `terms`).
//!
//! Named on the command line as `task:NAME[,key=value]...`:
//! - `parity` (`bits` 16): the bits `b_1..b_n` (tokens 0 and 1); the target
//!   at position `i` is the prefix parity `(b_1 + ... + b_i) mod 2`.
//! - `phop` (`len` 64, `hops` 8, `symbols` 4): p-hop induction (Sanford et
//!   al. 2024): `find(X, i)` is the position after the most recent earlier
//!   occurrence of `X_i`; the one target, at the last position, is `X` at
//!   `find` applied `hops` times from there. Sequences where a hop does not
//!   exist or does not move back are drawn again.
//! - `add` (`terms` 4, `digits` 3): `a_1+a_2+...+a_n=` then the sum, digits
//!   least significant first, zero-padded (tokens: digits 0-9, `+` 10, `=`
//!   11); the targets are the sum's digits (scored where the next token is one).
//! - `khop` (`symbols` 8, `hops` 4): k-hop composition: a random
//!   permutation `f` of the symbols `0..symbols` written as its pairs `x
//!   f(x)` in a random order, then a query `q` and `hops - 1` tokens `?`
//!   (id `symbols`); the target at the query is `f(q)`, at the `i`-th `?`
//!   `f^(i+1)(q)`: each hop is one more lookup in the table (every hop is
//!   scored).
//!
//! Every task also takes `rows` (256) and `seed` (0).

use crate::data::{Rows, IGNORE};
use crate::rng::Rng;

#[derive(Clone, Copy)]
enum Task {
    Parity,
    Phop,
    Add,
    Khop,
}

/// A task's name, what it takes and its defaults.
struct TaskDef {
    task: Task,
    name: &'static str,
    keys: &'static [(&'static str, u64)],
}

const TASKS: &[TaskDef] = &[
    TaskDef {
        task: Task::Parity,
        name: "parity",
        keys: &[("bits", 16), ("rows", 256), ("seed", 0)],
    },
    TaskDef {
        task: Task::Phop,
        name: "phop",
        keys: &[
            ("len", 64),
            ("hops", 8),
            ("symbols", 4),
            ("rows", 256),
            ("seed", 0),
        ],
    },
    TaskDef {
        task: Task::Add,
        name: "add",
        keys: &[("terms", 4), ("digits", 3), ("rows", 256), ("seed", 0)],
    },
    TaskDef {
        task: Task::Khop,
        name: "khop",
        keys: &[("symbols", 8), ("hops", 4), ("rows", 256), ("seed", 0)],
    },
];

/// Whether `source` names a task (`task:...`) rather than a file.
pub fn is_task(source: &str) -> bool {
    source.starts_with("task:")
}

/// The rows of the task `source` names, or what is wrong with the name.
/// `vocab` is the model's: the task's tokens must fit it.
pub fn generate(source: &str, vocab: u64) -> Result<Rows, String> {
    let body = source.strip_prefix("task:").unwrap_or(source);
    let mut parts = body.split(',');
    let name = parts.next().unwrap_or("");
    let names: Vec<&str> = TASKS.iter().map(|t| t.name).collect();
    let def = TASKS
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| format!("unknown task `{name}`; the tasks are {}", names.join(", ")))?;
    let mut values: Vec<(&str, u64)> = def.keys.to_vec();
    for part in parts.filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not key=value (task:{name},key=value,...)"))?;
        let keys: Vec<&str> = def.keys.iter().map(|k| k.0).collect();
        let slot = values
            .iter_mut()
            .find(|(key, _)| *key == k)
            .ok_or_else(|| format!("task {name} has no `{k}`; it takes {}", keys.join(", ")))?;
        slot.1 = v
            .parse()
            .map_err(|_| format!("task {name}: `{k}={v}` is not a whole number"))?;
    }
    let get = |k: &str| values.iter().find(|(key, _)| *key == k).map_or(0, |v| v.1);
    let (rows, mut rng) = (get("rows") as usize, Rng::new(get("seed")));
    if rows == 0 {
        return Err(format!("task {name}: rows must be at least 1"));
    }
    let needed = match def.task {
        Task::Parity => 2,
        Task::Phop => get("symbols"),
        Task::Add => 12,
        Task::Khop => get("symbols").saturating_add(1),
    };
    if needed > vocab {
        return Err(format!(
            "task {name} uses {needed} token ids, more than the model's vocabulary of {vocab}"
        ));
    }
    match def.task {
        Task::Parity => parity(get("bits") as usize, rows, &mut rng),
        Task::Phop => phop(
            get("len") as usize,
            get("hops") as usize,
            get("symbols"),
            rows,
            &mut rng,
        ),
        Task::Add => add(
            get("terms") as usize,
            get("digits") as usize,
            rows,
            &mut rng,
        ),
        Task::Khop => khop(
            get("symbols") as usize,
            get("hops") as usize,
            rows,
            &mut rng,
        ),
    }
}

fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

fn parity(bits: usize, rows: usize, rng: &mut Rng) -> Result<Rows, String> {
    if bits == 0 {
        return Err("task parity: bits must be at least 1".into());
    }
    let (mut input_ids, mut targets) = (Vec::new(), Vec::new());
    for _ in 0..rows {
        let mut acc = 0;
        for _ in 0..bits {
            let b = below(rng, 2) as i64;
            acc ^= b;
            input_ids.push(b);
            targets.push(acc);
        }
    }
    Ok(Rows {
        seq: bits,
        input_ids,
        targets,
    })
}

/// The position after the most recent occurrence of `x[i]` before `i`.
fn find(x: &[i64], i: usize) -> Option<usize> {
    (0..i).rev().find(|&j| x[j] == x[i]).map(|j| j + 1)
}

fn phop(len: usize, hops: usize, symbols: u64, rows: usize, rng: &mut Rng) -> Result<Rows, String> {
    if len < 2 || hops == 0 || symbols < 2 {
        return Err("task phop: needs len >= 2, hops >= 1, symbols >= 2".into());
    }
    let (mut input_ids, mut targets) = (Vec::new(), Vec::new());
    let mut x = vec![0i64; len];
    for _ in 0..rows {
        let mut tries = 0;
        let answer = loop {
            tries += 1;
            if tries > 10_000 {
                return Err(format!(
                    "task phop: no sequence of len {len} over {symbols} symbols has {hops} hops \
                     in 10000 draws; use a longer len or fewer hops"
                ));
            }
            for v in x.iter_mut() {
                *v = below(rng, symbols) as i64;
            }
            // Each hop must land strictly earlier (no `x[i-1] == x[i]` fixed
            // point, which would make the remaining hops trivial).
            let mut at = Some(len - 1);
            for _ in 0..hops {
                at = at.and_then(|i| find(&x, i).filter(|&j| j < i));
            }
            if let Some(i) = at {
                break x[i];
            }
        };
        input_ids.extend_from_slice(&x);
        targets.extend(std::iter::repeat_n(IGNORE, len - 1));
        targets.push(answer);
    }
    Ok(Rows {
        seq: len,
        input_ids,
        targets,
    })
}

fn add(terms: usize, digits: usize, rows: usize, rng: &mut Rng) -> Result<Rows, String> {
    if terms < 2 || !(1..=15).contains(&digits) {
        return Err("task add: needs terms >= 2 and digits in 1..=15".into());
    }
    const PLUS: i64 = 10;
    const EQUALS: i64 = 11;
    let max = 10u64.pow(digits as u32);
    let sum_digits = (max - 1)
        .checked_mul(terms as u64)
        .map_or(20, |m| m.to_string().len());
    // `a+b+...=` then the sum's digits: the last one is predicted at the
    // position before it, so the row ends with it.
    let seq = terms * (digits + 1) + sum_digits - 1;
    let (mut input_ids, mut targets) = (Vec::new(), Vec::new());
    for _ in 0..rows {
        let mut tokens = Vec::with_capacity(seq + 1);
        let mut sum = 0u64;
        for t in 0..terms {
            let a = below(rng, max);
            sum += a;
            tokens.extend(digits_of(a, digits));
            tokens.push(if t + 1 < terms { PLUS } else { EQUALS });
        }
        let answer_from = tokens.len();
        tokens.extend(digits_of(sum, sum_digits));
        input_ids.extend_from_slice(&tokens[..seq]);
        targets.extend((1..=seq).map(|p| if p >= answer_from { tokens[p] } else { IGNORE }));
    }
    Ok(Rows {
        seq,
        input_ids,
        targets,
    })
}

fn khop(symbols: usize, hops: usize, rows: usize, rng: &mut Rng) -> Result<Rows, String> {
    if !(2..=65_536).contains(&symbols) || hops == 0 {
        return Err("task khop: needs symbols in 2..=65536 and hops >= 1".into());
    }
    let query_mark = symbols as i64;
    let seq = 2 * symbols + hops;
    let (mut input_ids, mut targets) = (Vec::new(), Vec::new());
    let mut f: Vec<usize> = (0..symbols).collect();
    let mut listed: Vec<usize> = (0..symbols).collect();
    for _ in 0..rows {
        shuffle(&mut f, rng);
        shuffle(&mut listed, rng);
        for &x in &listed {
            input_ids.extend([x as i64, f[x] as i64]);
        }
        targets.extend(std::iter::repeat_n(IGNORE, 2 * symbols));
        let mut at = below(rng, symbols as u64) as usize;
        input_ids.push(at as i64);
        input_ids.extend(std::iter::repeat_n(query_mark, hops - 1));
        for _ in 0..hops {
            at = f[at];
            targets.push(at as i64);
        }
    }
    Ok(Rows {
        seq,
        input_ids,
        targets,
    })
}

/// A Fisher-Yates shuffle.
fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, below(rng, i as u64 + 1) as usize);
    }
}

/// `n`'s `width` decimal digits, least significant first.
fn digits_of(mut n: u64, width: usize) -> Vec<i64> {
    (0..width)
        .map(|_| {
            let d = (n % 10) as i64;
            n /= 10;
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parity_targets_are_prefix_parities() {
        let r = generate("task:parity,bits=5,rows=3,seed=7", 4).unwrap();
        assert_eq!((r.seq, r.len()), (5, 3));
        for row in 0..3 {
            let (x, t) = r.slice(row, 1);
            let mut acc = 0;
            for i in 0..5 {
                acc ^= x[i];
                assert_eq!(t[i], acc);
            }
        }
        assert_eq!(r, generate("task:parity,bits=5,rows=3,seed=7", 4).unwrap());
        assert_ne!(r, generate("task:parity,bits=5,rows=3,seed=8", 4).unwrap());
    }

    #[test]
    fn phop_answers_follow_the_hops() {
        let r = generate("task:phop,len=32,hops=3,rows=20", 4).unwrap();
        for row in 0..20 {
            let (x, t) = r.slice(row, 1);
            let mut at = 31;
            for _ in 0..3 {
                let next = find(x, at).expect("every hop exists");
                assert!(next < at, "every hop moves back");
                at = next;
            }
            assert_eq!(t[31], x[at]);
            assert!(t[..31].iter().all(|&v| v == IGNORE));
        }
        // By hand: x = [1, 2, 1, 3, 2]: from 4 (a 2), the last earlier 2 is
        // at 1, so find = 2 (a 1); from 2, the last earlier 1 is at 0: 1.
        let x = [1, 2, 1, 3, 2];
        assert_eq!(find(&x, 4), Some(2));
        assert_eq!(find(&x, 2), Some(1));
        assert_eq!(find(&x, 3), None);
    }

    #[test]
    fn add_scores_the_sum_digits() {
        let r = generate("task:add,terms=2,digits=2,rows=50,seed=3", 12).unwrap();
        // "ab+cd=" then 3 sum digits; the row ends before the last one.
        assert_eq!(r.seq, 2 * 3 + 3 - 1);
        for row in 0..50 {
            let (x, t) = r.slice(row, 1);
            let num = |d: &[i64]| d.iter().rev().fold(0, |n, &v| n * 10 + v);
            let (a, b) = (num(&x[0..2]), num(&x[3..5]));
            assert_eq!((x[2], x[5]), (10, 11));
            let scored: Vec<i64> = t.iter().copied().filter(|&v| v != IGNORE).collect();
            assert_eq!(num(&scored), a + b, "row {row}");
        }
    }

    #[test]
    fn khop_targets_compose_the_listed_permutation() {
        let r = generate("task:khop,symbols=5,hops=3,rows=40,seed=2", 6).unwrap();
        assert_eq!(r.seq, 2 * 5 + 3);
        for row in 0..40 {
            let (x, t) = r.slice(row, 1);
            let mut f = [usize::MAX; 5];
            for pair in x[..10].chunks_exact(2) {
                f[pair[0] as usize] = pair[1] as usize;
            }
            let mut image = f.to_vec();
            image.sort_unstable();
            assert_eq!(image, [0, 1, 2, 3, 4], "row {row} lists a permutation");
            assert!(t[..10].iter().all(|&v| v == IGNORE));
            assert_eq!(&x[11..], &[5, 5], "the hop marks");
            let mut at = x[10] as usize;
            for hop in 0..3 {
                at = f[at];
                assert_eq!(t[10 + hop], at as i64, "row {row} hop {}", hop + 1);
            }
        }
        assert!(generate("task:khop,symbols=8", 8)
            .unwrap_err()
            .contains("9 token ids"));
    }

    #[test]
    fn bad_task_names_say_what_exists() {
        assert!(generate("task:nope", 10)
            .unwrap_err()
            .contains("parity, phop, add, khop"));
        assert!(generate("task:parity,depth=3", 10)
            .unwrap_err()
            .contains("takes bits, rows, seed"));
        assert!(generate("task:parity,bits=x", 10)
            .unwrap_err()
            .contains("whole number"));
        assert!(generate("task:add", 8)
            .unwrap_err()
            .contains("vocabulary of 8"));
        assert!(generate("task:phop,symbols=500", 256)
            .unwrap_err()
            .contains("500 token ids"));
        assert!(generate("task:phop,len=4,hops=9", 4)
            .unwrap_err()
            .contains("longer len"));
    }
}
