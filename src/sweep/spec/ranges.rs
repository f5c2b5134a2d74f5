//! `{ range = [lo, hi], step = s }` and `{ range = [lo, hi], factor = f }` axis values.

use super::*;

/// `{ range = [lo, hi], step = s }` (inclusive) or `{ range = [lo, hi], factor = f }`.
pub(super) fn range_values(
    p: &mut Parser,
    target: &Target,
    path: &str,
    whole: &Val,
    t: &Table,
) -> Option<Vec<AxisValue>> {
    let ty = match target {
        Target::Setting(s) => s.ty,
        Target::LoopMax => Ty::Int,
        Target::Feature { field: Some(s), .. } | Target::Def { field: Some(s), .. } => s.ty,
        Target::Train(key) => match super::train::train_key(super::axes::train_name(*key)) {
            Some((_, s)) => s.ty,
            None => return None,
        },
        Target::Feature { field: None, .. } | Target::Def { field: None, .. } => {
            p.error(
                Code::BadAxisValue,
                format!("axis `{path}` takes kinds, not a range"),
                whole.span(),
                "a range of numbers",
                "list the kinds: [\"lti\", \"add\"] or whole definitions",
            );
            return None;
        }
    };
    if ty == Ty::Bool {
        p.error(
            Code::BadAxisValue,
            format!("axis `{path}` is a boolean; a range makes no sense"),
            whole.span(),
            "range of a boolean",
            "write [true, false]",
        );
        return None;
    }
    let help = "write { range = [8, 64], step = 8 } (both ends included) or { range = [1, 64], factor = 2 }";
    let mut bounds = None;
    let mut step = None;
    let mut factor = None;
    for (k, v) in Parser::entries(t) {
        match &**k.get_ref() {
            "range" => match v.get_ref() {
                DeValue::Array(a) if a.len() == 2 => match (p.lit(&a[0]), p.lit(&a[1])) {
                    (
                        Some(lo @ (Lit::Int(_) | Lit::Float(_))),
                        Some(hi @ (Lit::Int(_) | Lit::Float(_))),
                    ) => bounds = Some((lo, hi, v.span())),
                    _ => {
                        p.error(
                            Code::BadAxisValue,
                            "range bounds must be numbers",
                            v.span(),
                            "not two numbers",
                            help,
                        );
                        return None;
                    }
                },
                _ => {
                    p.error(
                        Code::BadAxisValue,
                        "`range` takes two numbers [low, high]",
                        v.span(),
                        "expected [low, high]",
                        help,
                    );
                    return None;
                }
            },
            "step" => match p.lit(v) {
                Some(l @ (Lit::Int(_) | Lit::Float(_))) if l.as_f64() > 0.0 => {
                    step = Some((l, v.span()))
                }
                _ => {
                    p.error(
                        Code::BadAxisValue,
                        "`step` must be a positive number",
                        v.span(),
                        "not a positive number",
                        help,
                    );
                    return None;
                }
            },
            "factor" => match p.lit(v) {
                Some(l @ (Lit::Int(_) | Lit::Float(_))) if l.as_f64() > 1.0 => {
                    factor = Some((l, v.span()))
                }
                _ => {
                    p.error(
                        Code::BadAxisValue,
                        "`factor` must be a number above 1",
                        v.span(),
                        "not above 1",
                        help,
                    );
                    return None;
                }
            },
            _ => {
                p.unknown_key(k, "a range", &["range", "step", "factor"]);
                return None;
            }
        }
    }
    let (lo, hi, bounds_span) = bounds?;
    if lo.as_f64() > hi.as_f64() {
        p.error(
            Code::BadAxisValue,
            "the range is empty: low > high",
            bounds_span,
            "low > high",
            help,
        );
        return None;
    }
    let all_int = matches!((lo, hi), (Lit::Int(_), Lit::Int(_)))
        && !matches!(step, Some((Lit::Float(_), _)))
        && !matches!(factor, Some((Lit::Float(_), _)));
    if ty == Ty::Int && !all_int {
        p.error(
            Code::BadAxisValue,
            format!("axis `{path}` takes integers; this range has floats"),
            whole.span(),
            "expected integers",
            "use integer bounds and step",
        );
        return None;
    }
    let mut out = Vec::new();
    let too_many = |p: &mut Parser| {
        p.error(
            Code::BadAxisValue,
            format!("the range has more than {MAX_RANGE_VALUES} values"),
            whole.span(),
            "too many values",
            "use a larger step",
        );
    };
    match (step, factor) {
        (Some(_), Some((_, at))) => {
            p.error(
                Code::BadAxisValue,
                "give `step` or `factor`, not both",
                at,
                "both given",
                help,
            );
            return None;
        }
        (None, None) => {
            p.error(
                Code::BadAxisValue,
                "a range needs `step` or `factor`",
                whole.span(),
                "no step",
                help,
            );
            return None;
        }
        (Some((s, _)), None) => {
            if all_int {
                let (Lit::Int(lo), Lit::Int(hi), Lit::Int(s)) = (lo, hi, s) else {
                    unreachable!()
                };
                let mut x = lo;
                while x <= hi {
                    if out.len() >= MAX_RANGE_VALUES {
                        too_many(p);
                        return None;
                    }
                    out.push(AxisValue::Lit(Lit::Int(x)));
                    x = x.checked_add(s)?;
                }
            } else {
                let (lo, hi, s) = (lo.as_f64(), hi.as_f64(), s.as_f64());
                let n = ((hi - lo) / s + 1e-9).floor() as usize + 1;
                if n > MAX_RANGE_VALUES {
                    too_many(p);
                    return None;
                }
                for i in 0..n {
                    // Rounded to 12 significant digits so that 0.1 steps read back cleanly.
                    let v: f64 = format!("{:.12e}", lo + i as f64 * s).parse().unwrap_or(0.0);
                    out.push(AxisValue::Lit(Lit::Float(v)));
                }
            }
        }
        (None, Some((f, _))) => {
            if lo.as_f64() <= 0.0 {
                p.error(
                    Code::BadAxisValue,
                    "a `factor` range must start above 0",
                    bounds_span,
                    "low <= 0",
                    help,
                );
                return None;
            }
            let mut x = lo.as_f64();
            while x <= hi.as_f64() * (1.0 + 1e-12) {
                if out.len() >= MAX_RANGE_VALUES {
                    too_many(p);
                    return None;
                }
                out.push(AxisValue::Lit(if all_int {
                    Lit::Int(x.round() as i64)
                } else {
                    Lit::Float(x)
                }));
                x *= f.as_f64();
            }
            out.dedup();
        }
    }
    Some(out)
}
