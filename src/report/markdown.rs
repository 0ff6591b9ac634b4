//! `report.md`: the incident-style report for people.
//!
//! Sections, in order: title, Summary (verdict, expectation, one plain sentence), the
//! mock-broker warning and the bypass caveat when they apply, Impact (counts), Timeline (faults, incarnations, run
//! end, chronological), Anomalies (samples per outcome with a per-ID timeline and the nearest
//! fault), Why inconclusive, Caveats (and why the claim is unknown), Rejected effects,
//! Warnings, Failed produces, How to reproduce.
//!
//! Invariants: every number comes from the judgement; text from the timeline (IDs,
//! details, warnings) is escaped so it cannot break the table or code layout. Writing to a
//! `String` cannot fail, so the `let _ = writeln!(..)` throughout discard an always-`Ok`.

use std::fmt::Write as _;

use super::{
    end_reason_str, expectation_line, latency, redact_address, secs, summary_sentence, MOCK_WARNING,
};
use crate::judge::{Anomaly, Judgement, Outcome, Verdict};
use crate::timeline::{AttributedBy, EffectOutcome, FaultRecord};

/// Sample IDs shown per outcome.
pub const SAMPLES_PER_OUTCOME: usize = 10;

/// Renders `report.md`. A run with boundaries opens with their table; each boundary's own
/// findings follow under its heading, the sections the boundaries share once.
pub fn render(rec: &Judgement) -> String {
    if !rec.boundaries.is_empty() {
        return render_boundaries(rec);
    }
    let mut md = String::new();
    title(&mut md, rec);
    summary(&mut md, rec);
    consumer_settings(&mut md, rec);
    impact(&mut md, rec);
    timeline(&mut md, rec);
    root_causes(&mut md, rec);
    key_order(&mut md, rec);
    anomalies(&mut md, rec);
    commit_window(&mut md, rec);
    output_topics(&mut md, rec);
    poison(&mut md, rec);
    reasons(&mut md, rec);
    rejected(&mut md, rec);
    warnings(&mut md, rec);
    reproduce(&mut md, rec);
    md
}

/// `report.md` of a run with boundaries.
fn render_boundaries(rec: &Judgement) -> String {
    let mut md = String::new();
    title(&mut md, rec);
    boundary_table(&mut md, rec);
    summary(&mut md, rec);
    consumer_settings(&mut md, rec);
    timeline(&mut md, rec);
    for b in &rec.boundaries {
        let j = &b.judgement;
        let _ = writeln!(
            md,
            "## Boundary {}: {} ({} sink, promise {})\n",
            code(&b.name),
            j.verdict,
            text(b.sink.as_str()),
            text(&b.expect)
        );
        let _ = writeln!(md, "{}\n", summary_sentence(j));
        let mut own = String::new();
        for section in [
            impact,
            root_causes,
            key_order,
            anomalies,
            commit_window,
            output_topics,
            poison,
            reasons,
            rejected,
        ] {
            section(&mut own, j);
        }
        // One heading level down: these sections belong to the boundary above.
        for line in own.lines() {
            if line.starts_with('#') {
                md.push('#');
            }
            md.push_str(line);
            md.push('\n');
        }
    }
    warnings(&mut md, rec);
    reproduce(&mut md, rec);
    md
}

/// What was read back from output topics: records under each isolation level, and the
/// records of aborted transactions (never effects).
fn output_topics(md: &mut String, rec: &Judgement) {
    if rec.output_topics.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Output topic\n");
    for t in &rec.output_topics {
        let _ = writeln!(
            md,
            "{}: effects read {}; {} records under read_committed, {} under read_uncommitted.\n",
            code(&t.topic),
            text(&t.isolation),
            t.committed_records,
            t.uncommitted_records
        );
        if t.aborted_records > 0 {
            let ids: Vec<String> = t.aborted_ids.iter().map(|i| code(i)).collect();
            let _ = writeln!(
                md,
                "**{} records of aborted transactions** ({} naming a message, first: {}): never effects under read_committed, but a non-transactional reader downstream (read_uncommitted) would have seen them, and a message redone after the abort twice (each named under Root cause: `aborted_then_committed`, `aborted_never_committed`).\n",
                t.aborted_records,
                t.aborted_with_id,
                if ids.is_empty() { "none".to_owned() } else { ids.join(", ") }
            );
        } else {
            let _ = writeln!(md, "No record of an aborted transaction.\n");
        }
        if !t.complete {
            let _ = writeln!(
                md,
                "> **Not read to its end** once the run stopped: effects may be missing.\n"
            );
        }
    }
}

/// The poison messages: what became of each, and whether its partition or queue kept moving.
fn poison(md: &mut String, rec: &Judgement) {
    if rec.poison.is_empty() {
        return;
    }
    let k = &rec.counts;
    let _ = writeln!(
        md,
        "## Poison messages
"
    );
    let _ = writeln!(
        md,
        "{} poison message{} ({} diverted to the dead-letter destination).
",
        k.poison,
        if k.poison == 1 { "" } else { "s" },
        k.diverted
    );
    let _ = writeln!(
        md,
        "| ID | outcome | partition | offset | deliveries | kept moving |\n|---|---|---|---|---|---|"
    );
    let opt = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
    for p in &rec.poison {
        let moving = match p.moved_on {
            Some(true) => "yes",
            Some(false) => "**no: stuck**",
            None => "unknown",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {moving} |",
            code(&p.id),
            p.outcome,
            opt(p.partition.map(i64::from)),
            opt(p.offset),
            p.deliveries
        );
    }
    if (k.poison as usize) > rec.poison.len() {
        let _ = writeln!(md, "\n(the first {} listed)", rec.poison.len());
    }
    md.push('\n');
}

/// The boundary table: each boundary's promise, verdict, counts and mechanisms.
fn boundary_table(md: &mut String, rec: &Judgement) {
    let _ = writeln!(md, "## Boundaries\n");
    let _ = writeln!(
        md,
        "| boundary | sink | promise | verdict | promise kept | lost | duplicated | mechanism |\n\
         | --- | --- | --- | --- | --- | ---: | ---: | --- |"
    );
    for b in &rec.boundaries {
        let j = &b.judgement;
        let mechanisms = j.mechanisms.summary();
        let _ = writeln!(
            md,
            "| {} | {} | {} | **{}** | {} | {} | {} | {} |",
            cell(&b.name),
            cell(b.sink.as_str()),
            cell(&b.expect),
            j.verdict,
            j.expectation_state.as_str(),
            j.counts.lost,
            j.counts.duplicated,
            if mechanisms.is_empty() {
                "—".to_owned()
            } else {
                cell(&mechanisms.join("; "))
            }
        );
    }
    md.push('\n');
}

fn title(md: &mut String, rec: &Judgement) {
    match &rec.run {
        Some(r) => {
            let _ = writeln!(md, "# {}: run {}\n", text(&r.plan), code(&r.run));
            if let Some(d) = r.description.as_deref().filter(|d| !d.trim().is_empty()) {
                let _ = writeln!(md, "{}\n", text(d));
            }
            let _ = writeln!(
                md,
                "Broker: {} at {}, topic {}, group {}. Seed {}.\n",
                text(&r.broker),
                code(&redact_address(&r.broker_address)),
                code(&r.topic),
                code(&r.group),
                r.seed
            );
        }
        None => {
            let _ = writeln!(md, "# exactly: unknown run\n");
            let _ = writeln!(md, "The timeline has no `run_started` event.\n");
        }
    }
}

fn summary(md: &mut String, rec: &Judgement) {
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(md, "Verdict: **{}**\n", rec.verdict);
    let _ = writeln!(md, "Expectation: {}\n", expectation_line(rec));
    let _ = writeln!(md, "{}\n", summary_sentence(rec));
    if rec.counts.redeliveries_absorbed > 0 {
        let _ = writeln!(
            md,
            "{} redeliver{} of a message after its effect wrote nothing more: absorbed by the \
             consumer's dedup (a dedup table, offsets stored with the data, an idempotent \
             write), or not processed again before the end.\n",
            rec.counts.redeliveries_absorbed,
            if rec.counts.redeliveries_absorbed == 1 {
                "y"
            } else {
                "ies"
            }
        );
    }
    if rec.mock_broker() {
        let _ = writeln!(md, "> **Warning: {MOCK_WARNING}.**\n");
    }
    if rec.end_reason == Some(crate::timeline::EndReason::InfrastructureError) {
        let _ = writeln!(
            md,
            "> **The harness failed (infrastructure error, exit 4).** Read the warnings before \
             drawing any conclusion about the consumer.\n"
        );
    }
    if rec.end_reason == Some(crate::timeline::EndReason::PlanError) {
        let _ = writeln!(
            md,
            "> **The run was stopped early: the plan must be fixed (exit 2).** Its effect ID rule \
             read none of the first effects; the warnings show a sample and the rule that would \
             have read it.\n"
        );
    }
    bypass(md, rec);
}

/// Connections shown in the bypass caveat (report.json `bypass` has them all).
const BYPASS_SHOWN: usize = 5;

/// The consumer reached the broker past the proxy: said where nobody can miss it.
fn bypass(md: &mut String, rec: &Judgement) {
    let n = rec.bypasses.len();
    if n == 0 {
        return;
    }
    let _ = writeln!(
        md,
        "> **The consumer bypassed the proxy.** {n} connection{} went straight to the broker:",
        if n == 1 { "" } else { "s" }
    );
    for b in rec.bypasses.iter().take(BYPASS_SHOWN) {
        let _ = writeln!(md, "> - {}: {}", secs(b.t_us), code(&b.describe()));
    }
    if n > BYPASS_SHOWN {
        let _ = writeln!(md, "> - … {} more (report.json `bypass`)", n - BYPASS_SHOWN);
    }
    let escaped = if rec.faults_bypassed.is_empty() {
        "no fault fired only while they were open".to_string()
    } else {
        let list: Vec<String> = rec
            .faults_bypassed
            .iter()
            .map(|u| format!("#{} {}", u.fault, code(&u.plan)))
            .collect();
        format!(
            "these fired only while they were open and are **not counted as exercised**: {}",
            list.join("; ")
        )
    };
    let _ = writeln!(
        md,
        ">\n> Network faults (partition, latency, sever) and triggers on commits, acks, \
         deliveries or rebalances do not reach these connections, and the proxy saw none of \
         their traffic; {escaped}. Give the consumer only the addresses in its `EXACTLY_*` \
         variables (`consumer.bypass: fatal` ends the run on a bypass).\n"
    );
}

/// How the consumers asked to be served, when the proxy saw it (AMQP): no-ack mode is a
/// finding in itself.
fn consumer_settings(md: &mut String, rec: &Judgement) {
    let Some(first) = rec.consumer_settings.first() else {
        return;
    };
    let no_ack = rec.consumer_settings.iter().filter(|c| c.no_ack).count();
    if no_ack > 0 {
        let _ = writeln!(
            md,
            "**This consumer runs in no-ack mode** ({no_ack} of {} consumers seen): the broker forgets each message as soon as it sends it, so whatever the consumer holds when it dies is lost.\n",
            rec.consumer_settings.len()
        );
    }
    match first.prefetch {
        Some(p) => {
            let _ = writeln!(md, "Prefetch asked for by the consumer (basic.qos): {p}.\n");
        }
        None => {
            let _ = writeln!(md, "The consumer set no prefetch (basic.qos).\n");
        }
    }
}

fn impact(md: &mut String, rec: &Judgement) {
    let k = &rec.counts;
    let _ = writeln!(md, "## Impact\n");
    let _ = writeln!(md, "| | messages |\n| --- | ---: |");
    let rows: [(&str, u64); 19] = [
        ("planned", k.expected),
        ("produced (acknowledged)", k.produced),
        ("produce failed (not judged)", k.failed),
        ("produce indeterminate", k.indeterminate),
        ("effected", k.effected),
        ("exact", k.exact),
        ("**duplicated**", k.duplicated),
        (
            "duplicated by the harness's hold (not counted)",
            k.harness_duplicated,
        ),
        ("**lost**", k.lost),
        (
            "unconfirmed loss (counted done, no readable effect)",
            k.unconfirmed_loss,
        ),
        ("pending", k.pending),
        ("unconfirmed (indeterminate, no effect)", k.unconfirmed),
        ("phantom IDs", k.phantom),
        ("effects applied", k.effects_applied),
        ("effects replayed (idempotent)", k.effects_replayed),
        ("rejected by the sink", k.rejected),
        ("torn lines (never effects)", k.torn_lines),
        ("stored at two offsets (producer retry)", k.multi_offset),
        (
            "effected, never counted done by the broker",
            k.not_counted_done,
        ),
    ];
    for (label, n) in rows {
        let _ = writeln!(md, "| {label} | {n} |");
    }
    if k.redeliveries_absorbed > 0 {
        let _ = writeln!(
            md,
            "| redeliveries after the one effect that wrote nothing (absorbed by dedup, or not \
             processed again before the end) | {} |",
            k.redeliveries_absorbed
        );
    }
    let hit_nothing = match rec.faults_hit_nothing.len() {
        0 => String::new(),
        n => format!(" ({n} more fired but hit nothing)"),
    };
    let _ = writeln!(
        md,
        "\nFaults fired: {} of {} planned{hit_nothing}.\n",
        rec.faults_fired.len(),
        rec.faults_planned
    );
}

/// Faults, processes, connections, ownership, holds, progress and the end, in time order.
fn timeline(md: &mut String, rec: &Judgement) {
    let mut rows: Vec<(u64, String)> = Vec::new();
    fault_rows(&mut rows, rec);
    incarnation_rows(&mut rows, rec);
    connection_rows(&mut rows, rec);
    ownership_rows(&mut rows, rec);
    for r in &rec.replies {
        rows.push((r.t_us, r.describe()));
    }
    end_rows(&mut rows, rec);
    // A stable sort: rows of one instant keep the order above.
    rows.sort_by_key(|(t, _)| *t);
    let _ = writeln!(md, "## Timeline\n");
    if rows.is_empty() {
        let _ = writeln!(md, "No faults, processes or end were recorded.\n");
        return;
    }
    let _ = writeln!(md, "| time | event |\n| ---: | --- |");
    for (t, what) in rows {
        let _ = writeln!(md, "| {} | {what} |", secs(t));
    }
    md.push('\n');
}

fn fault_rows(rows: &mut Vec<(u64, String)>, rec: &Judgement) {
    for f in &rec.faults {
        let what = if crate::judge::hit_nothing(f) {
            format!(
                "fault #{} {} {} fired but **hit nothing** (trigger `{}`; no consumer incarnation touched, not exercised): {}",
                f.fault,
                cell(&f.action),
                cell(&f.target),
                cell(&f.trigger),
                cell(&f.detail)
            )
        } else if f.applied {
            format!(
                "fault #{} **{} {}** fired (trigger `{}`, latency {}): {}",
                f.fault,
                cell(&f.action),
                cell(&f.target),
                cell(&f.trigger),
                latency(f.trigger_latency_us),
                cell(&f.detail)
            )
        } else {
            format!(
                "fault #{} {} {} matched but was **not applied** (trigger `{}`): {}",
                f.fault,
                cell(&f.action),
                cell(&f.target),
                cell(&f.trigger),
                cell(&f.detail)
            )
        };
        rows.push((f.fired_at_us, what));
    }
}

fn incarnation_rows(rows: &mut Vec<(u64, String)>, rec: &Judgement) {
    for i in &rec.incarnations {
        if let Some(t) = i.started_us {
            rows.push((
                t,
                format!(
                    "consumer[{}] incarnation {} started (pid {})",
                    i.instance, i.incarnation, i.pid
                ),
            ));
        }
        if let Some(t) = i.exited_us {
            rows.push((
                t,
                format!(
                    "consumer[{}] incarnation {} exited ({})",
                    i.instance,
                    i.incarnation,
                    cell(i.status.as_deref().unwrap_or("status unknown"))
                ),
            ));
        }
    }
}

fn connection_rows(rows: &mut Vec<(u64, String)>, rec: &Judgement) {
    for c in &rec.connections_closed {
        let who = format!("consumer[{}] incarnation {}", c.instance, c.incarnation);
        let what = match c.by {
            crate::timeline::ClosedBy::Broker => format!(
                "the broker closed {who}'s connection ({}); its {} unacknowledged message(s) go back to the queue",
                cell(&c.detail),
                c.unacked
            ),
            crate::timeline::ClosedBy::Severed => format!(
                "{who}'s connection reset by a `sever` fault; its {} unacknowledged message(s) go back to the queue",
                c.unacked
            ),
            crate::timeline::ClosedBy::Consumer => format!(
                "{who}'s end of its connection closed ({}); its {} unacknowledged message(s) go back to the queue",
                cell(&c.detail),
                c.unacked
            ),
        };
        rows.push((c.t_us, what));
    }
}

/// Ownership changes: the first ones in full, then a count (report.json has them all).
fn ownership_rows(rows: &mut Vec<(u64, String)>, rec: &Judgement) {
    const OWNERSHIP_ROWS: usize = 40;
    for o in rec.ownership.iter().take(OWNERSHIP_ROWS) {
        let what = match (o.owner, o.released) {
            (Some(p), _) => format!(
                "consumer[{}] incarnation {} now owns partitions {:?}",
                p.instance, p.incarnation, o.partitions
            ),
            (None, false) => format!("transient group member given partitions {:?}", o.partitions),
            (None, true) => format!(
                "transient group member gave back partitions {:?}",
                o.partitions
            ),
        };
        rows.push((o.t_us, what));
    }
    if rec.ownership.len() > OWNERSHIP_ROWS {
        let last = rec.ownership.last().map_or(0, |o| o.t_us);
        rows.push((
            last,
            format!(
                "… {} more ownership changes (report.json `ownership`)",
                rec.ownership.len() - OWNERSHIP_ROWS
            ),
        ));
    }
}

/// The proxy's holds, the last progress read and the end of the run.
fn end_rows(rows: &mut Vec<(u64, String)>, rec: &Judgement) {
    if rec.holds.count > 0 {
        let h = &rec.holds;
        rows.push((
            rec.ended_at_us.unwrap_or(0),
            format!(
                "the proxy held {} commit or ack frame(s) for triggers: p50 {}, p99 {}, longest {}; {} dropped (their consumer was being stopped)",
                h.count,
                latency(h.p50_us),
                latency(h.p99_us),
                latency(h.max_us),
                h.dropped
            ),
        ));
    }
    if rec.effect_holds.count > 0 {
        let h = &rec.effect_holds;
        rows.push((
            rec.ended_at_us.unwrap_or(0),
            format!(
                "the sink held its answer to {} effect(s) for `during: effect` faults, until the fault ended: longest {}; {} withheld (their consumer was being stopped)",
                h.count,
                latency(h.max_us),
                h.dropped
            ),
        ));
    }
    if let Some(p) = &rec.last_progress {
        let committed: Vec<String> = p
            .committed
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        rows.push((
            p.t_us,
            format!("last progress read: committed {}", committed.join(" ")),
        ));
    }
    match (rec.end_reason, rec.ended_at_us) {
        (Some(r), Some(t)) => rows.push((t, format!("run ended: {}", end_reason_str(r)))),
        (None, Some(t)) => rows.push((t, "last event (the run never ended)".to_string())),
        _ => {}
    }
}

fn anomalies(md: &mut String, rec: &Judgement) {
    if rec.anomalies.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Anomalies\n");
    for outcome in Outcome::ANOMALIES {
        let total = rec.anomalies_of(outcome).count();
        if total == 0 {
            continue;
        }
        let shown = total.min(SAMPLES_PER_OUTCOME);
        let _ = writeln!(
            md,
            "### {} ({total}{})\n",
            heading(outcome),
            if shown < total {
                format!(", showing {shown}")
            } else {
                String::new()
            }
        );
        let amqp = rec.run.as_ref().is_some_and(|r| r.broker == "amqp");
        let _ = writeln!(md, "{}\n", explain(outcome, amqp));
        for a in rec.anomalies_of(outcome).take(SAMPLES_PER_OUTCOME) {
            anomaly(md, rec, a);
        }
    }
}

fn heading(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Lost => "Lost",
        Outcome::Duplicated => "Duplicated",
        Outcome::UnconfirmedLoss => "Unconfirmed loss",
        Outcome::Pending => "Pending",
        Outcome::Unconfirmed => "Unconfirmed",
        Outcome::Phantom => "Phantom",
        Outcome::Diverted => "Diverted",
        Outcome::Exact => "Exact",
    }
}

fn explain(outcome: Outcome, amqp: bool) -> &'static str {
    match (outcome, amqp) {
        (Outcome::Lost, false) => {
            "Acknowledged by the broker, committed past by the group, and never applied."
        }
        (Outcome::Lost, true) => {
            "Confirmed by the broker, gone from the queue once the consumers stopped, and never applied."
        }
        (Outcome::Duplicated, _) => "Applied more than once.",
        (Outcome::UnconfirmedLoss, _) => {
            "The broker counts it done and no effect was read for it, but the oracle was blind (the sink rejected effects it could not read, or saw no effect of any produced message) or no consumer connection through the proxy was seen committing past it: not proven lost."
        }
        (Outcome::Pending, false) => {
            "Acknowledged, not applied, and not committed past when the run ended: no proof either way."
        }
        (Outcome::Pending, true) => {
            "Confirmed, not applied, and still in the queue when the run ended: no proof either way."
        }
        (Outcome::Unconfirmed, _) => {
            "The produce timed out and no effect was seen: it may never have been stored. Not judged for loss."
        }
        (Outcome::Phantom, _) => "Effects for IDs the workload never produced.",
        (Outcome::Diverted, false) => {
            "Acknowledged, never applied, and found in the plan's dead-letter topic after the run: the consumer diverted it. Neither lost nor effected."
        }
        (Outcome::Diverted, true) => {
            "Confirmed, never applied, and found in the plan's dead-letter queue after the run: the consumer rejected it there. Neither lost nor effected."
        }
        (Outcome::Exact, _) => "Applied once.",
    }
}

fn anomaly(md: &mut String, rec: &Judgement, a: &Anomaly) {
    let _ = writeln!(md, "#### {}\n", code(&a.id));
    if let Some(t) = a.produced_at_us {
        let place = match (a.partition, a.offset) {
            (Some(p), Some(o)) => format!("partition {p}, offset {o}"),
            (Some(p), None) => format!("partition {p}"),
            (None, Some(tag)) => format!("the queue (publish #{tag})"),
            (None, None) => "an unknown place".to_string(),
        };
        let committed = a
            .committed
            .map(|c| format!("; last committed offset of the partition: {c}"))
            .unwrap_or_default();
        let _ = writeln!(md, "- {}: produced to {place}{committed}", secs(t));
    }
    for e in &a.effects {
        let who = match (e.instance, e.incarnation) {
            (Some(i), Some(n)) => format!("consumer[{i}] incarnation {n}"),
            (Some(i), None) => format!("consumer[{i}]"),
            _ => "an unknown consumer".to_string(),
        };
        let how = match e.outcome {
            EffectOutcome::Applied => "applied",
            EffectOutcome::Replayed => "replayed (idempotent, no change)",
        };
        let witness = match (e.attribution.by, e.attribution.pid) {
            (Some(AttributedBy::Socket), Some(pid)) => format!(" (its socket, pid {pid})"),
            (Some(AttributedBy::Url), _) => " (by the URL it posted to)".to_string(),
            (Some(AttributedBy::Producer), _) => match &e.attribution.record {
                Some(r) => format!(
                    " (its Produce wrote {} partition {} offset {})",
                    code(&r.topic),
                    r.partition,
                    r.offset
                ),
                None => " (its Produce wrote the record)".to_string(),
            },
            (Some(AttributedBy::Unknown), _) => format!(
                " ({})",
                text(e.attribution.note.as_deref().unwrap_or("no witness"))
            ),
            _ => String::new(),
        };
        let row = e
            .attribution
            .row
            .as_deref()
            .map(row_text)
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "- {}: effect {how} by {who}{witness}{row}",
            secs(e.t_us)
        );
    }
    if let Some(c) = rec.commits_ahead.for_id(&a.id) {
        let _ = writeln!(
            md,
            "- {}: the broker accepted a commit or ack covering it from consumer[{}] incarnation {}, before any effect of it",
            secs(c.commit_t_us),
            c.instance,
            c.incarnation
        );
    }
    if a.effects.is_empty() {
        let _ = writeln!(md, "- no effect observed");
    }
    if let Some(m) = rec.mechanisms.of(&a.id) {
        let _ = writeln!(md, "- mechanism: {}", code(m.as_str()));
    }
    if rec.mechanisms.caused_by_harness(&a.id) {
        let _ = writeln!(
            md,
            "- caused by the harness's hold: the consumer sent the effect again while the harness held its answer; not counted against the consumer"
        );
    }
    let _ = writeln!(md, "- {}\n", nearest_fault(rec, a));
}

/// Lost and duplicated IDs grouped by how they happened and the fault before, each group with
/// its evidence and what to do about it; then the IDs of aborted transactions' records (what a
/// read_uncommitted reader downstream saw), in groups of their own.
fn root_causes(md: &mut String, rec: &Judgement) {
    let groups = &rec.mechanisms.groups;
    if groups.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Root cause\n");
    for g in groups {
        let after = match g.fault {
            Some(f) => {
                let planned = rec
                    .run
                    .as_ref()
                    .and_then(|r| r.planned_faults.get(f))
                    .map(|p| format!(" `{}`", p.replace('`', "'")))
                    .unwrap_or_default();
                format!(" after fault #{f}{planned}")
            }
            None => String::new(),
        };
        let _ = writeln!(
            md,
            "### {} — {} ID{}{after}\n",
            text(&g.title),
            g.count,
            if g.count == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            md,
            "Mechanism {}. **Recommendation:** {}\n",
            code(g.mechanism.as_str()),
            text(&g.recommendation)
        );
        for e in g.samples.iter().take(3) {
            let _ = writeln!(md, "{}:\n", code(&e.id));
            for fact in &e.evidence {
                let _ = writeln!(md, "- {}: {}", secs(fact.t_us), text(&fact.what));
            }
            md.push('\n');
        }
        if g.count > 3 {
            let shown: Vec<String> = g.samples.iter().skip(3).map(|e| code(&e.id)).collect();
            let more = g.count as usize - 3 - shown.len();
            let _ = writeln!(
                md,
                "Also: {}{}\n",
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more (report.json)")
                } else {
                    String::new()
                }
            );
        }
    }
}

/// Messages applied out of their key's produce order.
fn key_order(md: &mut String, rec: &Judgement) {
    let order = &rec.key_order;
    if order.count == 0 {
        if order.keys > 0 {
            let _ = writeln!(
                md,
                "## Per-key order\n\nEvery key's messages ({} keys) were first applied in produce order.\n",
                order.keys
            );
        }
        return;
    }
    let _ = writeln!(md, "## Per-key order: {} reordered\n", order.count);
    let _ = writeln!(
        md,
        "Messages of one key first applied out of produce order ({} keys checked). State built from these effects may be wrong even without loss or duplication. Keep one owner per key at a time (stop work on revoke, fence zombies) and apply in sequence, or make each effect carry its sequence so the receiver can reject stale ones.\n",
        order.keys
    );
    let _ = writeln!(
        md,
        "| key | applied first | applied later (produced earlier) | owner change |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- |");
    let who = |p: Option<crate::timeline::ProcessRef>| {
        p.map_or_else(
            || "unknown".to_string(),
            |p| format!("consumer[{}]#{}", p.instance, p.incarnation),
        )
    };
    for r in order.samples.iter().take(10) {
        let _ = writeln!(
            md,
            "| {} | {} (#{}) at {} by {} | {} (#{}) at {} by {} | {} |",
            code(&r.key),
            code(&r.later.id),
            r.later.key_seq,
            secs(r.later.t_us),
            who(r.later.by),
            code(&r.earlier.id),
            r.earlier.key_seq,
            secs(r.earlier.t_us),
            who(r.earlier.by),
            if r.ownership_changed { "yes" } else { "no" }
        );
    }
    md.push('\n');
}

/// Commits accepted before the effects they covered: the at-most-once window, shown even when
/// no crash landed in it.
fn commit_window(md: &mut String, rec: &Judgement) {
    let w = &rec.commits_ahead;
    if w.count == 0 {
        return;
    }
    let _ = writeln!(md, "## Commits and acks ahead of effects\n");
    let _ = writeln!(
        md,
        "The broker accepted commits or acks covering {} message{} before their effect was \
         observed. A crash in that window loses the message (at-most-once), whether or not this \
         run's faults hit it. Commit or ack after the effect, or make the effect and the \
         progress one transaction.\n",
        w.count,
        if w.count == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        md,
        "| message | partition/offset or tag | accepted at | by | effect at |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | --- | ---: |");
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for c in w.samples.iter().take(10) {
        let effect = c.effect_t_us.map(secs).unwrap_or_else(|| "never".into());
        let _ = writeln!(
            md,
            "| {} | {}/{} | {} | consumer[{}] incarnation {} | {effect} |",
            code(&c.id),
            dash(c.partition.map(|p| p.to_string())),
            dash(c.offset.map(|o| o.to_string())),
            secs(c.commit_t_us),
            c.instance,
            c.incarnation
        );
    }
    if w.count > 10 {
        let _ = writeln!(md, "\n({} more in report.json)", w.count - 10);
    }
    let _ = writeln!(md);
}

/// The fault that most plausibly explains the anomaly: for a duplicate, the last fault before
/// its second application; for an ID without effect, the first fault after it was produced;
/// for a phantom, the last fault before its first effect.
fn nearest_fault(rec: &Judgement, a: &Anomaly) -> String {
    let fired = || {
        rec.faults
            .iter()
            .filter(|f| f.applied && !crate::judge::hit_nothing(f))
    };
    let before = |t: u64| {
        fired()
            .filter(|f| f.fired_at_us <= t)
            .max_by_key(|f| f.fired_at_us)
    };
    let found: Option<(&str, &FaultRecord)> = match a.outcome {
        Outcome::Duplicated => a
            .effects
            .iter()
            .filter(|e| e.outcome == EffectOutcome::Applied)
            .nth(1)
            .and_then(|e| before(e.t_us))
            .map(|f| ("nearest preceding fault", f)),
        Outcome::Phantom => a
            .effects
            .first()
            .and_then(|e| before(e.t_us))
            .map(|f| ("nearest preceding fault", f)),
        _ => {
            let t = a.produced_at_us.unwrap_or(0);
            fired()
                .filter(|f| f.fired_at_us >= t)
                .min_by_key(|f| f.fired_at_us)
                .or_else(|| before(t))
                .map(|f| ("nearest fault", f))
        }
    };
    match found {
        Some((label, f)) => format!(
            "{label}: #{} {} {} at {}",
            f.fault,
            text(&f.action),
            text(&f.target),
            secs(f.fired_at_us)
        ),
        None => "no fault fired near it".to_string(),
    }
}

/// Why the run is inconclusive, then the caveats (shortfalls beside a proven anomaly, limits of
/// the promise), then what hides the claim when it is unknown.
fn reasons(md: &mut String, rec: &Judgement) {
    if !rec.inconclusive_reasons.is_empty() {
        let _ = writeln!(md, "## Why inconclusive\n");
        for r in &rec.inconclusive_reasons {
            let _ = writeln!(md, "- {}", text(&r.to_string()));
        }
        md.push('\n');
    }
    if !rec.caveats.is_empty() {
        let _ = writeln!(md, "## Caveats\n");
        let intro = match rec.verdict {
            Verdict::Exact => "The verdict stands for what was observed, but:",
            Verdict::Inconclusive => "Besides:",
            Verdict::Lost | Verdict::Duplicated | Verdict::LostAndDuplicated => {
                "These do not weaken the finding above (a proven anomaly stands on its own), but \
                 the run did not see or test everything it planned:"
            }
        };
        let _ = writeln!(md, "{intro}\n");
        for r in &rec.caveats {
            let _ = writeln!(md, "- {}", text(&r.to_string()));
        }
        md.push('\n');
    }
    if rec.verdict != Verdict::Inconclusive && !rec.expectation_unknown.is_empty() {
        let codes: Vec<String> = rec
            .expectation_unknown
            .iter()
            .map(|r| code(r.code()))
            .collect();
        let _ = writeln!(
            md,
            "The claim `{}` is therefore **unknown** (exit 3), not met: the evidence does not \
             cover what it forbids ({}).\n",
            text(rec.expect_str()),
            codes.join(", ")
        );
    }
}

/// Effects the sink could not read: the count, the rule, and the first bodies.
fn rejected(md: &mut String, rec: &Judgement) {
    if rec.counts.rejected == 0 {
        return;
    }
    let rule = rec
        .run
        .as_ref()
        .and_then(|r| r.effects_id.as_deref())
        .map_or_else(
            || "the plan's `effects.id` rule".to_string(),
            |r| format!("the `effects.id` rule {}", code(r)),
        );
    let _ = writeln!(
        md,
        "## Rejected effects\n\nThe sink could not read {} effect{} with {rule}; no message is called lost while effects went unread.\n",
        rec.counts.rejected,
        if rec.counts.rejected == 1 { "" } else { "s" }
    );
    for r in rec.rejected_samples.iter().take(3) {
        let _ = writeln!(
            md,
            "- {}: {}: {}",
            secs(r.t_us),
            text(&r.reason),
            code(&r.sample)
        );
    }
    md.push('\n');
}

fn warnings(md: &mut String, rec: &Judgement) {
    if !rec.warnings.is_empty() {
        let _ = writeln!(md, "## Warnings\n");
        for w in &rec.warnings {
            let _ = writeln!(md, "- {}", text(w));
        }
        md.push('\n');
    }
    if !rec.failed_samples.is_empty() {
        let _ = writeln!(
            md,
            "## Failed produces\n\n{} message{} could not be produced and {} not judged.\n",
            rec.counts.failed,
            if rec.counts.failed == 1 { "" } else { "s" },
            if rec.counts.failed == 1 { "is" } else { "are" }
        );
        for f in rec.failed_samples.iter().take(SAMPLES_PER_OUTCOME) {
            let _ = writeln!(
                md,
                "- {} at {}: {}",
                code(&f.id),
                secs(f.t_us),
                text(f.error.as_deref().unwrap_or("no error given"))
            );
        }
        md.push('\n');
    }
}

fn reproduce(md: &mut String, rec: &Judgement) {
    let Some(r) = &rec.run else {
        return;
    };
    let _ = writeln!(md, "## How to reproduce\n");
    let _ = writeln!(md, "```sh\n{}\n```\n", r.reproduce.replace("```", "'''"));
    let _ = writeln!(
        md,
        "Seed {}: the same seed replays the same fault schedule.",
        r.seed
    );
}

/// Inline code that survives backticks inside the text.
fn code(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

/// Plain text on one line, with Markdown's active characters at line start neutralised.
fn text(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text inside a table cell.
fn cell(s: &str) -> String {
    text(s).replace('|', "\\|")
}

/// `; row insert committed at LSN 0/16B3748 (2026-12-01T00:18:34Z, xid 1066), payload: {...}`
fn row_text(r: &crate::timeline::RowCommit) -> String {
    let mut out = format!(
        "; row {} committed at LSN {} ({}, xid {})",
        r.op, r.lsn, r.commit_time, r.xid
    );
    for (column, value) in &r.columns {
        let shown: String = value.to_string().chars().take(120).collect();
        out.push_str(&format!(", {column}: `{}`", shown.replace('`', "'")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::analyze;
    use crate::judge::fixtures::{duplicated_run, exact_never_counted_done, Tl};
    use crate::timeline::{EndReason, Event};

    #[test]
    fn duplicated_report_tells_the_incident() {
        let md = render(&analyze(&duplicated_run().events));
        assert!(
            md.starts_with("# kafka-commit-after-effect: run `r-20240101-0001`"),
            "{md}"
        );
        assert!(md.contains("Verdict: **DUPLICATED**"), "{md}");
        assert!(md.contains("Expectation: at-least-once: met"), "{md}");
        assert!(
            md.contains("1 of 4 messages was processed twice after the consumer was killed."),
            "{md}"
        );
        assert!(md.contains("| **duplicated** | 1 |"), "{md}");
        assert!(md.contains("| produced (acknowledged) | 4 |"), "{md}");
        assert!(!md.contains(MOCK_WARNING), "{md}");
    }

    #[test]
    fn timeline_is_chronological_with_faults_and_incarnations() {
        let md = render(&analyze(&duplicated_run().events));
        let section = md
            .split("## Timeline")
            .nth(1)
            .and_then(|s| s.split("## ").next())
            .expect("a timeline section");
        let started = section
            .find("incarnation 1 started (pid 4001)")
            .expect("start");
        let fault = section
            .find("fault #0 **kill consumer** fired")
            .expect("fault");
        let exited = section
            .find("incarnation 1 exited (signal SIGKILL)")
            .expect("exit");
        let ended = section.find("run ended: settled").expect("end");
        assert!(
            started < fault && fault < exited && exited < ended,
            "{section}"
        );
        assert!(section.contains("latency 150µs"), "{section}");
    }

    #[test]
    fn anomaly_sample_has_a_per_id_timeline_and_its_fault() {
        let md = render(&analyze(&duplicated_run().events));
        let section = md.split("#### `m-1`").nth(1).expect("m-1 sample");
        assert!(
            section.contains("produced to partition 0, offset 1"),
            "{section}"
        );
        assert!(
            section.contains("effect applied by consumer[0] incarnation 1"),
            "{section}"
        );
        assert!(
            section.contains("effect applied by consumer[0] incarnation 2"),
            "{section}"
        );
        assert!(
            section.contains("nearest preceding fault: #0 kill consumer at"),
            "{section}"
        );
    }

    #[test]
    fn lost_ids_name_the_first_fault_after_their_produce() {
        let mut tl = Tl::new();
        tl.start(&["kill: consumer"], 2, "at-least-once")
            .produced("a", 0, 0)
            .produced("b", 0, 1)
            .effect("a", 1)
            .fault(0, true)
            .progress(&[(0, 2)])
            .end(EndReason::Settled);
        let md = render(&analyze(&tl.events));
        assert!(md.contains("Verdict: **LOST**"), "{md}");
        assert!(md.contains("### Lost (1)"), "{md}");
        assert!(md.contains("#### `b`"), "{md}");
        assert!(md.contains("- no effect observed"), "{md}");
        assert!(
            md.contains("last committed offset of the partition: 2"),
            "{md}"
        );
        assert!(md.contains("nearest fault: #0 kill consumer"), "{md}");
        assert!(md.contains("Expectation: at-least-once: VIOLATED"), "{md}");
    }

    #[test]
    fn samples_are_capped_per_outcome() {
        let mut tl = Tl::new();
        tl.start(&["kill: consumer"], 15, "at-least-once")
            .fault(0, true);
        for i in 0..15 {
            tl.produced(&format!("p{i}"), 0, i);
        }
        // A witness with an effect: the sink saw the consumer's work, so losses are proven.
        tl.produced("w", 1, 0).effect("w", 1);
        tl.progress(&[(0, 15), (1, 1)]).end(EndReason::Settled);
        let md = render(&analyze(&tl.events));
        assert!(md.contains("### Lost (15, showing 10)"), "{md}");
        assert_eq!(md.matches("#### `p").count(), 10);
    }

    #[test]
    fn inconclusive_report_says_why() {
        let mut tl = Tl::new();
        tl.start(&["kill: consumer when {before: commit}"], 1, "exactly-once")
            .produced("a", 0, 0)
            .effect("a", 1)
            .fault(0, false)
            .progress(&[(0, 1)])
            .end(EndReason::Settled);
        let md = render(&analyze(&tl.events));
        assert!(md.contains("Verdict: **INCONCLUSIVE**"), "{md}");
        assert!(md.contains("## Why inconclusive"), "{md}");
        assert!(
            md.contains("- 1 planned fault never fired: #0 kill: consumer"),
            "{md}"
        );
        assert!(md.contains("matched but was **not applied**"), "{md}");
        assert!(md.contains("not judged (inconclusive)"), "{md}");
    }

    /// Every effect rejected by the sink (the default payload read with `json:/order_id`).
    fn blind_run() -> Judgement {
        let mut tl = Tl::new();
        tl.start(&["kill: consumer"], 2, "at-least-once")
            .produced("a", 0, 0)
            .produced("b", 0, 1)
            .fault(0, true);
        for id in ["a", "b"] {
            tl.push(Event::EffectRejected {
                boundary: None,
                reason: "no message ID found by the `effects.id` rule".into(),
                sample: format!(r#"{{"id":"{id}"}}"#),
            });
        }
        tl.progress(&[(0, 2)]).end(EndReason::Settled);
        analyze(&tl.events)
    }

    #[test]
    fn rejected_effects_are_shown_with_the_rule_and_a_body() {
        let md = render(&blind_run());
        assert!(md.contains("Verdict: **INCONCLUSIVE**"), "{md}");
        assert!(md.contains("### Unconfirmed loss (2)"), "{md}");
        assert!(
            md.contains("| unconfirmed loss (counted done, no readable effect) | 2 |"),
            "{md}"
        );
        assert!(!md.contains("### Lost"), "{md}");
        let why = md
            .split("## Why inconclusive")
            .nth(1)
            .expect("a why section");
        assert!(why.contains("the sink rejected 2 effects"), "{why}");
        assert!(why.contains("`json:/order_id`"), "{why}");
        let section = md.split("## Rejected effects").nth(1).expect("a section");
        assert!(
            section.contains("the `effects.id` rule `json:/order_id`"),
            "{section}"
        );
        assert!(section.contains(r#"`{"id":"a"}`"#), "{section}");
    }

    #[test]
    fn exact_with_work_never_counted_done_has_caveats_and_an_unknown_claim() {
        let tl = exact_never_counted_done();
        let md = render(&analyze(&tl.events));
        assert!(md.contains("Verdict: **EXACT**"), "{md}");
        assert!(
            md.contains("Expectation: exactly-once: UNKNOWN, not met (the evidence does not cover it: not_counted_done)"),
            "{md}"
        );
        assert!(
            md.contains("but the broker never counted 1 of them done"),
            "{md}"
        );
        let caveats = md.split("## Caveats").nth(1).expect("caveats");
        assert!(
            caveats.contains("The verdict stands for what was observed"),
            "{caveats}"
        );
        assert!(caveats.contains("never committed"), "{caveats}");
        assert!(
            caveats.contains("is therefore **unknown** (exit 3)"),
            "{caveats}"
        );
    }

    #[test]
    fn a_fault_that_hit_nothing_says_so_on_the_timeline() {
        let mut tl = Tl::new();
        tl.start(&["kill: consumer"], 1, "at-least-once")
            .produced("a", 0, 0)
            .fault(0, true);
        if let Some(Event::Fault(f)) = tl.events.last_mut().map(|e| &mut e.event) {
            f.hit.clear();
        }
        tl.effect("a", 1)
            .progress(&[(0, 1)])
            .end(EndReason::Settled);
        let md = render(&analyze(&tl.events));
        assert!(md.contains("fired but **hit nothing**"), "{md}");
        assert!(
            md.contains("Faults fired: 0 of 1 planned (1 more fired but hit nothing)."),
            "{md}"
        );
        assert!(md.contains("1 planned fault fired but hit nothing"), "{md}");
    }

    #[test]
    fn mock_broker_warning_is_loud() {
        let mut events = duplicated_run().events;
        if let Event::RunStarted(info) = &mut events[0].event {
            info.mock_broker = true;
        }
        let md = render(&analyze(&events));
        assert!(
            md.contains(
                "> **Warning: embedded mock cluster: a demo, not evidence about a real broker.**"
            ),
            "{md}"
        );
    }

    #[test]
    fn reproduce_section_has_the_command_and_seed() {
        let mut tl = duplicated_run();
        tl.warning("hold of 900ms nears request.timeout.ms");
        let md = render(&analyze(&tl.events));
        assert!(
            md.contains("## Warnings\n\n- hold of 900ms nears request.timeout.ms"),
            "{md}"
        );
        assert!(
            md.contains("```sh\nexactly run plans/kafka-commit-after-effect.yaml --seed 42\n```")
        );
        assert!(md.contains("Seed 42"), "{md}");
    }

    #[test]
    fn hostile_ids_do_not_break_the_layout() {
        assert_eq!(code("a`b"), "`` a`b ``");
        assert_eq!(cell("x|y\nz"), "x\\|y z");
        assert_eq!(text("<script>"), "&lt;script&gt;");
    }

    #[test]
    fn no_ack_consumer_is_called_out() {
        let mut tl = duplicated_run();
        tl.push(Event::ConsumerSettings {
            instance: 0,
            incarnation: 1,
            no_ack: true,
            prefetch: Some(50),
            heartbeat_s: None,
        });
        let md = render(&analyze(&tl.events));
        assert!(md.contains("**This consumer runs in no-ack mode**"), "{md}");
        assert!(md.contains("basic.qos): 50"), "{md}");
    }

    #[test]
    fn empty_timeline_renders_without_panicking() {
        let md = render(&analyze(&[]));
        assert!(md.contains("unknown run"));
        assert!(md.contains("INCONCLUSIVE"));
    }
}
