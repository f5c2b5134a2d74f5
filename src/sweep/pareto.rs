//! The Pareto front: the points no other point dominates. Self-contained (no
//! crate imports) so that tests/sweep.rs can include it directly.

/// Whether `a` dominates `b`: no worse in every objective, better in one.
/// `maximize[k]` says the direction of objective `k`.
pub fn dominates(a: &[f64], b: &[f64], maximize: &[bool]) -> bool {
    let mut better = false;
    for ((&x, &y), &max) in a.iter().zip(b).zip(maximize) {
        let (x, y) = if max { (-x, -y) } else { (x, y) };
        if x > y {
            return false;
        }
        if x < y {
            better = true;
        }
    }
    better
}

/// For each point, whether it is on the front (non-dominated). Points with a
/// NaN objective are never on it; equal points are all on it.
///
/// Points are visited in lexicographic order of their (direction-adjusted)
/// objectives, so a point can only be dominated by one visited before it, and
/// if it is dominated at all then by a point of the front found so far
/// (dominance is transitive): O(n log n + n * front).
pub fn front(points: &[Vec<f64>], maximize: &[bool]) -> Vec<bool> {
    let key = |p: &Vec<f64>| -> Vec<f64> {
        p.iter()
            .zip(maximize)
            .map(|(&x, &max)| if max { -x } else { x })
            .collect()
    };
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| !points[i].iter().any(|x| x.is_nan()))
        .collect();
    order.sort_by(|&a, &b| {
        key(&points[a])
            .partial_cmp(&key(&points[b]))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut on = vec![false; points.len()];
    let mut found: Vec<usize> = Vec::new();
    for i in order {
        if !found
            .iter()
            .any(|&f| dominates(&points[f], &points[i], maximize))
        {
            on[i] = true;
            found.push(i);
        }
    }
    on
}

/// The non-dominated rank of each point: 0 for the front, 1 for the front
/// of the rest, and so on; `usize::MAX` for points with a NaN objective.
pub fn ranks(points: &[Vec<f64>], maximize: &[bool]) -> Vec<usize> {
    let mut rank = vec![usize::MAX; points.len()];
    let mut left: Vec<usize> = (0..points.len())
        .filter(|&i| !points[i].iter().any(|x| x.is_nan()))
        .collect();
    let mut r = 0;
    while !left.is_empty() {
        let sub: Vec<Vec<f64>> = left.iter().map(|&i| points[i].clone()).collect();
        let on = front(&sub, maximize);
        let mut rest = Vec::new();
        for (k, &i) in left.iter().enumerate() {
            if on[k] {
                rank[i] = r;
            } else {
                rest.push(i);
            }
        }
        left = rest;
        r += 1;
    }
    rank
}
