//! [`resolve`]: what needs the base model (definition kinds, metric names).

use super::*;

/// Checks what needs the base model: the kind of every definition an axis
/// changes a field of, and the metric names of constraints and objectives.
pub fn resolve(
    sweep: &mut SweepFile,
    def_kinds: &BTreeMap<(Sort, String), String>,
    metrics: &BTreeMap<String, f64>,
) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let whole: Vec<(Sort, String)> = sweep
        .axes
        .iter()
        .filter_map(|a| match &a.target {
            Target::Def {
                sort,
                name,
                field: None,
                ..
            } => Some((*sort, name.clone())),
            _ => None,
        })
        .collect();
    for axis in &mut sweep.axes {
        if let Target::Def {
            sort,
            name,
            field,
            base_kind,
        } = &mut axis.target
        {
            let key = (*sort, name.clone());
            let field = *field;
            *base_kind = def_kinds.get(&key).cloned();
            let replaced = whole.contains(&key);
            match (&base_kind, field) {
                (None, _) if field.is_none() || !replaced => {
                    let names: Vec<&str> = def_kinds
                        .keys()
                        .filter(|(s, _)| s == sort)
                        .map(|(_, n)| n.as_str())
                        .collect();
                    diags.push(
                        Diagnostic::error(
                            Code::UnknownAxis,
                            format!(
                                "the base model's blocks use no {} definition named `{name}`",
                                sort.keyword()
                            ),
                        )
                        .label(axis.span, "no such definition")
                        .help(suggest::help_for(
                            name,
                            "definitions",
                            names.iter().copied(),
                        )),
                    );
                }
                (Some(kind), Some(f)) if !replaced => {
                    let has = sort
                        .kinds()
                        .iter()
                        .find(|(k, _)| k == kind)
                        .is_some_and(|(_, specs)| find_spec(specs, f.name).is_some());
                    if !has {
                        diags.push(
                            Diagnostic::error(
                                Code::UnknownAxis,
                                format!("`{name}` is {} `{kind}`, which has no field `{}`", sort.keyword(), f.name),
                            )
                            .label(axis.span, "not a field of the base definition")
                            .help(format!(
                                "sweep the whole definition instead: \"{}\" = [{{ kind = \"...\", ... }}]",
                                if *sort == Sort::Attention { "attention".to_string() } else { format!("ffn.{name}") }
                            )),
                        );
                    }
                }
                _ => {}
            }
        }
    }
    let mut names: Vec<&str> = metrics.keys().map(String::as_str).collect();
    if sweep.options.measure_cpu {
        names.extend(CPU_METRICS);
    }
    let per_loop: Vec<String> = sweep
        .eval
        .loops
        .iter()
        .flat_map(|n| {
            [
                format!("eval.loss@loops={n}"),
                format!("eval.acc@loops={n}"),
            ]
        })
        .collect();
    if sweep.options.measure_train {
        names.extend(TRAIN_METRICS);
        names.extend(per_loop.iter().map(String::as_str));
    }
    let mut check = |metric: &str, span: Span, what: &str| {
        if !names.contains(&metric) {
            diags.push(
                Diagnostic::error(Code::BadConstraint, format!("{what} names no metric `{metric}`"))
                    .label(span, "unknown metric")
                    .help(match suggest::closest(metric, names.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => {
                            let main: Vec<String> = names
                                .iter()
                                .filter(|n| !n.contains("by_component"))
                                .map(|n| format!("`{n}`"))
                                .collect();
                            format!(
                                "metrics include {} (and per-component ones, `params.by_component.*`, `flops.by_component.*`)",
                                main.join(", ")
                            )
                        }
                    })
                    .note("metrics are the numbers of `mythos inspect --json`, as dotted paths"),
            );
        }
    };
    for c in &sweep.constraints {
        check(&c.metric, c.span, "the constraint");
    }
    for o in &sweep.objectives {
        check(&o.metric, o.span, "the objective");
    }
    if let Some(es) = &sweep.early_stop {
        check_early_stop(sweep, es, &mut diags);
    }
    diags
}

/// `[early_stop]` ranks by the objectives, over one budget for all trials.
fn check_early_stop(sweep: &SweepFile, es: &EarlyStop, diags: &mut Vec<Diagnostic>) {
    if sweep.objectives.is_empty() {
        diags.push(
            Diagnostic::error(
                Code::InvalidSweep,
                "`[early_stop]` keeps the best trials by the objectives, and there are none",
            )
            .help("add objectives = [{ minimize = \"eval.loss\" }] (or more)"),
        );
    }
    if let (Some(m), Some(span)) = (&es.primary, es.primary_span) {
        if !sweep.objectives.iter().any(|o| &o.metric == m) {
            diags.push(
                Diagnostic::error(
                    Code::BadConstraint,
                    format!("`primary = \"{m}\"` is not one of the objectives"),
                )
                .label(span, "not an objective")
                .help("name the metric of an objective; its direction decides what is best"),
            );
        }
    }
    if let Some(a) = sweep
        .axes
        .iter()
        .find(|a| matches!(a.target, Target::Train(TrainKey::Steps)))
    {
        diags.push(
            Diagnostic::error(
                Code::UnknownAxis,
                "`train.steps` as an axis and `[early_stop]` both set the training budget",
            )
            .label(a.span, "a budget axis")
            .help("set steps in [train] and let [early_stop] cut trainings short, or drop [early_stop]"),
        );
    }
    let steps = sweep
        .train
        .as_ref()
        .and_then(|t| t.values.iter().find(|(k, _)| *k == TrainKey::Steps))
        .and_then(|(_, v)| match v {
            AxisValue::Lit(l) => Some(l.as_f64() as u64),
            _ => None,
        })
        .unwrap_or(100);
    if es.min_steps >= steps {
        diags.push(
            Diagnostic::error(
                Code::InvalidSweep,
                format!(
                    "`[early_stop] min_steps = {}` is not below the training's {steps} steps: nothing would stop early",
                    es.min_steps
                ),
            )
            .help("lower min_steps (say a tenth of steps), or drop [early_stop]"),
        );
    }
}
