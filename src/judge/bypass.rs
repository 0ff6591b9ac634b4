//! Bypasses of the proxy: consumer connections the run's watch found connected straight to the
//! broker (`bypass` events), and the faults they make unexercised.
//!
//! A fault that depends on the proxy (`FaultRecord::through_proxy`: a network fault applied to
//! the proxied connections, or a trigger counting commits, acks, deliveries or rebalances the
//! proxy sees) does not reach a connection that bypasses it. A firing counts as bypassed when
//! an incarnation with a bypassing connection was alive when it landed and the fault hit it
//! (or hit no one in particular). The watch samples sockets about once a second, so a
//! bypassing incarnation is taken as bypassing for its whole life, not from the moment its
//! connection was first seen: the conservative reading, which can only make a run less
//! conclusive. A planned fault none of whose applied firings escaped a bypass was not
//! exercised (like a fault that never fired).
//!
//! Pure: facts in, findings out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::judge::facts::Incarnation;
use crate::judge::model::UnfiredFault;
use crate::timeline::{FaultRecord, ProcessRef};

/// One consumer connection straight to the broker, past the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bypass {
    /// When the watch first saw it (µs).
    pub t_us: u64,
    /// Instance.
    pub instance: u32,
    /// Incarnation.
    pub incarnation: u32,
    /// The process holding the socket.
    pub pid: u32,
    /// The socket's own address.
    pub local: String,
    /// The broker address it is connected to.
    pub remote: String,
}

impl Bypass {
    /// `consumer[0]#1 (pid 4242): 127.0.0.1:51234 -> 127.0.0.1:9092`.
    pub fn describe(&self) -> String {
        format!(
            "consumer[{}]#{} (pid {}): {} -> {}",
            self.instance, self.incarnation, self.pid, self.local, self.remote
        )
    }
}

/// The planned faults that fired only while a bypass escaped them: every applied firing
/// depended on the proxy and landed while a bypassing incarnation it hit was alive.
pub(crate) fn bypassed_faults(
    bypasses: &[Bypass],
    faults: &[FaultRecord],
    incarnations: &[Incarnation],
    planned: &[String],
) -> Vec<UnfiredFault> {
    if bypasses.is_empty() {
        return Vec::new();
    }
    let bypassers: Vec<&Incarnation> = incarnations
        .iter()
        .filter(|i| {
            bypasses
                .iter()
                .any(|b| (b.instance, b.incarnation) == (i.instance, i.incarnation))
        })
        .collect();
    // Per fault index: (applied firings, of which bypassed).
    let mut firings: BTreeMap<usize, (u32, u32)> = BTreeMap::new();
    for f in faults.iter().filter(|f| f.applied) {
        let entry = firings.entry(f.fault).or_default();
        entry.0 += 1;
        if f.through_proxy && bypassers.iter().any(|b| escaped(f, b)) {
            entry.1 += 1;
        }
    }
    firings
        .into_iter()
        .filter(|(_, (applied, bypassed))| applied == bypassed)
        .map(|(fault, _)| UnfiredFault {
            fault,
            plan: planned.get(fault).cloned().unwrap_or_default(),
        })
        .collect()
}

/// True when the firing `f` landed while the bypassing incarnation `b` was alive and aimed at
/// it (or at no incarnation in particular).
fn escaped(f: &FaultRecord, b: &Incarnation) -> bool {
    let t = f.fired_at_us;
    let alive = b.started_us.is_none_or(|s| s <= t) && b.exited_us.is_none_or(|e| e > t);
    let aimed = f.hit.is_empty()
        || f.hit.contains(&ProcessRef {
            instance: b.instance,
            incarnation: b.incarnation,
        });
    alive && aimed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bypass(instance: u32, incarnation: u32) -> Bypass {
        Bypass {
            t_us: 5_000,
            instance,
            incarnation,
            pid: 4000 + incarnation,
            local: "127.0.0.1:50000".into(),
            remote: "127.0.0.1:9092".into(),
        }
    }

    fn life(instance: u32, incarnation: u32, from: u64, to: Option<u64>) -> Incarnation {
        Incarnation {
            instance,
            incarnation,
            pid: 4000 + incarnation,
            started_us: Some(from),
            exited_us: to,
            status: None,
        }
    }

    fn firing(fault: usize, at: u64, through_proxy: bool, hit: &[(u32, u32)]) -> FaultRecord {
        FaultRecord {
            fault,
            action: if through_proxy { "partition" } else { "kill" }.into(),
            target: "consumer".into(),
            trigger: "after: effect, nth: 20".into(),
            matched_at_us: at,
            fired_at_us: at,
            trigger_latency_us: 0,
            applied: true,
            detail: String::new(),
            hit: hit
                .iter()
                .map(|&(instance, incarnation)| ProcessRef {
                    instance,
                    incarnation,
                })
                .collect(),
            length_us: None,
            through_proxy,
        }
    }

    fn planned() -> Vec<String> {
        (0..3).map(|i| format!("fault {i}")).collect()
    }

    #[test]
    fn a_proxy_fault_that_fired_while_the_bypasser_lived_is_not_exercised() {
        let lives = [life(0, 1, 1_000, Some(50_000)), life(0, 2, 51_000, None)];
        let faults = [
            firing(0, 10_000, true, &[(0, 1)]),  // partition on the bypasser
            firing(1, 10_000, false, &[(0, 1)]), // a kill reaches it anyway
            firing(2, 60_000, true, &[(0, 2)]),  // partition on a later, proxied incarnation
        ];
        let got = bypassed_faults(&[bypass(0, 1)], &faults, &lives, &planned());
        assert_eq!(
            got,
            [UnfiredFault {
                fault: 0,
                plan: "fault 0".into()
            }]
        );
        assert!(bypassed_faults(&[], &faults, &lives, &planned()).is_empty());
    }

    #[test]
    fn a_run_whose_only_fault_was_bypassed_is_inconclusive_and_names_the_connection() {
        use crate::judge::fixtures::{at, effect_event, info, produced_event};
        use crate::timeline::{EffectOutcome, EndReason, Event, ProcessPhase, ProduceStatus};
        let partition = "partition: consumer when after: effect, nth: 1";
        let mut f = firing(0, 4_000, true, &[(0, 1)]);
        f.trigger = "after: effect, nth: 1".into();
        let events: Vec<_> = [
            Event::RunStarted(Box::new(info(&[partition], 1, "at-least-once"))),
            produced_event("m-1", Some(0), Some(0), ProduceStatus::Acked),
            Event::Process {
                instance: 0,
                incarnation: 1,
                pid: 4001,
                phase: ProcessPhase::Started,
                status: None,
            },
            effect_event("m-1", Some(0), Some(1), EffectOutcome::Applied),
            Event::Fault(Box::new(f)),
            Event::Bypass {
                instance: 0,
                incarnation: 1,
                pid: 4002,
                local: "127.0.0.1:50000".into(),
                remote: "127.0.0.1:9092".into(),
            },
            Event::Progress {
                committed: [(0, 1)].into(),
                end: [(0, 1)].into(),
            },
            Event::RunEnded {
                reason: EndReason::Settled,
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, e)| at(i as u64, 1_000 * (i as u64 + 1), e))
        .collect();
        let j = crate::judge::analyze(&events);
        assert_eq!(j.verdict, crate::judge::Verdict::Inconclusive);
        assert_eq!(j.exit_code(), 3);
        let reason = j
            .inconclusive_reasons
            .iter()
            .find(|r| r.code() == "faults_bypassed")
            .expect("the bypass is a reason");
        assert!(reason.to_string().contains(partition), "{reason}");
        assert_eq!(j.bypasses.len(), 1);
        assert_eq!(j.faults_fired, [0], "it fired, it just did not reach");
        let md = crate::report::markdown::render(&j);
        assert!(md.contains("The consumer bypassed the proxy"), "{md}");
        assert!(md.contains("127.0.0.1:50000 -> 127.0.0.1:9092"), "{md}");
        let json: serde_json::Value =
            serde_json::from_str(&crate::report::json::render(&j).unwrap()).unwrap();
        assert_eq!(json["bypass"][0]["remote"], "127.0.0.1:9092");
        assert_eq!(json["faults_bypassed"][0]["fault"], 0);
    }

    #[test]
    fn a_fault_exercised_once_past_the_bypass_counts_and_one_aimed_elsewhere_too() {
        let lives = [life(0, 1, 1_000, None), life(1, 1, 1_000, None)];
        // Fault 0 fired twice: once on the bypasser, once on the other instance only.
        let faults = [
            firing(0, 10_000, true, &[(0, 1)]),
            firing(0, 20_000, true, &[(1, 1)]),
            // Fault 1 hit no one in particular (a rebalance on a commit trigger): bypassed.
            firing(1, 30_000, true, &[]),
        ];
        let got = bypassed_faults(&[bypass(0, 1)], &faults, &lives, &planned());
        assert_eq!(got.iter().map(|u| u.fault).collect::<Vec<_>>(), [1]);
    }
}
