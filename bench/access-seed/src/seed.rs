//! `seed`: a hub data directory at benchmark scale, built through the store's API.
//!
//! What it creates, in this order (progress on stderr, a summary on stdout):
//! 1. zone `bench`, gates `bench-001`.. (`Store::add_gate`, as `gatehouse gate add`), each
//!    with a fresh secret; with it in the gates file go the site's card key
//!    (`SiteKey::card_key()`), the gate's allow-list key (`SiteKey::gate_key(id)`) and its
//!    MQTT password (`gatehouse_hub::mqtt::gate_password(secret)`), as the CLI prints them;
//! 2. level `bench-all`, open always (holidays ignored), holding every gate;
//! 3. people `bench-person-0000001`.. with one card each (distinct random 7-byte ids from
//!    `--seed`, the UID length of most MIFARE cards), granted that level, enrolled with
//!    `Store::enrol_bulk` in batches of `--batch`;
//! 4. `--log-rows` access-log rows through the hub's own group-commit writer
//!    (`AccessLog`): online decisions, gates taking turns, each gate's `gate_seq` counting
//!    from 1, times spread over the 30 days before now; 97 % granted to a random enrolled
//!    card, 3 % unknown cards.
//!
//! The gate-sim files go to `--out`: `gates.toml`, `cards.txt`, `sim-state.json` (the
//! highest `gate_seq` of step 4 per gate, so gate-sim's numbers continue above them as the
//! hub's replay windows require).

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use gatehouse_access::model::{
    CardHash, Direction, HolidayRule, Schedule, Window, MINUTES_PER_DAY,
};
use gatehouse_gate_proto::Reason;
use gatehouse_store::bulk::{BulkPerson, Enrolled};
use gatehouse_store::{AccessLog, LogEntry, LogOutcome, LogSource, NewGate, SiteKey, Store};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;
use time::{Duration, OffsetDateTime};

/// Log entries handed to the writer before waiting for them to be durable.
const LOG_CHUNK: usize = 20_000;

/// Share of synthetic log rows for unknown cards, in percent.
const UNKNOWN_PERCENT: u64 = 3;

/// Length of the generated card ids (a 7-byte MIFARE UID).
const CARD_LEN: usize = 7;

#[derive(Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub hub: crate::DataDir,
    /// Where to write gates.toml, cards.txt and sim-state.json (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,
    /// Gates to create.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=9999))]
    pub gates: u32,
    /// People to create, each with one card.
    #[arg(long, default_value_t = 100_000)]
    pub cards: usize,
    /// Synthetic access-log rows to write.
    #[arg(long, default_value_t = 1_000_000)]
    pub log_rows: u64,
    /// People enrolled per transaction.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Seed of the generated card ids and log rows.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// SplitMix64 (Steele, Lea & Flood, OOPSLA 2014): reproducible data from `--seed`. Not
/// for keys (gate secrets come from the store's OS randomness).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0; the modulo bias is negligible at these sizes).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn progress(what: &str, done: u64, total: u64, started: Instant) {
    eprintln!(
        "seed: {what} {done}/{total} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// `n` distinct card ids of [`CARD_LEN`] bytes.
fn card_ids(n: usize, rng: &mut SplitMix64) -> Vec<[u8; CARD_LEN]> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut id = [0u8; CARD_LEN];
        id.copy_from_slice(&rng.next_u64().to_be_bytes()[1..]);
        if seen.insert(id) {
            out.push(id);
        }
    }
    out
}

/// One gate as gate-sim's gates file wants it.
struct SimGate {
    id: i64,
    name: String,
    secret: [u8; 32],
    card_key: [u8; 32],
    allow_list_key: [u8; 32],
    mqtt_username: String,
}

fn gates_toml(gates: &[SimGate]) -> String {
    let mut s = String::from(
        "# Written by `gatehouse-bench-access seed`: the gates of the benchmark hub, for\n\
         # gate-sim --gates. Secrets are real: this file belongs to a throw-away data dir.\n",
    );
    for g in gates {
        let _ = write!(
            s,
            "\n[[gate]]\nid = {}\nname = \"{}\"\nsecret = \"{}\"\ncard_key = \"{}\"\n\
             allow_list_key = \"{}\"\nmqtt_username = \"{}\"\nmqtt_password = \"{}\"\n",
            g.id,
            g.name,
            hex(&g.secret),
            hex(&g.card_key),
            hex(&g.allow_list_key),
            g.mqtt_username,
            gatehouse_hub::mqtt::gate_password(&g.secret),
        );
    }
    s
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn always() -> Schedule {
    Schedule {
        weekly: std::array::from_fn(|_| {
            vec![Window {
                start: 0,
                end: MINUTES_PER_DAY,
            }]
        }),
        holidays: HolidayRule::Ignore,
    }
}

pub fn run(data_dir: &Path, args: &SeedArgs) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let store = Store::open(data_dir)
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))?;
    let key = SiteKey::load_or_create(data_dir).context("cannot load the site key")?;
    let mut rng = SplitMix64(args.seed ^ 0x6265_6e63_6821); // "bench!"

    // 1. Gates.
    let zone = store.add_zone("bench", false)?;
    let mut gates = Vec::with_capacity(args.gates as usize);
    for i in 1..=args.gates {
        let name = format!("bench-{i:03}");
        let creds = store
            .add_gate(&NewGate {
                name: name.clone(),
                zone,
                direction: Direction::In,
                relay_ms: 3000,
                allowed_ips: None,
                mqtt_username: None,
            })
            .with_context(|| format!("gate {name}"))?;
        gates.push(SimGate {
            id: creds.id,
            name,
            secret: *creds.secret.expose(),
            card_key: key.card_key(),
            allow_list_key: key.gate_key(creds.id),
            mqtt_username: creds.mqtt_username,
        });
    }
    progress("gates", gates.len() as u64, u64::from(args.gates), started);

    // 2. One level opening every gate, always.
    let level = store.add_level("bench-all", &always())?;
    for g in &gates {
        store.add_level_gate(level, g.id)?;
    }

    // 3. People and cards.
    let ids = card_ids(args.cards, &mut rng);
    let names: Vec<String> = (1..=ids.len())
        .map(|i| format!("bench-person-{i:07}"))
        .collect();
    let mut enrolled: Vec<(Enrolled, CardHash)> = Vec::with_capacity(ids.len());
    let batch = usize::try_from(args.batch).unwrap_or(usize::MAX);
    for (names, ids) in names.chunks(batch).zip(ids.chunks(batch)) {
        let people: Vec<BulkPerson<'_>> = names
            .iter()
            .zip(ids)
            .map(|(name, id)| BulkPerson { name, acc_id: id })
            .collect();
        let done = store.enrol_bulk(&key, &[level], &people)?;
        enrolled.extend(done.into_iter().zip(ids.iter().map(|id| key.card_hash(id))));
        progress("cards", enrolled.len() as u64, ids.len() as u64, started);
    }
    if args.cards == 0 {
        progress("cards", 0, 0, started);
    }
    let mut cards_txt = String::with_capacity(ids.len() * (2 * CARD_LEN + 1));
    for id in &ids {
        cards_txt.push_str(&hex(id));
        cards_txt.push('\n');
    }
    write_file(&args.out.join("cards.txt"), &cards_txt)?;

    // 4. The access log, through the writer the hub uses.
    let last_seq = write_log(data_dir, args, &gates, &enrolled, &mut rng, started)?;
    let state: BTreeMap<String, u64> = last_seq.iter().map(|(g, s)| (g.to_string(), *s)).collect();
    write_file(
        &args.out.join("sim-state.json"),
        &serde_json::to_string_pretty(&state)?,
    )?;
    write_file(&args.out.join("gates.toml"), &gates_toml(&gates))?;

    let rows = store.log_count()?;
    println!(
        "seeded {}: {} gates, {} cards (level bench-all), {} access-log rows in total; \
         gate-sim files in {} ({:.1} s)",
        data_dir.display(),
        gates.len(),
        enrolled.len(),
        rows,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes `args.log_rows` rows; returns each gate's last `gate_seq`.
fn write_log(
    data_dir: &Path,
    args: &SeedArgs,
    gates: &[SimGate],
    enrolled: &[(Enrolled, CardHash)],
    rng: &mut SplitMix64,
    started: Instant,
) -> Result<BTreeMap<i64, u64>> {
    let mut last_seq: BTreeMap<i64, u64> = gates.iter().map(|g| (g.id, 0)).collect();
    if args.log_rows == 0 {
        return Ok(last_seq);
    }
    let log = AccessLog::start(data_dir).context("cannot start the access-log writer")?;
    let now = OffsetDateTime::now_utc();
    let span_ms: i64 = 30 * 24 * 3600 * 1000;
    let first = now - Duration::milliseconds(span_ms);
    let step_ms = span_ms / i64::try_from(args.log_rows).unwrap_or(i64::MAX).max(1);
    let n_gates = gates.len() as u64;
    let n_cards = enrolled.len() as u64;
    let mut written = 0u64;
    let mut next_report = 0u64;
    while written < args.log_rows {
        let chunk = (args.log_rows - written).min(LOG_CHUNK as u64);
        let (tx, rx) = mpsc::channel();
        for i in written..written + chunk {
            let Some(gate) = gates.get((i % n_gates) as usize) else {
                bail!("no gates to log for");
            };
            let seq = i / n_gates + 1;
            last_seq.insert(gate.id, seq);
            let known = n_cards > 0 && rng.below(100) >= UNKNOWN_PERCENT;
            let (card_hash, card, person, reason) = match enrolled.get(rng.below(n_cards) as usize)
            {
                Some((e, hash)) if known => (*hash, Some(e.card), Some(e.person), Reason::Granted),
                _ => {
                    let mut raw = [0u8; 32];
                    for part in raw.chunks_mut(8) {
                        part.copy_from_slice(&rng.next_u64().to_be_bytes());
                    }
                    (CardHash(raw), None, None, Reason::UnknownCard)
                }
            };
            let entry = LogEntry {
                at: first + Duration::milliseconds(step_ms * i64::try_from(i).unwrap_or(0)),
                gate: gate.id,
                card_hash: Some(card_hash),
                card,
                person,
                reason,
                source: LogSource::Online,
                gate_seq: Some(seq),
            };
            let tx = tx.clone();
            log.submit(
                entry,
                Box::new(move |outcome| {
                    let _ = tx.send(outcome);
                }),
            );
        }
        drop(tx);
        let mut durable = 0u64;
        for outcome in rx {
            match outcome {
                Ok(LogOutcome::Inserted(_)) => durable += 1,
                Ok(LogOutcome::Duplicate) => {
                    bail!("the access log already holds these rows; seed an empty data dir")
                }
                Err(e) => return Err(e).context("the access log could not store a row"),
            }
        }
        ensure!(
            durable == chunk,
            "{durable} of {chunk} log rows confirmed durable"
        );
        written += chunk;
        if written >= next_report || written == args.log_rows {
            progress("log rows", written, args.log_rows, started);
            next_report = written + 100_000;
        }
    }
    log.shutdown();
    Ok(last_seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        seed: SeedArgs,
    }

    #[test]
    fn seeds_a_small_hub_and_the_sim_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = dir.path().join("out");
        let w = Wrap::try_parse_from([
            "x",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--gates",
            "3",
            "--cards",
            "25",
            "--log-rows",
            "10",
            "--batch",
            "7",
        ])
        .unwrap();
        run(&data, &w.seed).unwrap();

        let store = Store::open(&data).unwrap();
        assert_eq!(store.list_gates().unwrap().len(), 3);
        assert_eq!(store.list_cards(None).unwrap().len(), 25);
        assert_eq!(store.log_count().unwrap(), 10);
        let level = store.level_by_name("bench-all").unwrap();
        assert_eq!(level.gates.len(), 3);

        let key = SiteKey::load_or_create(&data).unwrap();
        let cards = std::fs::read_to_string(out.join("cards.txt")).unwrap();
        assert_eq!(cards.lines().count(), 25);
        let first = cards.lines().next().unwrap();
        let raw: Vec<u8> = (0..first.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&first[i..i + 2], 16).unwrap())
            .collect();
        assert!(store.find_card_by_acc_id(&key, &raw).unwrap().is_some());

        // 10 rows over 3 gates: gate seqs 4, 3, 3.
        let state: BTreeMap<String, u64> =
            serde_json::from_str(&std::fs::read_to_string(out.join("sim-state.json")).unwrap())
                .unwrap();
        assert_eq!(state.values().copied().collect::<Vec<_>>(), vec![4, 3, 3]);

        let gates = std::fs::read_to_string(out.join("gates.toml")).unwrap();
        assert_eq!(gates.matches("[[gate]]").count(), 3);
        let g1 = store.gate_by_name("bench-001").unwrap();
        assert!(gates.contains(&format!(
            "allow_list_key = \"{}\"",
            hex(&key.gate_key(g1.gate.id))
        )));
        assert!(gates.contains("mqtt_username = \"gate-bench-001\""));
    }
}
