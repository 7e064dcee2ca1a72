//! Bulk enrolment: many people, each with one card and the same access levels, in one
//! transaction, for site imports and the access benchmark's seeding. Enrolling 100,000
//! cards through [`Store::add_person`], [`Store::grant_level`] and [`Store::add_card`]
//! would take 300,000 transactions, each waiting for its own fsync (`synchronous=FULL`);
//! here a batch of any size waits for one.
//!
//! Promises (the same as the one-by-one calls):
//! - A batch is stored whole or not at all; the error names the first entry at fault.
//! - Person names follow the rules of [`Store::add_person`]: unique, not empty, no
//!   surrounding whitespace or control characters, at most [`MAX_NAME_LEN`](crate::store::MAX_NAME_LEN) characters.
//! - A card is stored only as [`SiteKey::card_hash`] of its raw id (as by
//!   [`Store::add_card`]); a card already enrolled is [`StoreError::CardExists`].
//! - Every level must exist ([`StoreError::NotFound`] otherwise).

use crate::error::{is_unique_violation, Entity, StoreError};
use crate::site_key::SiteKey;
use crate::store::{check_name, write_tx, Result, Store};
use gatehouse_access::model::{CardId, LevelId, PersonId};
use rusqlite::{params, OptionalExtension};

/// One person to enrol with their card.
#[derive(Clone, Copy)]
pub struct BulkPerson<'a> {
    pub name: &'a str,
    /// The raw card id as the reader sends it (HMAC input only, never stored).
    pub acc_id: &'a [u8],
}

/// Raw card ids stay out of `Debug`.
impl std::fmt::Debug for BulkPerson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkPerson")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What one [`BulkPerson`] became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enrolled {
    pub person: PersonId,
    pub card: CardId,
}

/// [`Store::add_person`]'s name rules, with the name in the error (which entry is at
/// fault).
fn check_person_name(name: &str) -> Result<()> {
    check_name("person name", name).map_err(|e| match e {
        StoreError::Invalid { field, reason } => {
            StoreError::invalid(field, format!("{name:?} {reason}"))
        }
        other => other,
    })
}

impl Store {
    /// Adds every person of `people` with their card, each granted every level of
    /// `levels`, in one transaction. Returns the new ids in the order given.
    pub fn enrol_bulk(
        &self,
        key: &SiteKey,
        levels: &[LevelId],
        people: &[BulkPerson<'_>],
    ) -> Result<Vec<Enrolled>> {
        for p in people {
            check_person_name(p.name)?;
            if p.acc_id.is_empty() {
                return Err(StoreError::invalid(
                    "card id",
                    format!("of {:?} must not be empty", p.name),
                ));
            }
        }
        let tx = write_tx(self.conn())?;
        for level in levels {
            let found: Option<i64> = tx
                .query_row("SELECT id FROM levels WHERE id = ?1", [level], |r| r.get(0))
                .optional()?;
            if found.is_none() {
                return Err(StoreError::NotFound {
                    entity: Entity::Level,
                    key: level.to_string(),
                });
            }
        }
        let mut add_person = tx.prepare_cached(
            "INSERT INTO people (name, enabled, valid_from, valid_until) VALUES (?1, 1, NULL, NULL)",
        )?;
        let mut grant = tx.prepare_cached(
            "INSERT OR IGNORE INTO person_levels (person_id, level_id) VALUES (?1, ?2)",
        )?;
        let mut find_card = tx.prepare_cached("SELECT id FROM cards WHERE hash = ?1")?;
        let mut add_card = tx.prepare_cached(
            "INSERT INTO cards (hash, person_id, enabled, master, valid_from, valid_until, label)
             VALUES (?1, ?2, 1, 0, NULL, NULL, NULL)",
        )?;
        let mut out = Vec::with_capacity(people.len());
        for p in people {
            let person = match add_person.insert([p.name]) {
                Ok(id) => id,
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::NameTaken {
                        entity: Entity::Person,
                        name: p.name.to_owned(),
                    })
                }
                Err(e) => return Err(e.into()),
            };
            for level in levels {
                grant.execute(params![person, level])?;
            }
            let hash = key.card_hash(p.acc_id);
            let existing: Option<i64> = find_card
                .query_row([&hash.0[..]], |r| r.get(0))
                .optional()?;
            if let Some(existing) = existing {
                return Err(StoreError::CardExists { existing });
            }
            let card = add_card.insert(params![&hash.0[..], person])?;
            out.push(Enrolled { person, card });
        }
        drop((add_person, grant, find_card, add_card));
        tx.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_access::model::{HolidayRule, Schedule, Validity, Window};

    fn always() -> Schedule {
        Schedule {
            weekly: std::array::from_fn(|_| {
                vec![Window {
                    start: 0,
                    end: 1440,
                }]
            }),
            holidays: HolidayRule::Ignore,
        }
    }

    #[test]
    fn enrols_people_cards_and_grants_in_one_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SiteKey::from_bytes([3; 32]);
        let level = store.add_level("all", &always()).unwrap();
        let names: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
        let ids: Vec<[u8; 4]> = (0..50u32).map(|i| i.to_be_bytes()).collect();
        let people: Vec<BulkPerson<'_>> = names
            .iter()
            .zip(&ids)
            .map(|(n, a)| BulkPerson { name: n, acc_id: a })
            .collect();
        let rev = store.revision().unwrap();
        let done = store.enrol_bulk(&key, &[level], &people).unwrap();
        assert_eq!(done.len(), 50);
        assert!(
            store.revision().unwrap() > rev,
            "bulk changes bump the revision"
        );
        let card = store.find_card_by_acc_id(&key, &ids[7]).unwrap().unwrap();
        assert_eq!(card.id, done[7].card);
        assert_eq!(card.person, done[7].person);
        assert_eq!(store.person(done[7].person).unwrap().levels, vec![level]);
        assert_eq!(store.list_cards(None).unwrap().len(), 50);
    }

    #[test]
    fn a_bad_entry_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SiteKey::from_bytes([3; 32]);
        let level = store.add_level("all", &always()).unwrap();
        let taken = store.add_person("taken", Validity::default()).unwrap();
        store
            .add_card(
                &key,
                b"\x01\x02",
                &crate::NewCard {
                    person: taken,
                    ..Default::default()
                },
            )
            .unwrap();
        let cases: &[(&[BulkPerson<'_>], &str)] = &[
            (
                &[
                    BulkPerson {
                        name: "a",
                        acc_id: b"\x09",
                    },
                    BulkPerson {
                        name: "taken",
                        acc_id: b"\x0a",
                    },
                ],
                "already taken",
            ),
            (
                &[BulkPerson {
                    name: "b",
                    acc_id: b"\x01\x02",
                }],
                "already enrolled",
            ),
            (
                &[BulkPerson {
                    name: " c",
                    acc_id: b"\x0b",
                }],
                "whitespace",
            ),
            (
                &[BulkPerson {
                    name: "d",
                    acc_id: b"",
                }],
                "must not be empty",
            ),
        ];
        for (people, want) in cases {
            let e = store.enrol_bulk(&key, &[level], people).unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
        let e = store
            .enrol_bulk(
                &key,
                &[level + 1],
                &[BulkPerson {
                    name: "e",
                    acc_id: b"\x0c",
                }],
            )
            .unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
        assert_eq!(store.list_people().unwrap().len(), 1, "nothing was added");
        assert_eq!(store.list_cards(None).unwrap().len(), 1);
    }
}
