use super::*;
use crate::timeline::read::Lines;
use crate::timeline::{OffsetRange, ProduceStatus, SharedIds};

/// The columns of `events` as the reader's threads make a block's.
fn block(events: &[Stamped], ids: &SharedIds) -> Columns {
    let mut b = Columns::for_block(ids);
    events.iter().for_each(|st| b.event(st.clone()));
    b.end();
    b.columns
}

fn at(seq: u64, event: Event) -> Stamped {
    Stamped {
        seq,
        t_us: seq * 10,
        event,
    }
}

fn produced(id: &str, offset: i64) -> Event {
    Event::Produced {
        id: id.into(),
        seq: 1,
        key: None,
        partition: Some(0),
        offset: Some(offset),
        status: ProduceStatus::Acked,
        error: None,
        poison: false,
    }
}

/// One event of each column, with and without their optional and rare fields, and others
/// between them.
fn mixed() -> Vec<Stamped> {
    vec![
        at(
            0,
            Event::Warning {
                message: "w".into(),
            },
        ),
        at(1, produced("a", 0)),
        at(
            2,
            Event::Produced {
                id: "b".into(),
                seq: 7,
                key: Some("k".into()),
                partition: None,
                offset: None,
                status: ProduceStatus::Failed,
                error: Some("refused".into()),
                poison: true,
            },
        ),
        at(
            3,
            Event::Effect {
                id: "a".into(),
                instance: Some(0),
                incarnation: Some(2),
                outcome: EffectOutcome::Applied,
                sink: SinkKind::Http,
                boundary: None,
                attribution: Attribution {
                    by: Some(AttributedBy::Socket),
                    pid: Some(42),
                    ..Attribution::default()
                },
            },
        ),
        at(
            4,
            Event::Effect {
                id: "phantom".into(),
                instance: None,
                incarnation: None,
                outcome: EffectOutcome::Replayed,
                sink: SinkKind::File,
                boundary: Some("mail".into()),
                attribution: Attribution {
                    note: Some("why".into()),
                    ..Attribution::default()
                },
            },
        ),
        at(
            5,
            Event::Delivered {
                id: "a".into(),
                instance: 1,
                incarnation: 1,
                partition: None,
                offset: Some(9),
                redelivered: true,
            },
        ),
        at(
            6,
            Event::Delivered {
                id: "b".into(),
                instance: 1,
                incarnation: 1,
                partition: Some(3),
                offset: None,
                redelivered: false,
            },
        ),
        at(
            7,
            Event::DeliveredBatch {
                instance: 0,
                incarnation: 1,
                partition: 0,
                ranges: Vec::new(),
                records: [(0, "a"), (1, "x")].into_iter().collect(),
            },
        ),
        at(
            8,
            Event::Produced {
                id: "b".into(),
                seq: u64::MAX,
                key: None,
                partition: Some(1),
                offset: Some(0),
                status: ProduceStatus::Indeterminate,
                error: None,
                poison: false,
            },
        ),
        at(
            9,
            Event::Warning {
                message: "end".into(),
            },
        ),
    ]
}

#[test]
fn events_put_in_columns_come_back_as_they_were_in_timeline_order() {
    let events = mixed();
    let recorded = Recorded::from_events(&events);
    assert_eq!(recorded.to_events(), events);
    assert_eq!(recorded.others().len(), 2);
    assert_eq!((recorded.produced_len(), recorded.effects_len()), (3, 2));
}

#[test]
fn every_id_of_any_column_is_numbered_once() {
    let recorded = Recorded::from_events(&mixed());
    let ids = recorded.ids();
    let mut texts: Vec<&str> = ids.numbers().map(|n| ids.text(n)).collect();
    texts.sort();
    assert_eq!(texts, ["a", "b", "phantom", "x"]);
    let effect_nos: Vec<MessageNo> = recorded.effects().map(|e| e.no).collect();
    assert_eq!(
        effect_nos,
        [ids.get("a").unwrap(), ids.get("phantom").unwrap()]
    );
}

#[test]
fn a_boundary_view_keeps_the_effects_it_accepts_with_their_rare_fields() {
    let recorded = Recorded::from_events(&mixed());
    let view = recorded.with(|e| e.boundary == Some("mail"), Vec::new());
    let effects: Vec<Effect> = view.effects().collect();
    assert_eq!(effects.len(), 1);
    assert_eq!((effects[0].id(), effects[0].note), ("phantom", Some("why")));
    assert_eq!(view.produced_len(), 3);
    assert!(view.others().is_empty());
}

#[test]
fn ranges_resolve_in_front_of_the_records_read_and_an_unnamed_offset_fails() {
    let batch = |ranges: Vec<OffsetRange>| {
        at(
            9,
            Event::DeliveredBatch {
                instance: 0,
                incarnation: 1,
                partition: 0,
                ranges,
                records: [(5, "read")].into_iter().collect(),
            },
        )
    };
    let mut b = RecordedBuilder::default();
    (0..3).for_each(|o| b.push(at(o as u64, produced(&format!("m{o}"), o))));
    b.push(batch(vec![OffsetRange { first: 1, last: 2 }]));
    let recorded = b.finish().unwrap();
    let ids = recorded.ids();
    let records: Vec<(i64, &str)> = recorded
        .delivered_records()
        .map(|(_, r)| (r.offset, ids.text(r.id)))
        .collect();
    assert_eq!(records, [(1, "m1"), (2, "m2"), (5, "read")]);

    let mut b = RecordedBuilder::default();
    b.push(at(0, produced("m0", 0)));
    b.push(batch(vec![OffsetRange { first: 0, last: 1 }]));
    let err = b.finish().unwrap_err();
    assert_eq!(err.count, 2);
}

#[test]
fn a_file_read_in_blocks_on_several_threads_gives_the_columns_one_thread_gives() {
    let events: Vec<Stamped> = (0..50)
        .flat_map(|_| mixed())
        .enumerate()
        .map(|(i, mut st)| {
            st.seq = i as u64;
            st
        })
        .collect();
    let ids = SharedIds::default();
    let mut columns = Columns::default();
    for chunk in events.chunks(7) {
        columns.append(block(chunk, &ids));
    }
    let recorded = columns.finish(ids.into_ids()).unwrap();
    assert_eq!(recorded.to_events(), events);
    assert_eq!(
        recorded.to_events(),
        Recorded::from_events(&events).to_events()
    );
}

#[test]
fn rows_stay_small() {
    assert!(std::mem::size_of::<ProducedRow>() <= 40);
    assert!(std::mem::size_of::<EffectRow>() <= 40);
    assert!(std::mem::size_of::<DeliveredRecord>() <= 16);
}

#[test]
fn ranges_in_a_later_block_resolve_from_produces_in_an_earlier_one() {
    let mut events: Vec<Stamped> = (0..4)
        .map(|o| at(o, produced(&format!("m{o}"), o as i64)))
        .collect();
    events.push(at(
        4,
        Event::DeliveredBatch {
            instance: 0,
            incarnation: 1,
            partition: 0,
            ranges: vec![OffsetRange { first: 1, last: 3 }],
            records: DeliveredIds::default(),
        },
    ));
    let ids = SharedIds::default();
    let mut columns = Columns::default();
    columns.append(block(&events[..2], &ids));
    columns.append(block(&events[2..], &ids));
    let recorded = columns.finish(ids.into_ids()).unwrap();
    let ids = recorded.ids();
    let records: Vec<(i64, &str)> = recorded
        .delivered_records()
        .map(|(_, r)| (r.offset, ids.text(r.id)))
        .collect();
    assert_eq!(records, [(1, "m1"), (2, "m2"), (3, "m3")]);
}
