//! The judgements a page shows: a run with one sink is one part (the run's own judgement); a
//! run with boundaries is one part per boundary, each judged on its own effects (design §13).
//! The anomalies, mechanisms and commit windows live in the parts: the overall judgement of a
//! run with boundaries carries none of them.

use crate::judge::{Anomaly, Judgement};

/// One judged part of a run.
#[derive(Clone, Copy)]
pub struct Part<'a> {
    /// The boundary's name; `None` for a run with one sink.
    pub boundary: Option<&'a str>,
    /// Its judgement.
    pub rec: &'a Judgement,
}

impl Part<'_> {
    /// " at email" for a boundary, nothing for a run with one sink.
    pub fn at(&self) -> String {
        self.boundary.map_or(String::new(), |b| format!(" at {b}"))
    }
}

/// The parts of `rec`, in plan order.
pub fn of(rec: &Judgement) -> Vec<Part<'_>> {
    if rec.boundaries.is_empty() {
        return vec![Part {
            boundary: None,
            rec,
        }];
    }
    rec.boundaries
        .iter()
        .map(|b| Part {
            boundary: Some(b.name.as_str()),
            rec: &b.judgement,
        })
        .collect()
}

/// Every anomaly of every part, with its part, in part order.
pub fn anomalies<'a, 'p>(
    parts: &'p [Part<'a>],
) -> impl Iterator<Item = (Part<'a>, &'a Anomaly)> + 'p {
    parts
        .iter()
        .flat_map(|p| p.rec.anomalies.iter().map(move |a| (*p, a)))
}

/// The mechanisms named for `id` over the parts: `revoked_uncommitted`, or for boundaries
/// `effect_outside_transaction at email`, several joined by `; `.
pub fn mechanisms_of(parts: &[Part<'_>], id: &str) -> Option<String> {
    let named: Vec<String> = parts
        .iter()
        .filter_map(|p| {
            p.rec
                .mechanisms
                .of(id)
                .map(|m| format!("{}{}", m.as_str(), p.at()))
        })
        .collect();
    (!named.is_empty()).then(|| named.join("; "))
}
