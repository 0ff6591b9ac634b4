//! The postgres sink: the consumer's effects are rows it writes into a real PostgreSQL table,
//! observed where they land through logical replication, never by polling the table. For the
//! run the sink creates a publication of the table, a writer trigger (see [`writer`]) and a
//! TEMPORARY logical replication slot (pgoutput) on its own replication session; every row
//! inserted or updated by a committed transaction is then one effect, recorded when its commit
//! is seen, with the commit's LSN and time. A rolled-back transaction never reaches the stream
//! (pgoutput sends committed transactions only), so it is never an effect; a row updated or
//! deleted later stays counted. An update whose old row (REPLICA IDENTITY FULL) equals its new
//! one changed nothing: it is recorded as `replayed`, the idempotent provider's replay.
//!
//! `after: effect` fires when the committed row is seen (the consumer has moved on by then:
//! nothing here holds its write). `during: effect` is refused at validation.
//!
//! At the end the sink waits for a barrier (a non-transactional logical message it emits) to
//! come back through the stream, so every transaction committed before the stop is read, then
//! drops the trigger and the publication; the slot goes with its session.

pub mod pgoutput;
pub mod url;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::owner::SocketOwners;
use super::EffectRecorder;
use crate::error::InfraError;
use crate::plan::PostgresSpec;
use crate::timeline::{Event, RowCommit};
use pgoutput::{Datum, Message, Relation};
pub use url::DbUrl;
use writer::Backend;

/// How long connecting (and each setup step) may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// How long the end-of-run barrier may take to come back through the stream.
const BARRIER_DEADLINE: Duration = Duration::from_secs(5);
/// The prefix of the end-of-run barrier message.
const BARRIER_PREFIX: &str = "exactly.barrier";

/// A running postgres sink.
pub struct PostgresSink {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

/// What the replication task needs.
struct Watch {
    client: Client,
    repl: ReplicationClient,
    recorder: EffectRecorder,
    owners: SocketOwners,
    /// The table's schema-less name and the plan's extra columns.
    table: String,
    columns: Vec<String>,
    /// The name of the run's publication, slot and trigger.
    name: String,
    /// The table as the plan wrote it (for the trigger's DROP).
    table_sql: String,
    /// `postgres.offsets` with the run's group and topic in it: read once the stream is read.
    offsets_query: Option<String>,
}

impl PostgresSink {
    /// Connects to the plan's database, sets up the publication, the writer trigger and the
    /// temporary slot, and starts reading the stream. Fails (exit 4) within seconds when the
    /// database cannot be reached, naming the URL with its password hidden.
    /// `(run_id, group, topic)` name the run and fill `postgres.offsets`'s placeholders.
    pub async fn start(
        spec: &PostgresSpec,
        (run_id, group, topic): (&str, &str, &str),
        recorder: EffectRecorder,
        owners: SocketOwners,
    ) -> Result<PostgresSink, InfraError> {
        let url =
            DbUrl::parse(&spec.url).map_err(|e| InfraError::new(format!("postgres sink: {e}")))?;
        let fail = |what: &str, e: String| {
            InfraError::new(format!(
                "postgres sink: {what} on {url}: {e} (is the database running? `scripts/brokers start postgres` starts the local one)"
            ))
        };
        let client = connect(&url).await.map_err(|e| fail("cannot connect", e))?;
        let name = slot_name(run_id);
        setup(&client, spec, &name, &recorder)
            .await
            .map_err(|e| fail("cannot set up the table's publication", e))?;
        let repl = match replication(&url, &name).await {
            Ok(r) => r,
            Err(e) => {
                teardown(&client, &name, &spec.table).await;
                return Err(fail("cannot start logical replication", e));
            }
        };
        let table = spec
            .table
            .rsplit('.')
            .next()
            .unwrap_or(&spec.table)
            .to_owned();
        let watch = Watch {
            client,
            repl,
            recorder,
            owners,
            table,
            columns: spec.columns.clone(),
            name,
            table_sql: spec.table.clone(),
            offsets_query: spec.offsets.as_ref().map(|q| {
                q.replace("{group}", &sql_literal(group))
                    .replace("{topic}", &sql_literal(topic))
            }),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch.run(stop.clone()));
        Ok(PostgresSink { task, stop })
    }

    /// Reads what was committed up to now, then stops and cleans up (bounded).
    pub async fn stop(self) {
        self.stop.cancel();
        let abort = self.task.abort_handle();
        let deadline = BARRIER_DEADLINE + CONNECT_DEADLINE;
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            abort.abort();
        }
    }
}

/// `exactly_<run>` in the characters slot names allow, at most 63 of them.
fn slot_name(run_id: &str) -> String {
    let clean: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("exactly_{clean}");
    // keep the end (the run's timestamp and random suffix make it unique)
    if name.len() > 63 {
        name = format!("exactly_{}", &clean[clean.len() - 55..]);
    }
    name
}

async fn connect(url: &DbUrl) -> Result<Client, String> {
    let mut config = url.config.clone();
    config.connect_timeout(CONNECT_DEADLINE);
    let (client, connection) = tokio::time::timeout(CONNECT_DEADLINE, config.connect(NoTls))
        .await
        .map_err(|_| format!("no answer within {CONNECT_DEADLINE:?}"))?
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

/// The advisory lock key under which exactly runs a plan's setup SQL (any constant no other
/// program is likely to use: "exactly" in ASCII).
const SETUP_LOCK: i64 = 0x65_7861_6374_6c79;

/// The plan's setup SQL, a check of the table, the publication and the writer trigger.
async fn setup(
    client: &Client,
    spec: &PostgresSpec,
    name: &str,
    recorder: &EffectRecorder,
) -> Result<(), String> {
    let step = |sql: String| async move {
        tokio::time::timeout(CONNECT_DEADLINE, client.batch_execute(&sql))
            .await
            .map_err(|_| format!("no answer within {CONNECT_DEADLINE:?} to: {sql}"))?
            .map_err(|e| db_error(&e))
    };
    if let Some(sql) = &spec.setup {
        // Runs that share a database (parallel CI jobs) take turns: two concurrent
        // `CREATE TABLE IF NOT EXISTS` of one name can both miss it and one then fails.
        step(format!("SELECT pg_advisory_lock({SETUP_LOCK})")).await?;
        let ran = step(sql.clone()).await;
        step(format!("SELECT pg_advisory_unlock({SETUP_LOCK})")).await?;
        ran.map_err(|e| format!("the plan's setup SQL failed: {e}"))?;
    }
    let table = &spec.table;
    let identity = client
        .query_opt(
            "SELECT relreplident::text, EXISTS (SELECT 1 FROM pg_index WHERE indrelid = c.oid \
             AND indisprimary) FROM pg_class c WHERE oid = to_regclass($1)",
            &[table],
        )
        .await
        .map_err(|e| db_error(&e))?
        .ok_or_else(|| {
            format!("no table `{table}`: create it first, or give `effects.postgres.setup`")
        })?;
    let (identity, primary_key): (String, bool) = (identity.get(0), identity.get(1));
    let publish = match (identity.as_str(), primary_key) {
        ("f", _) => "insert, update, delete",
        ("d", true) | ("i", _) => {
            recorder.warn(format!(
                "postgres sink: `{table}` has no REPLICA IDENTITY FULL, so an update is counted \
                 as an applied effect even when it changed nothing (`ALTER TABLE {table} \
                 REPLICA IDENTITY FULL` lets the sink report such updates as replayed)"
            ));
            "insert, update, delete"
        }
        _ => {
            // Publishing updates of a table without a replica identity makes every UPDATE
            // and DELETE on it fail: the consumer's own writes would break.
            recorder.warn(format!(
                "postgres sink: `{table}` has no replica identity (no primary key, no REPLICA \
                 IDENTITY FULL), so only its inserts are watched: an update of an existing row \
                 is NOT seen, and a consumer that re-applies work by updating rows can look \
                 exact when it is not (publishing updates would make its UPDATEs fail). Give it \
                 a primary key or REPLICA IDENTITY FULL"
            ));
            "insert"
        }
    };
    step(format!(
        "CREATE PUBLICATION {name} FOR TABLE {table} WITH (publish = '{publish}')"
    ))
    .await?;
    if let Err(e) = step(writer::install_sql(name, table)).await {
        recorder.warn(format!(
            "postgres sink: writers are not attributed: the writer trigger could not be \
             installed on `{table}`: {e}"
        ));
    }
    Ok(())
}

/// A database error with its server message (tokio-postgres's Display says only "db error").
fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// Removes what [`setup`] made (best effort, bounded).
async fn teardown(client: &Client, name: &str, table: &str) {
    let sql = format!(
        "{} DROP PUBLICATION IF EXISTS {name};",
        writer::drop_sql(name, table)
    );
    let _ = tokio::time::timeout(CONNECT_DEADLINE, client.batch_execute(&sql)).await;
}

/// A replication session with the run's temporary slot, streaming.
async fn replication(url: &DbUrl, name: &str) -> Result<ReplicationClient, String> {
    let (host, port) = url.host_port();
    let (user, password, db) = url.credentials();
    let config = ReplicationConfig::new(host, user, password, db, name, name)
        .with_port(port)
        .with_start_lsn(Lsn(0))
        .with_application_name("exactly-sink");
    let start = async {
        let mut repl = ReplicationClient::connect_gated(config)
            .await
            .map_err(|e| e.to_string())?;
        repl.simple_query(&format!(
            "CREATE_REPLICATION_SLOT {name} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT"
        ))
        .await
        .map_err(|e| e.to_string())?;
        repl.start().await.map_err(|e| e.to_string())?;
        repl.wait_started().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(repl)
    };
    tokio::time::timeout(CONNECT_DEADLINE, start)
        .await
        .map_err(|_| format!("no answer within {CONNECT_DEADLINE:?}"))?
}

/// One row change of the open transaction.
struct Change {
    op: &'static str,
    row: serde_json::Map<String, serde_json::Value>,
    unchanged: bool,
}

/// The transaction being read: its changes of the watched table and its writer.
#[derive(Default)]
struct Transaction {
    xid: u32,
    changes: Vec<Change>,
    writer: Option<Backend>,
}

impl Watch {
    async fn run(mut self, stop: CancellationToken) {
        let mut relations: HashMap<u32, Relation> = HashMap::new();
        let mut txn = Transaction::default();
        let mut deletes = 0u64;
        let mut barrier: Option<tokio::time::Instant> = None;
        loop {
            let event = tokio::select! {
                e = self.repl.recv() => e,
                _ = stop.cancelled(), if barrier.is_none() => {
                    barrier = Some(tokio::time::Instant::now() + BARRIER_DEADLINE);
                    self.emit_barrier().await;
                    continue;
                }
                _ = sleep_until(barrier) => {
                    self.blind(format!(
                        "the end-of-run barrier did not come back through the replication \
                         stream within {BARRIER_DEADLINE:?}: rows committed just before the end \
                         may be missing"
                    ));
                    break;
                }
            };
            let event = match event {
                Ok(Some(e)) => e,
                Ok(None) => {
                    if barrier.is_none() {
                        self.blind(
                            "the replication stream ended before the run did: rows \
                                    committed after it were not seen"
                                .into(),
                        );
                    }
                    break;
                }
                Err(e) => {
                    self.blind(format!(
                        "the replication stream ended: {e}; rows committed after it were not seen"
                    ));
                    break;
                }
            };
            match event {
                ReplicationEvent::Begin { xid, .. } => {
                    txn = Transaction {
                        xid,
                        ..Transaction::default()
                    };
                }
                ReplicationEvent::XLogData { data, .. } => {
                    self.change(&data, &mut relations, &mut txn, &mut deletes);
                }
                ReplicationEvent::Message {
                    prefix, content, ..
                } => {
                    if prefix == writer::MESSAGE_PREFIX {
                        txn.writer = Backend::parse(&String::from_utf8_lossy(&content));
                    } else if prefix == BARRIER_PREFIX && content.as_ref() == self.name.as_bytes() {
                        break;
                    }
                }
                ReplicationEvent::Commit {
                    lsn,
                    commit_time_micros,
                    ..
                } => {
                    let txn = std::mem::take(&mut txn);
                    self.commit(txn, lsn, commit_time_micros).await;
                }
                ReplicationEvent::KeepAlive { .. } | ReplicationEvent::StoppedAt { .. } => {}
            }
        }
        if deletes > 0 {
            self.recorder.warn(format!(
                "postgres sink: {deletes} row(s) of `{}` were deleted during the run; the \
                 inserts and updates before them stay counted",
                self.table
            ));
        }
        let _ = tokio::time::timeout(CONNECT_DEADLINE, self.repl.shutdown()).await;
        if let Some(query) = &self.offsets_query {
            self.read_stored_offsets(query).await;
        }
        teardown(&self.client, &self.name, &self.table_sql).await;
    }

    /// Reads the offsets the consumer stored with its data (`postgres.offsets`) and records
    /// them for the judge; a query that fails is a warning, and the judge keeps the group's
    /// committed offsets.
    async fn read_stored_offsets(&self, query: &str) {
        let rows = tokio::time::timeout(CONNECT_DEADLINE, self.client.query(query, &[])).await;
        let rows = match rows {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return self.offsets_unread(&db_error(&e)),
            Err(_) => return self.offsets_unread(&format!("no answer in {CONNECT_DEADLINE:?}")),
        };
        let mut committed = BTreeMap::new();
        for row in &rows {
            match (integer(row, 0), integer(row, 1)) {
                (Some(partition), Some(next)) => {
                    let partition = i32::try_from(partition).unwrap_or(i32::MAX);
                    committed.insert(partition, next);
                }
                _ => {
                    return self.offsets_unread(
                        "each row must be (partition, next offset), two integer columns",
                    )
                }
            }
        }
        self.recorder.note(Event::StoredOffsets {
            source: format!("postgres `{}`: {query}", self.table_sql),
            committed,
        });
    }

    fn offsets_unread(&self, why: &str) {
        self.recorder.warn(format!(
            "postgres sink: the stored offsets (`postgres.offsets`) could not be read: {why}; \
             work is counted done by the group's committed offsets instead"
        ));
    }

    /// The sink could not read every committed row: recorded as effects it could not read, so
    /// the judge treats the oracle as blind (no loss is claimed on missing evidence).
    fn blind(&self, reason: String) {
        self.recorder
            .reject(format!("postgres sink: {reason}"), self.table.as_bytes());
    }

    /// Decodes one row message into the open transaction.
    fn change(
        &self,
        data: &[u8],
        relations: &mut HashMap<u32, Relation>,
        txn: &mut Transaction,
        deletes: &mut u64,
    ) {
        let message = match pgoutput::decode(data) {
            Ok(m) => m,
            Err(e) => {
                self.recorder.reject(e.to_string(), data);
                return;
            }
        };
        let ours = |id: u32| relations.get(&id).filter(|r| r.name == self.table);
        match message {
            Message::Relation(r) => {
                relations.insert(r.id, r);
            }
            Message::Insert { relation, new } => {
                if let Some(r) = ours(relation) {
                    let row = pgoutput::row_json(r, &new);
                    txn.changes.push(Change {
                        op: "insert",
                        row,
                        unchanged: false,
                    });
                }
            }
            Message::Update { relation, old, new } => {
                if let Some(r) = ours(relation) {
                    let unchanged = old.as_ref().is_some_and(|o| same_row(o, &new));
                    let row = pgoutput::row_json(r, &new);
                    txn.changes.push(Change {
                        op: "update",
                        row,
                        unchanged,
                    });
                }
            }
            Message::Delete { relation } => {
                if ours(relation).is_some() {
                    *deletes += 1;
                }
            }
            Message::Other(_) => {}
        }
    }

    /// Records a committed transaction's changes, each one effect.
    async fn commit(&self, txn: Transaction, lsn: Lsn, commit_time_micros: i64) {
        if txn.changes.is_empty() {
            return;
        }
        let (who, attribution) = writer::attribute(&self.owners, txn.writer).await;
        let commit_time = pg_time(commit_time_micros);
        for change in txn.changes {
            let columns = self
                .columns
                .iter()
                .filter_map(|c| change.row.get(c).map(|v| (c.clone(), v.clone())))
                .collect();
            let mut attribution = attribution.clone();
            attribution.row = Some(Box::new(RowCommit {
                op: change.op.into(),
                lsn: lsn.to_pg_string(),
                commit_time: commit_time.clone(),
                xid: txn.xid,
                columns,
            }));
            let body = serde_json::Value::Object(change.row).to_string();
            self.recorder
                .record_row(&body, change.unchanged, who, attribution);
        }
    }

    /// Emits the end-of-run barrier; when it cannot, the stream is read until its deadline.
    async fn emit_barrier(&self) {
        let sql = "SELECT pg_logical_emit_message(false, $1, $2)::text";
        let emitted = tokio::time::timeout(
            CONNECT_DEADLINE,
            self.client.query_one(sql, &[&BARRIER_PREFIX, &self.name]),
        )
        .await;
        if !matches!(emitted, Ok(Ok(_))) {
            self.recorder.warn(
                "postgres sink: could not emit the end-of-run barrier; reading the stream until \
                 its deadline"
                    .into(),
            );
        }
    }
}

/// Same values in every column both rows carry (an unchanged TOAST value matches anything).
fn same_row(old: &[Datum], new: &[Datum]) -> bool {
    old.len() == new.len()
        && old
            .iter()
            .zip(new)
            .all(|(a, b)| a == b || matches!(a, Datum::Unchanged) || matches!(b, Datum::Unchanged))
}

/// `text` as an SQL string literal (quotes doubled).
fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Column `i` of `row` as an integer, whichever integer type it has.
fn integer(row: &tokio_postgres::Row, i: usize) -> Option<i64> {
    row.try_get::<_, i64>(i)
        .ok()
        .or_else(|| row.try_get::<_, i32>(i).ok().map(i64::from))
        .or_else(|| row.try_get::<_, i16>(i).ok().map(i64::from))
}

/// A pgoutput time (microseconds since 2000-01-01 UTC) in RFC 3339.
fn pg_time(micros: i64) -> String {
    const PG_EPOCH_UNIX_MICROS: i128 = 946_684_800_000_000;
    let nanos = (i128::from(micros) + PG_EPOCH_UNIX_MICROS) * 1000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| micros.to_string())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_postgres() {
        let name = slot_name("Postgres-Dedup-20261201T000000-ab12");
        assert_eq!(name, "exactly_postgres_dedup_20261201t000000_ab12");
        assert!(slot_name(&"x".repeat(200)).len() <= 63);
        assert_eq!(pg_time(0), "2000-01-01T00:00:00Z");
    }
}
