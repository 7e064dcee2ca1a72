//! The group-commit access-log writer: every callback, duplicates of offline uploads, and
//! durability across a SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_gate_proto::Reason;
use gatehouse_store::schema::db_path;
use gatehouse_store::{AccessLog, LogEntry, LogOutcome, LogSource, Store, StoreError};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

fn entry(gate: i64, source: LogSource, seq: Option<u64>) -> LogEntry {
    LogEntry {
        at: OffsetDateTime::now_utc(),
        gate,
        card_hash: Some(gatehouse_access::model::CardHash([0x5a; 32])),
        card: Some(7),
        person: Some(3),
        reason: Reason::Granted,
        source,
        gate_seq: seq,
    }
}

#[test]
fn group_commit_10k_entries_from_8_threads() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 1250;
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(AccessLog::start(dir.path()).unwrap());
    let (tx, rx) = mpsc::channel::<Result<LogOutcome, StoreError>>();
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let tx = tx.clone();
                    log.submit(
                        entry(t as i64, LogSource::Online, Some(i)),
                        Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    );
                }
            })
        })
        .collect();
    drop(tx);
    for w in workers {
        w.join().unwrap();
    }
    let mut ids = HashSet::new();
    for r in rx.iter() {
        match r.unwrap() {
            LogOutcome::Inserted(id) => assert!(ids.insert(id), "id {id} twice"),
            LogOutcome::Duplicate => panic!("unexpected duplicate"),
        }
    }
    let elapsed = start.elapsed();
    let n = THREADS * PER_THREAD;
    assert_eq!(ids.len() as u64, n);
    println!(
        "group commit: {n} durable entries in {:.3}s = {:.0} entries/s (synchronous=FULL)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    log.shutdown();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.log_count().unwrap(), n);
    let conn = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    let mut st = conn.prepare("SELECT id FROM access_log").unwrap();
    let stored: HashSet<i64> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored, ids);
}

fn submit_wait(log: &AccessLog, e: LogEntry) -> Result<LogOutcome, StoreError> {
    let (tx, rx) = mpsc::channel();
    log.submit(
        e,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().unwrap()
}

#[test]
fn offline_duplicates_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = AccessLog::start(dir.path()).unwrap();
    // A batch uploaded twice, the second time interleaved with new entries.
    let mut first = Vec::new();
    for seq in 0..100 {
        first.push(submit_wait(&log, entry(1, LogSource::Offline, Some(seq))).unwrap());
    }
    assert!(first.iter().all(|o| matches!(o, LogOutcome::Inserted(_))));
    let (tx, rx) = mpsc::channel();
    for seq in 50..150u64 {
        let tx = tx.clone();
        log.submit(
            entry(1, LogSource::Offline, Some(seq)),
            Box::new(move |r| {
                let _ = tx.send((seq, r));
            }),
        );
    }
    drop(tx);
    for (seq, r) in rx.iter() {
        match (seq < 100, r.unwrap()) {
            (true, LogOutcome::Duplicate) | (false, LogOutcome::Inserted(_)) => {}
            (_, other) => panic!("seq {seq}: {other:?}"),
        }
    }
    // Same sequence from another gate, or online, is a different decision.
    assert!(matches!(
        submit_wait(&log, entry(2, LogSource::Offline, Some(0))),
        Ok(LogOutcome::Inserted(_))
    ));
    assert!(matches!(
        submit_wait(&log, entry(1, LogSource::Online, Some(0))),
        Ok(LogOutcome::Inserted(_))
    ));
    // Entries without a sequence never collide.
    for _ in 0..2 {
        assert!(matches!(
            submit_wait(&log, entry(1, LogSource::Online, None)),
            Ok(LogOutcome::Inserted(_))
        ));
    }
    // A bad entry fails alone.
    assert!(matches!(
        submit_wait(&log, entry(1, LogSource::Offline, Some(u64::MAX))),
        Err(StoreError::Invalid { .. })
    ));
    log.shutdown();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.log_count().unwrap(), 150 + 4);
}

#[test]
fn shutdown_flushes_and_later_submits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = AccessLog::start(dir.path()).unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..500 {
        let tx = tx.clone();
        log.submit(
            entry(1, LogSource::Online, Some(i)),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
    }
    log.shutdown();
    let tx2 = tx.clone();
    log.submit(
        entry(1, LogSource::Online, Some(1000)),
        Box::new(move |r| {
            let _ = tx2.send(r);
        }),
    );
    drop(tx);
    let results: Vec<_> = rx.iter().collect();
    assert_eq!(results.len(), 501);
    assert_eq!(
        results
            .iter()
            .filter(|r| matches!(r, Ok(LogOutcome::Inserted(_))))
            .count(),
        500
    );
    assert!(matches!(results.last(), Some(Err(StoreError::LogClosed))));
    assert_eq!(Store::open(dir.path()).unwrap().log_count().unwrap(), 500);
}

#[test]
fn a_panicking_callback_does_not_stop_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let log = AccessLog::start(dir.path()).unwrap();
    log.submit(
        entry(1, LogSource::Online, Some(1)),
        Box::new(|_| panic!("callback bug")),
    );
    assert!(matches!(
        submit_wait(&log, entry(1, LogSource::Online, Some(2))),
        Ok(LogOutcome::Inserted(_))
    ));
}

const CHILD_ENV: &str = "GATEHOUSE_STORE_CRASH_CHILD_DIR";

/// Child half of `sigkill_loses_no_acknowledged_entry`: does nothing unless the parent set
/// `CHILD_ENV`. Writes entries from 4 threads forever, printing each id once its callback
/// fires, until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let log = Arc::new(AccessLog::start(std::path::Path::new(&dir)).unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let workers: Vec<_> = (0..4i64)
        .map(|gate| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let (tx, rx) = mpsc::channel();
                    for _ in 0..64 {
                        let tx = tx.clone();
                        log.submit(
                            entry(gate, LogSource::Online, Some(seq)),
                            Box::new(move |r| {
                                if let Ok(LogOutcome::Inserted(id)) = r {
                                    // Not print!: libtest captures that; this goes straight out.
                                    let mut out = std::io::stdout().lock();
                                    let _ = writeln!(out, "ID {id}");
                                    let _ = out.flush();
                                }
                                let _ = tx.send(());
                            }),
                        );
                        seq += 1;
                    }
                    drop(tx);
                    for () in rx.iter() {}
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn sigkill_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    // Create the schema first so the child starts writing at once.
    drop(Store::open(dir.path()).unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    // Kill mid-stream, after a few thousand acknowledgements.
    while acked.len() < 3000 {
        let line = lines.next().expect("child stopped early").unwrap();
        if let Some(id) = line.strip_prefix("ID ") {
            acked.push(id.parse::<i64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
                           // Everything the child printed before dying was acknowledged too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix("ID ") {
            if let Ok(id) = id.parse::<i64>() {
                acked.push(id);
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "child was killed");

    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.integrity_check().unwrap(), "ok");
    let conn = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    let mut st = conn.prepare("SELECT id FROM access_log").unwrap();
    let stored: HashSet<i64> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let missing: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    println!(
        "crash: {} acknowledged entries, {} stored, none lost",
        acked.len(),
        stored.len()
    );
}

const COUNT_CHILD_ENV: &str = "GATEHOUSE_STORE_COUNT_CHILD_DIR";

/// Child half of `commits_stay_visible_to_other_processes`: opens the database as another
/// process would (the CLI, an admin tool), prints the row count and closes.
#[test]
fn count_child() {
    let Some(dir) = std::env::var_os(COUNT_CHILD_ENV) else {
        return;
    };
    let conn = rusqlite::Connection::open(db_path(std::path::Path::new(&dir))).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM access_log", [], |r| r.get(0))
        .unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "COUNT {n}").unwrap();
}

fn count_in_other_process(dir: &std::path::Path) -> i64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["count_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(COUNT_CHILD_ENV, dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split_once("COUNT ").map(|(_, n)| n.trim()))
        .unwrap_or_else(|| panic!("child printed no count: {text}"))
        .parse()
        .unwrap()
}

/// Regression: opening another `Store` in a process that already writes must not drop the
/// process's SQLite locks (closing any fd of a file drops all POSIX locks on it). When it
/// did, a reader in another process closing its connection deleted the WAL under the
/// writer, and every later commit was invisible to other processes until the writer
/// stopped (a hub answered decisions that `gatehouse log tail` could not see).
#[test]
fn commits_stay_visible_to_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AccessLog::start(dir.path()).unwrap();
    for round in 1..=3u64 {
        // What a hub does now and then: open another connection (a refresh, the CLI).
        drop(Store::open(dir.path()).unwrap());
        for i in 0..10 {
            let r = submit_wait(&log, entry(1, LogSource::Online, Some(round * 100 + i)));
            assert!(matches!(r, Ok(LogOutcome::Inserted(_))), "{r:?}");
        }
        assert_eq!(
            count_in_other_process(dir.path()),
            (round * 10) as i64,
            "round {round}: committed rows visible to another process"
        );
    }
    assert_eq!(store.log_count().unwrap(), 30);
}

/// The writer checkpoints only when the WAL is large (its batches would wait for the
/// database file's fsync); below that, the checkpointer thread moves committed rows from
/// the WAL into the database file while the log is running, so the file grows without a
/// shutdown. 3000 rows stay far below the writer's own threshold.
#[test]
fn the_checkpointer_moves_committed_rows_into_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = AccessLog::start(dir.path()).unwrap();
    let db = db_path(dir.path());
    let size = || std::fs::metadata(&db).unwrap().len();
    let before = size();
    let (tx, rx) = mpsc::channel();
    for i in 0..3000u64 {
        let tx = tx.clone();
        log.submit(
            entry(1, LogSource::Online, Some(i)),
            Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            }),
        );
    }
    drop(tx);
    assert!(rx.iter().all(|ok| ok), "every row committed");
    // A liveness wait, not a speed check: the checkpointer runs every 250 ms.
    let deadline = Instant::now() + Duration::from_secs(30);
    while size() <= before + 100 * 1024 {
        assert!(
            Instant::now() < deadline,
            "database file still {} bytes (was {before}): no checkpoint ran",
            size()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    log.shutdown();
    assert_eq!(Store::open(dir.path()).unwrap().log_count().unwrap(), 3000);
}
