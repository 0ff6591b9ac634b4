//! The commits the proxy saw the broker accept, per partition of the topic under test: the
//! committing connection of a Kafka loss (issue 13, "loss needs the broker's word"). A loss
//! is proven only when the broker counts the message done (the last `progress`) *and* a
//! consumer connection the proxy watched committed past it; a committed offset nobody in the
//! run was seen committing (a commit that bypassed the proxy, an offset reset by a tool, a
//! member outside the run) is no proof of what the consumer did.
//!
//! Invariants: an OffsetCommit counts once its response passes without error (a response
//! without offsets has those of its committer's last request); a TxnOffsetCommit counts once
//! the broker accepted it *and* the same transactional id's next EndTxn committed without
//! error (an abort, a refused EndTxn or a new InitProducerId drops what was pending); only
//! the run's topic (and, for OffsetCommit, its group) counts.

use std::collections::{BTreeMap, HashMap};

use crate::timeline::{CommitPhase, CommittedOffset, Event, ProcessRef, TxnOp};

/// The furthest offset per partition that a watched consumer connection committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CommitsSeen {
    /// Partition → the highest next-offset committed through the proxy and accepted.
    pub(crate) past: BTreeMap<i32, i64>,
    /// Who committed it (the first to reach that offset), per partition.
    pub(crate) by: BTreeMap<i32, ProcessRef>,
}

impl CommitsSeen {
    /// Whether a watched connection committed past `offset` of `partition`.
    pub(crate) fn covers(&self, partition: i32, offset: i64) -> bool {
        self.past.get(&partition).is_some_and(|&c| offset < c)
    }

    fn add(&mut self, topic: &str, who: ProcessRef, offsets: &[CommittedOffset]) {
        for c in offsets.iter().filter(|c| c.topic == topic) {
            let past = self.past.entry(c.partition).or_insert(i64::MIN);
            if c.offset > *past {
                *past = c.offset;
                self.by.insert(c.partition, who);
            }
        }
    }
}

/// Reads the accepted commits during pass 1, one event at a time.
#[derive(Default)]
pub(crate) struct CommitsReader {
    /// The run's topic and group, once `run_started` was read.
    scope: Option<(String, String)>,
    /// Each committer's last OffsetCommit request.
    last_request: HashMap<ProcessRef, Vec<CommittedOffset>>,
    /// Accepted TxnOffsetCommits whose transaction has not ended yet, per transactional id.
    in_txn: HashMap<String, Vec<(ProcessRef, Vec<CommittedOffset>)>>,
    seen: CommitsSeen,
}

impl CommitsReader {
    /// The run's topic and consumer group (from `run_started`).
    pub(crate) fn scope(&mut self, topic: &str, group: &str) {
        self.scope
            .get_or_insert_with(|| (topic.into(), group.into()));
    }

    /// Takes in one event; every kind but `commit` and `txn` is ignored.
    pub(crate) fn observe(&mut self, event: &Event) {
        let Some((topic, group)) = &self.scope else {
            return;
        };
        match event {
            Event::Commit {
                instance,
                incarnation,
                group: g,
                offsets,
                phase,
                error,
                ..
            } if g == group => {
                let who = ProcessRef {
                    instance: *instance,
                    incarnation: *incarnation,
                };
                match (phase, error) {
                    (CommitPhase::Request, _) => {
                        self.last_request.insert(who, offsets.clone());
                    }
                    (CommitPhase::Response, None) if offsets.is_empty() => {
                        let asked = self.last_request.get(&who).cloned().unwrap_or_default();
                        self.seen.add(topic, who, &asked);
                    }
                    (CommitPhase::Response, None) => self.seen.add(topic, who, offsets),
                    (CommitPhase::Response, Some(_)) | (CommitPhase::Dropped, _) => {}
                }
            }
            Event::Txn {
                instance,
                incarnation,
                op,
                transactional_id: Some(tid),
                committed,
                offsets,
                error,
                request: false,
                ..
            } => {
                let who = ProcessRef {
                    instance: *instance,
                    incarnation: *incarnation,
                };
                match (op, error, committed) {
                    (TxnOp::TxnOffsetCommit, None, _) => self
                        .in_txn
                        .entry(tid.clone())
                        .or_default()
                        .push((who, offsets.clone())),
                    (TxnOp::EndTxn, None, Some(true)) => {
                        for (who, offsets) in self.in_txn.remove(tid).unwrap_or_default() {
                            self.seen.add(topic, who, &offsets);
                        }
                    }
                    (TxnOp::EndTxn, ..) | (TxnOp::InitProducerId, ..) => {
                        self.in_txn.remove(tid);
                    }
                    (TxnOp::TxnOffsetCommit, Some(_), _)
                    | (TxnOp::AddPartitionsToTxn, ..)
                    | (TxnOp::AddOffsetsToTxn, ..) => {}
                }
            }
            _ => {}
        }
    }

    /// The accepted commits of the whole run.
    pub(crate) fn finish(self) -> CommitsSeen {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixtures::{commit_event, committed};

    fn reader() -> CommitsReader {
        let mut r = CommitsReader::default();
        r.scope("orders-r1", "billing-r1");
        r
    }

    fn txn(op: TxnOp, committed: Option<bool>, offsets: Vec<CommittedOffset>) -> Event {
        Event::Txn {
            instance: 0,
            incarnation: 1,
            op,
            transactional_id: Some("t-0".into()),
            producer_id: 7,
            producer_epoch: 0,
            committed,
            request: false,
            offsets,
            error: None,
        }
    }

    #[test]
    fn an_offset_commit_counts_once_the_broker_accepted_it() {
        let mut r = reader();
        let offs = vec![committed("orders-r1", 0, 5), committed("other", 1, 9)];
        r.observe(&commit_event(
            "billing-r1",
            (0, 1),
            offs.clone(),
            CommitPhase::Request,
        ));
        assert!(!r.seen.covers(0, 4), "a request is not the broker's word");
        let mut refused = commit_event("billing-r1", (0, 1), offs.clone(), CommitPhase::Response);
        if let Event::Commit { error, .. } = &mut refused {
            *error = Some("ILLEGAL_GENERATION".into());
        }
        r.observe(&refused);
        r.observe(&commit_event(
            "other-group",
            (0, 1),
            offs.clone(),
            CommitPhase::Response,
        ));
        assert!(!r.seen.covers(0, 4));
        r.observe(&commit_event(
            "billing-r1",
            (0, 1),
            Vec::new(),
            CommitPhase::Response,
        ));
        let seen = r.finish();
        assert!(seen.covers(0, 4) && !seen.covers(0, 5));
        assert!(!seen.covers(1, 0), "another topic's partition");
        assert_eq!(
            seen.by[&0],
            ProcessRef {
                instance: 0,
                incarnation: 1
            }
        );
    }

    #[test]
    fn transactional_offsets_count_once_their_transaction_committed() {
        let mut r = reader();
        let offs = || vec![committed("orders-r1", 0, 3)];
        r.observe(&txn(TxnOp::TxnOffsetCommit, None, offs()));
        r.observe(&txn(TxnOp::EndTxn, Some(false), Vec::new()));
        assert!(
            !r.seen.covers(0, 2),
            "an aborted transaction commits nothing"
        );
        r.observe(&txn(TxnOp::TxnOffsetCommit, None, offs()));
        r.observe(&txn(TxnOp::InitProducerId, None, Vec::new()));
        r.observe(&txn(TxnOp::EndTxn, Some(true), Vec::new()));
        assert!(!r.seen.covers(0, 2), "a new epoch aborted what was open");
        r.observe(&txn(TxnOp::TxnOffsetCommit, None, offs()));
        r.observe(&txn(TxnOp::EndTxn, Some(true), Vec::new()));
        assert!(r.finish().covers(0, 2));
    }
}
