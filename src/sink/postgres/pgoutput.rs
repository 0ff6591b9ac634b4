//! Decodes the row messages of PostgreSQL's `pgoutput` logical decoding plugin (protocol
//! version 1, text values), as documented in "Logical Replication Message Formats": Relation,
//! Insert, Update and Delete. Begin, Commit and logical messages are decoded by the replication
//! client; the rest (Type, Origin, Truncate) is `Other`. Malformed input is an error, never a
//! panic: the bytes come from the network.

use serde_json::{Map, Value};

/// One column of a relation: its name and type OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Type OID (`json` 114 and `jsonb` 3802 are read as JSON).
    pub type_oid: u32,
}

/// A relation (table) as the stream describes it before its first row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The relation's OID, which row messages name.
    pub id: u32,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<Column>,
}

/// One column's value in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// A TOASTed value that did not change (its value is not sent).
    Unchanged,
    /// The value in text form.
    Text(String),
}

/// A decoded `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A relation's description.
    Relation(Relation),
    /// A new row.
    Insert {
        /// Relation OID.
        relation: u32,
        /// The row.
        new: Vec<Datum>,
    },
    /// A changed row; `old` is the whole old row when the table's REPLICA IDENTITY is FULL.
    Update {
        /// Relation OID.
        relation: u32,
        /// The old row (FULL identity) when sent.
        old: Option<Vec<Datum>>,
        /// The new row.
        new: Vec<Datum>,
    },
    /// A removed row.
    Delete {
        /// Relation OID.
        relation: u32,
    },
    /// Anything else (Type, Origin, Truncate, ...).
    Other(u8),
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed pgoutput message: {0}")]
pub struct DecodeError(String);

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError(format!(
                "wanted {n} bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| DecodeError("unterminated string".into()))?;
        let s = String::from_utf8_lossy(&self.bytes[..end]).into_owned();
        self.bytes = &self.bytes[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.u16()?;
        let mut out = Vec::with_capacity(usize::from(n).min(self.bytes.len()));
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' | b'b' => {
                    let len = self.u32()? as usize;
                    Datum::Text(String::from_utf8_lossy(self.take(len)?).into_owned())
                }
                k => return Err(DecodeError(format!("unknown tuple value kind {k:#04x}"))),
            });
        }
        Ok(out)
    }
}

/// Decodes one `pgoutput` message (the payload of an XLogData).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { bytes };
    let tag = r.u8()?;
    Ok(match tag {
        b'R' => {
            let id = r.u32()?;
            let schema = r.cstr()?;
            let name = r.cstr()?;
            let _replica_identity = r.u8()?;
            let n = r.u16()?;
            let mut columns = Vec::new();
            for _ in 0..n {
                let _flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.u32()?;
                let _typmod = r.u32()?;
                columns.push(Column { name, type_oid });
            }
            Message::Relation(Relation {
                id,
                schema,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            expect(&mut r, b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, marker) = match r.u8()? {
                b'O' => (Some(r.tuple()?), r.u8()?),
                b'K' => {
                    r.tuple()?;
                    (None, r.u8()?)
                }
                m => (None, m),
            };
            if marker != b'N' {
                return Err(DecodeError(format!(
                    "update without its new row ({marker:#04x})"
                )));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => Message::Delete { relation: r.u32()? },
        other => Message::Other(other),
    })
}

fn expect(r: &mut Reader<'_>, want: u8) -> Result<(), DecodeError> {
    match r.u8()? {
        b if b == want => Ok(()),
        b => Err(DecodeError(format!(
            "expected {:?}, found {b:#04x}",
            want as char
        ))),
    }
}

/// A row as a JSON object of its columns: json and jsonb values as JSON, the rest as strings,
/// NULL as null; a column whose value was not sent (unchanged TOAST) is left out.
pub fn row_json(relation: &Relation, row: &[Datum]) -> Map<String, Value> {
    let mut out = Map::new();
    for (column, datum) in relation.columns.iter().zip(row) {
        let value = match datum {
            Datum::Null => Value::Null,
            Datum::Unchanged => continue,
            Datum::Text(t) if column.type_oid == 114 || column.type_oid == 3802 => {
                serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone()))
            }
            Datum::Text(t) => Value::String(t.clone()),
        };
        out.insert(column.name.clone(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut b = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.push(b'n'),
                Some(t) => {
                    b.push(b't');
                    b.extend((t.len() as u32).to_be_bytes());
                    b.extend(t.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn a_relation_then_an_insert_read_as_a_json_row() {
        let mut rel = vec![b'R'];
        rel.extend(16384u32.to_be_bytes());
        rel.extend(b"public\0orders\0");
        rel.push(b'f');
        rel.extend(2u16.to_be_bytes());
        for (name, oid) in [("message_id", 25u32), ("payload", 3802)] {
            rel.push(1);
            rel.extend(name.as_bytes());
            rel.push(0);
            rel.extend(oid.to_be_bytes());
            rel.extend((-1i32).to_be_bytes());
        }
        let Message::Relation(relation) = decode(&rel).unwrap() else {
            panic!("a relation");
        };
        assert_eq!(relation.name, "orders");
        let mut ins = vec![b'I'];
        ins.extend(16384u32.to_be_bytes());
        ins.push(b'N');
        ins.extend(tuple(&[Some("r-1"), Some(r#"{"n": 2}"#)]));
        let Message::Insert { relation: id, new } = decode(&ins).unwrap() else {
            panic!("an insert");
        };
        assert_eq!(id, 16384);
        let row = row_json(&relation, &new);
        assert_eq!(
            Value::Object(row),
            serde_json::json!({"message_id": "r-1", "payload": {"n": 2}})
        );
    }

    #[test]
    fn an_update_with_its_old_row_and_a_truncated_message_is_an_error() {
        let mut up = vec![b'U'];
        up.extend(7u32.to_be_bytes());
        up.push(b'O');
        up.extend(tuple(&[Some("a"), None]));
        up.push(b'N');
        up.extend(tuple(&[Some("a"), Some("x")]));
        let m = decode(&up).unwrap();
        assert_eq!(
            m,
            Message::Update {
                relation: 7,
                old: Some(vec![Datum::Text("a".into()), Datum::Null]),
                new: vec![Datum::Text("a".into()), Datum::Text("x".into())],
            }
        );
        for cut in 1..up.len() {
            assert!(decode(&up[..cut]).is_err(), "cut at {cut}");
        }
    }
}
