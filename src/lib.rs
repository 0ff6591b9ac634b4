//! exactly: tells, with evidence, whether a message consumer loses or duplicates work when it
//! crashes. See ARCHITECTURE.md for the map; data flows one way: sources (workload,
//! supervisor, sinks) → timeline → {nemesis, events.jsonl} → judge → report.
#![warn(missing_docs)]

pub mod audit;
pub mod broker;
pub mod cli;
pub mod consumer;
pub mod error;
pub mod gate;
pub mod judge;
pub mod nemesis;
pub mod plan;
pub mod procfs;
pub mod proxy;
pub mod report;
pub mod run;
pub mod sink;
pub mod timeline;
pub mod workload;
