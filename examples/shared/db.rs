//! The example consumers' database writes (`--mode db-then-commit|commit-then-db|dedup-table|
//! offsets-in-db` and the AMQP dedup variant), through tokio-postgres on a small runtime of
//! their own so the consumers' loops stay synchronous. The database URL comes from
//! `DATABASE_URL` (a plan sets it in `consumer.env`); every row goes to `EXACTLY_DB_TABLE`
//! (default `orders`) as (message_id, payload), where the postgres sink sees it. Included by
//! each example with `#[path]`; not an example of its own.

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

/// One consumer process's database connection.
pub struct Db {
    rt: Runtime,
    client: Client,
    table: String,
}

/// What a deduplicated write did.
#[derive(Debug, PartialEq)]
pub enum Written {
    /// The row was written (first time this ID was seen).
    Applied,
    /// The dedup table already had the ID: nothing written.
    Skipped,
}

impl Db {
    /// Connects to `DATABASE_URL`; exits (status 2) with the reason when it cannot.
    pub fn connect(program: &str) -> Db {
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            eprintln!("{program}: DATABASE_URL is not set (the plan's consumer.env gives it)");
            std::process::exit(2)
        });
        let table = std::env::var("EXACTLY_DB_TABLE").unwrap_or_else(|_| "orders".into());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let client = rt.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&url, NoTls)
                    .await
                    .unwrap_or_else(|e| {
                        eprintln!("{program}: cannot connect to the database: {e}");
                        std::process::exit(1)
                    });
            tokio::spawn(connection);
            client
        });
        Db { rt, client, table }
    }

    /// One row, in a transaction of its own (autocommit).
    pub fn insert(&mut self, id: &str, payload: &str) -> Result<(), tokio_postgres::Error> {
        let sql = format!(
            "INSERT INTO {} (message_id, payload) VALUES ($1, $2::text::jsonb)",
            self.table
        );
        self.rt
            .block_on(self.client.execute(&sql, &[&id, &payload]))
            .map(|_| ())
    }

    /// The row and `processed(message_id)` in one transaction; an ID already in `processed`
    /// writes nothing (`ON CONFLICT DO NOTHING`). Committed before it returns.
    pub fn insert_once(
        &mut self,
        id: &str,
        payload: &str,
    ) -> Result<Written, tokio_postgres::Error> {
        let table = self.table.clone();
        self.rt.block_on(async {
            let tx = self.client.transaction().await?;
            let fresh = tx
                .execute(
                    "INSERT INTO processed (message_id) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&id],
                )
                .await?;
            if fresh == 1 {
                let sql = format!(
                    "INSERT INTO {table} (message_id, payload) VALUES ($1, $2::text::jsonb)"
                );
                tx.execute(&sql, &[&id, &payload]).await?;
            }
            tx.commit().await?;
            Ok(if fresh == 1 {
                Written::Applied
            } else {
                Written::Skipped
            })
        })
    }

    /// The row and the partition's next offset in one transaction, unless the stored offset
    /// is already past this message (then nothing is written). The stored offset is locked
    /// for the transaction, so two owners of a partition cannot both write one message.
    pub fn insert_with_offset(
        &mut self,
        at: (&str, &str, i32, i64),
        id: &str,
        payload: &str,
    ) -> Result<Written, tokio_postgres::Error> {
        self.advance_offset(at, Some((id, payload)))
    }

    /// Stores the partition's next offset past `offset` in its own transaction, with no row
    /// (the offsets-in-db bug of `offset-then-db`), unless the stored offset is already past
    /// this message: then `Skipped`, nothing written.
    pub fn store_offset(
        &mut self,
        at: (&str, &str, i32, i64),
    ) -> Result<Written, tokio_postgres::Error> {
        self.advance_offset(at, None)
    }

    /// Moves the partition's stored next offset past `offset`, with `row` (ID, payload) in
    /// the same transaction when given; `Skipped` when the stored offset is already past it.
    fn advance_offset(
        &mut self,
        (group, topic, partition, offset): (&str, &str, i32, i64),
        row: Option<(&str, &str)>,
    ) -> Result<Written, tokio_postgres::Error> {
        let table = self.table.clone();
        self.rt.block_on(async {
            let tx = self.client.transaction().await?;
            tx.execute(
                "INSERT INTO consumer_offsets (grp, topic, part, next_offset) VALUES ($1, $2, $3, 0) \
                 ON CONFLICT DO NOTHING",
                &[&group, &topic, &partition],
            )
            .await?;
            let stored = tx
                .query_one(
                    "SELECT next_offset FROM consumer_offsets WHERE grp = $1 AND topic = $2 \
                     AND part = $3 FOR UPDATE",
                    &[&group, &topic, &partition],
                )
                .await?;
            let next: i64 = stored.get(0);
            if offset < next {
                tx.rollback().await?;
                return Ok(Written::Skipped);
            }
            if let Some((id, payload)) = row {
                let sql = format!(
                    "INSERT INTO {table} (message_id, payload) VALUES ($1, $2::text::jsonb)"
                );
                tx.execute(&sql, &[&id, &payload]).await?;
            }
            tx.execute(
                "UPDATE consumer_offsets SET next_offset = $4 WHERE grp = $1 AND topic = $2 \
                 AND part = $3",
                &[&group, &topic, &partition, &(offset + 1)],
            )
            .await?;
            tx.commit().await?;
            Ok(Written::Applied)
        })
    }

    /// The next offset stored for each partition of `topic` (seek there on assignment).
    pub fn stored_offsets(
        &mut self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<(i32, i64)>, tokio_postgres::Error> {
        let rows = self.rt.block_on(self.client.query(
            "SELECT part, next_offset FROM consumer_offsets WHERE grp = $1 AND topic = $2",
            &[&group, &topic],
        ))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
