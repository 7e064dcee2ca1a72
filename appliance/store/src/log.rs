//! The access log: every access decision, written durably before the gate hears the answer.
//!
//! [`AccessLog`] is a group-commit writer. A dedicated thread owns its own connection;
//! [`AccessLog::submit`] queues an entry with a completion callback, and the thread writes
//! everything queued (up to [`MAX_BATCH`] entries) in one transaction. With
//! `synchronous=FULL` one fsync then covers the whole batch, so throughput grows with load
//! while each caller still waits only for its own commit.
//!
//! Promises:
//! - A callback receives `Ok(..)` only after the transaction holding its row has
//!   committed (and so survives a crash or power loss). It is called exactly once, also on
//!   failure and after shutdown ([`StoreError::LogClosed`]).
//! - Offline uploads are idempotent: an entry with the same `(gate, source, gate_seq)` as a
//!   stored one is not stored again and reports [`LogOutcome::Duplicate`].
//! - Callbacks run on the writer thread: they must be quick (send on a channel, wake a
//!   task). A panicking callback is contained and does not stop the writer.
//!
//! - Checkpoints mostly stay off the writer: a checkpoint fsyncs the database file, a few
//!   milliseconds that every decision in the batch behind it would wait for. A second
//!   thread runs a passive checkpoint every [`CHECKPOINT_EVERY`] on its own connection
//!   (SQLite docs, "Write-Ahead Logging", section 6: application-initiated checkpoints).
//!   A passive checkpoint cannot let the WAL start over while the writer keeps appending,
//!   and a WAL that only grows makes every page lookup slower, so the writer still
//!   checkpoints itself once the WAL reaches [`WRITER_CHECKPOINT_PAGES`] (four times
//!   SQLite's default): by then most frames are already copied, and the WAL restarts.
//! - When another connection holds the write lock, the writer retries every
//!   [`BUSY_RETRY`] (up to `schema::BUSY_TIMEOUT` in all) rather than with SQLite's default
//!   back-off, whose sleeps grow to 25-100 ms.
//!
//! Reading the log ([`Store::log_tail`], [`Store::log_query`]) goes through [`Store`].

use crate::error::StoreError;
use crate::schema;
use crate::store::{card_hash_from_blob, from_unix_ms, to_unix_ms, Result, Store};
use gatehouse_access::model::{CardHash, CardId, GateId, PersonId};
use gatehouse_gate_proto::Reason;
use rusqlite::{params, Connection};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;
use time::OffsetDateTime;

/// Most entries written in one transaction.
pub const MAX_BATCH: usize = 1024;

/// Largest page [`Store::log_query`] returns.
pub const MAX_QUERY_LIMIT: u32 = 10_000;

/// Where a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogSource {
    /// By the hub, answering the gate.
    Online,
    /// By the gate from its allow-list, uploaded later.
    Offline,
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Online => "online",
            LogSource::Offline => "offline",
        }
    }

    fn parse(s: &str) -> Result<LogSource> {
        match s {
            "online" => Ok(LogSource::Online),
            "offline" => Ok(LogSource::Offline),
            other => Err(StoreError::Corrupt(format!("log source {other:?}"))),
        }
    }
}

/// One decision to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When the decision was made (the gate's clock for offline entries). Stored to the
    /// millisecond.
    pub at: OffsetDateTime,
    pub gate: GateId,
    /// The presented card's hash; `None` when there was no card to hash.
    pub card_hash: Option<CardHash>,
    /// The matching card and person, if the card was known.
    pub card: Option<CardId>,
    pub person: Option<PersonId>,
    pub reason: Reason,
    pub source: LogSource,
    /// The gate's sequence number for this decision. Entries with the same
    /// `(gate, source, gate_seq)` are stored once; `None` never collides.
    pub gate_seq: Option<u64>,
}

/// What happened to a submitted entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutcome {
    /// Stored, durably, under this id.
    Inserted(i64),
    /// An entry with the same `(gate, source, gate_seq)` was already stored.
    Duplicate,
}

/// Called once per submitted entry, after its fate is durable.
pub type LogCallback = Box<dyn FnOnce(Result<LogOutcome, StoreError>) + Send + 'static>;

/// A stored log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub id: i64,
    pub at: OffsetDateTime,
    pub gate: GateId,
    pub card_hash: Option<CardHash>,
    pub card: Option<CardId>,
    pub person: Option<PersonId>,
    /// The stored reason code; see [`LogRow::reason`].
    pub reason_code: u8,
    pub source: LogSource,
    pub gate_seq: Option<u64>,
}

impl LogRow {
    /// The reason, if this build knows the code.
    pub fn reason(&self) -> Option<Reason> {
        Reason::from_code(self.reason_code)
    }
}

/// Which rows [`Store::log_query`] returns: ids greater than `after_id`, optionally of one
/// gate, one person, one reason and/or a time range (`since <= at < until`), oldest
/// first, at most `limit` (capped at [`MAX_QUERY_LIMIT`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub after_id: Option<i64>,
    pub gate: Option<GateId>,
    pub person: Option<PersonId>,
    pub reason: Option<Reason>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub limit: u32,
}

/// A pending callback; dropping it uncalled (a message left in the channel when the
/// writer exits) reports [`StoreError::LogClosed`], so every callback fires exactly once.
struct Completion(Option<LogCallback>);

impl Completion {
    fn complete(mut self, result: Result<LogOutcome, StoreError>) {
        if let Some(done) = self.0.take() {
            call(done, result);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            call(done, Err(StoreError::LogClosed));
        }
    }
}

enum Msg {
    Entry(LogEntry, Completion),
    Shutdown,
}

/// How often the checkpointer thread moves the WAL into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL size (pages) at which the writer checkpoints itself (`wal_autocheckpoint`).
pub const WRITER_CHECKPOINT_PAGES: u32 = 4000;

/// The writer's retry interval while another connection holds the write lock.
pub const BUSY_RETRY: Duration = Duration::from_micros(100);

/// `busy_handler` for the writer: retry every [`BUSY_RETRY`] until `BUSY_TIMEOUT`.
fn busy_retry(attempt: i32) -> bool {
    let limit = schema::BUSY_TIMEOUT.as_micros() / BUSY_RETRY.as_micros().max(1);
    if u128::try_from(attempt).unwrap_or(u128::MAX) >= limit {
        return false;
    }
    std::thread::sleep(BUSY_RETRY);
    true
}

/// The group-commit writer. `Sync`: share it (e.g. in an `Arc`) between all deciders.
pub struct AccessLog {
    tx: Mutex<Option<Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Dropping the sender stops the checkpointer.
    checkpoint_stop: Mutex<Option<Sender<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

fn call(done: LogCallback, result: Result<LogOutcome, StoreError>) {
    if catch_unwind(AssertUnwindSafe(move || done(result))).is_err() {
        tracing::error!("an access-log callback panicked");
    }
}

impl AccessLog {
    /// Opens its own connection to `<data_dir>/gatehouse.db` (migrating it if needed) and
    /// starts the writer thread.
    pub fn start(data_dir: &Path) -> Result<AccessLog> {
        let conn = schema::open_connection(data_dir)?;
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}"
        ))?;
        conn.busy_handler(Some(busy_retry))?;
        let checkpoint_conn = schema::open_connection(data_dir)?;
        let io = |source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        };
        let (stop_tx, stop_rx) = mpsc::channel();
        let checkpointer = std::thread::Builder::new()
            .name("access-log-checkpoint".into())
            .spawn(move || checkpointer(checkpoint_conn, stop_rx))
            .map_err(io)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(conn, rx))
            .map_err(io)?;
        Ok(AccessLog {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            checkpoint_stop: Mutex::new(Some(stop_tx)),
            checkpointer: Mutex::new(Some(checkpointer)),
        })
    }

    /// Queues an entry. `done` is called once its row is committed (or it is a duplicate,
    /// or writing failed). Never blocks on the disk.
    pub fn submit(&self, entry: LogEntry, done: LogCallback) {
        let sender = match self.tx.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let done = Completion(Some(done));
        match sender {
            // A failed send drops the message, and with it the Completion: LogClosed.
            Some(sender) => drop(sender.send(Msg::Entry(entry, done))),
            None => done.complete(Err(StoreError::LogClosed)),
        }
    }

    /// Writes everything already queued, stops the thread and waits for it. Later
    /// submissions fail with [`StoreError::LogClosed`]. Idempotent.
    pub fn shutdown(&self) {
        let sender = match self.tx.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(s) = sender {
            let _ = s.send(Msg::Shutdown);
        }
        let thread = match self.thread.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!("the access-log writer thread panicked");
            }
        }
        let stop = match self.checkpoint_stop.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(stop);
        let checkpointer = match self.checkpointer.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(t) = checkpointer {
            if t.join().is_err() {
                tracing::error!("the access-log checkpoint thread panicked");
            }
        }
    }
}

/// Runs a passive checkpoint every [`CHECKPOINT_EVERY`] until `stop`'s sender is dropped.
/// Passive: it copies what no reader still needs and never blocks the writer.
fn checkpointer(conn: Connection, stop: Receiver<()>) {
    let mut failing = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "access-log checkpoint failed; the WAL grows until one succeeds");
            }
            Err(_) => {}
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

const INSERT_SQL: &str = "INSERT INTO access_log
     (at_ms, gate_id, card_hash, card_id, person_id, reason, source, gate_seq)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (gate_id, source, gate_seq) DO NOTHING";

fn insert_one(conn: &Connection, e: &LogEntry) -> Result<LogOutcome> {
    let seq = e
        .gate_seq
        .map(i64::try_from)
        .transpose()
        .map_err(|_| StoreError::invalid("gate sequence", "above 2^63"))?;
    let mut st = conn.prepare_cached(INSERT_SQL)?;
    let n = st.execute(params![
        to_unix_ms(e.at)?,
        e.gate,
        e.card_hash.as_ref().map(|h| &h.0[..]),
        e.card,
        e.person,
        e.reason as u8,
        e.source.as_str(),
        seq,
    ])?;
    Ok(if n == 0 {
        LogOutcome::Duplicate
    } else {
        LogOutcome::Inserted(conn.last_insert_rowid())
    })
}

/// Writes one batch in one transaction; returns each entry's outcome, or the commit error.
fn write_batch(
    conn: &mut Connection,
    batch: &[(LogEntry, Completion)],
) -> Result<Vec<Result<LogOutcome>>> {
    let tx = conn.transaction()?;
    // A failing statement rolls back only itself (ON CONFLICT ABORT semantics), so one bad
    // entry gets its own error and the others still commit.
    let outcomes = batch.iter().map(|(e, _)| insert_one(&tx, e)).collect();
    tx.commit()?;
    Ok(outcomes)
}

fn writer(mut conn: Connection, rx: Receiver<Msg>) {
    let mut batch: Vec<(LogEntry, Completion)> = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    while !stopping {
        match rx.recv() {
            Ok(Msg::Entry(e, done)) => batch.push((e, done)),
            Ok(Msg::Shutdown) | Err(_) => stopping = true,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Entry(e, done)) => batch.push((e, done)),
                Ok(Msg::Shutdown) => {
                    stopping = true;
                }
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        match write_batch(&mut conn, &batch) {
            Ok(outcomes) => {
                for ((_, done), outcome) in batch.drain(..).zip(outcomes) {
                    done.complete(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "access-log batch failed");
                let msg = e.to_string();
                for (_, done) in batch.drain(..) {
                    done.complete(Err(StoreError::LogCommit(msg.clone())));
                }
            }
        }
        if stopping {
            // Entries sent between Shutdown and the sender being dropped: write them too.
            while let Ok(Msg::Entry(e, done)) = rx.try_recv() {
                batch.push((e, done));
                if batch.len() == MAX_BATCH {
                    break;
                }
            }
            if !batch.is_empty() {
                stopping = false;
            }
        }
    }
    // Leave no WAL behind on a clean stop (best effort).
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}

type RawLogRow = (
    i64,
    i64,
    i64,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    i64,
    String,
    Option<i64>,
);

const LOG_COLS: &str =
    "id, at_ms, gate_id, card_hash, card_id, person_id, reason, source, gate_seq";

/// Reads one row of the columns above (rusqlite converts a row into a tuple).
fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawLogRow> {
    RawLogRow::try_from(r)
}

fn log_row(raw: RawLogRow) -> Result<LogRow> {
    let (id, at_ms, gate, hash, card, person, reason, source, seq) = raw;
    Ok(LogRow {
        id,
        at: from_unix_ms(at_ms)?,
        gate,
        card_hash: hash.as_deref().map(card_hash_from_blob).transpose()?,
        card,
        person,
        reason_code: u8::try_from(reason)
            .map_err(|_| StoreError::Corrupt(format!("log {id}: reason {reason}")))?,
        source: LogSource::parse(&source)?,
        gate_seq: seq
            .map(u64::try_from)
            .transpose()
            .map_err(|_| StoreError::Corrupt(format!("log {id}: gate_seq")))?,
    })
}

impl Store {
    /// The newest `n` rows, oldest first (for `gatehouse log tail`).
    pub fn log_tail(&self, n: u32) -> Result<Vec<LogRow>> {
        let sql = format!("SELECT {LOG_COLS} FROM access_log ORDER BY id DESC LIMIT ?1");
        let mut st = self.conn().prepare(&sql)?;
        let raw = st
            .query_map([n.min(MAX_QUERY_LIMIT)], raw_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut rows = raw.into_iter().map(log_row).collect::<Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Rows matching `filter`, oldest first. Page by passing the last id as `after_id`.
    pub fn log_query(&self, filter: &LogFilter) -> Result<Vec<LogRow>> {
        let sql = format!(
            "SELECT {LOG_COLS} FROM access_log
             WHERE id > ?1 AND (?2 IS NULL OR gate_id = ?2) AND (?3 IS NULL OR reason = ?3)
               AND (?5 IS NULL OR person_id = ?5) AND (?6 IS NULL OR at_ms >= ?6)
               AND (?7 IS NULL OR at_ms < ?7)
             ORDER BY id LIMIT ?4"
        );
        let mut st = self.conn().prepare_cached(&sql)?;
        let raw = st
            .query_map(
                params![
                    filter.after_id.unwrap_or(0),
                    filter.gate,
                    filter.reason.map(|r| r as u8),
                    filter.limit.min(MAX_QUERY_LIMIT),
                    filter.person,
                    filter.since.map(to_unix_ms).transpose()?,
                    filter.until.map(to_unix_ms).transpose()?,
                ],
                raw_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raw.into_iter().map(log_row).collect()
    }

    /// Number of rows in the access log.
    pub fn log_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM access_log", [], |r| r.get(0))?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("count {n}")))
    }

    /// The highest `gate_seq` each gate used online, for resuming replay windows. One
    /// query answered from the `(gate_id, source, gate_seq)` unique index, not a log scan.
    pub fn highest_online_seqs(&self) -> Result<Vec<(GateId, u64)>> {
        let mut st = self.conn().prepare(
            "SELECT gate_id, max(gate_seq) FROM access_log
             WHERE source = 'online' AND gate_seq IS NOT NULL GROUP BY gate_id",
        )?;
        let rows = st
            .query_map([], |r| <(i64, i64)>::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(gate, seq)| {
                u64::try_from(seq)
                    .map(|s| (gate, s))
                    .map_err(|_| StoreError::Corrupt(format!("log gate_seq {seq}")))
            })
            .collect()
    }
}
