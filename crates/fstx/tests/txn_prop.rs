//! Property test: random sequences of transactions (random sizes, nested
//! directories, writes, removals, renames, new directories, aborts) on a real
//! directory, checked after every transaction against an in-memory model of
//! the tree — including which operations the library must refuse.

mod txnkit;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use fstx::Transaction;
use txnkit::{snapshot, TempDir};

#[derive(Debug, Clone)]
enum Act {
    Put(String, Vec<u8>),
    Remove(String),
    Rename(String, String),
    Mkdir(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File(Vec<u8>),
    Dir,
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=3)
        .prop_map(|v| v.join("/"))
}

fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (any::<u8>(), 60_000usize..140_000).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => (path(), content()).prop_map(|(p, c)| Act::Put(p, c)),
        2 => path().prop_map(Act::Remove),
        2 => (path(), path()).prop_map(|(a, b)| Act::Rename(a, b)),
        1 => path().prop_map(Act::Mkdir),
    ]
}

fn txn() -> impl Strategy<Value = (Vec<Act>, bool)> {
    (
        prop::collection::vec(act(), 0..8),
        prop::bool::weighted(0.85),
    )
}

fn ancestors(p: &str) -> Vec<String> {
    let parts: Vec<&str> = p.split('/').collect();
    (1..parts.len()).map(|i| parts[..i].join("/")).collect()
}

fn is_ancestor(a: &str, b: &str) -> bool {
    b.len() > a.len() && b.starts_with(a) && b.as_bytes()[a.len()] == b'/'
}

/// The transaction's rules, on the model: the tree before the transaction,
/// the paths used so far, the directories planned so far.
struct Staging<'a> {
    tree: &'a BTreeMap<String, Node>,
    used: BTreeMap<String, bool>, // true = file use, false = new directory
    planned: BTreeSet<String>,
}

impl Staging<'_> {
    fn claim_ok(&self, p: &str) -> bool {
        !self.used.contains_key(p) && !self.planned.iter().any(|d| is_ancestor(p, d))
    }

    /// Plans directory `dir` (and its ancestors when `create`); returns
    /// whether it existed, or None when refused.
    fn plan(&mut self, dir_and_up: &[String], create: bool) -> Option<bool> {
        let mut missing_from = None;
        if dir_and_up.iter().any(|a| self.used.get(a) == Some(&true)) {
            return None;
        }
        for (i, a) in dir_and_up.iter().enumerate() {
            if self.planned.contains(a) {
                missing_from = Some(i);
                break;
            }
            match self.tree.get(a) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => return None,
                None => {
                    missing_from = Some(i);
                    break;
                }
            }
        }
        let Some(from) = missing_from else {
            return Some(true);
        };
        if !create {
            return None;
        }
        for a in &dir_and_up[from..] {
            self.planned.insert(a.clone());
            self.used.insert(a.clone(), false);
        }
        Some(false)
    }

    fn check(&mut self, act: &Act) -> bool {
        match act {
            Act::Put(p, _) => {
                if !self.claim_ok(p) {
                    return false;
                }
                let Some(exists) = self.plan(&ancestors(p), true) else {
                    return false;
                };
                if exists && self.tree.get(p) == Some(&Node::Dir) {
                    return false;
                }
                self.used.insert(p.clone(), true);
                true
            }
            Act::Remove(p) => {
                if !self.claim_ok(p) || self.plan(&ancestors(p), false).is_none() {
                    return false;
                }
                if !matches!(self.tree.get(p), Some(Node::File(_))) {
                    return false;
                }
                self.used.insert(p.clone(), true);
                true
            }
            Act::Rename(f, t) => {
                if f == t || !self.claim_ok(f) || !self.claim_ok(t) {
                    return false;
                }
                if self.plan(&ancestors(f), false).is_none()
                    || !matches!(self.tree.get(f), Some(Node::File(_)))
                {
                    return false;
                }
                let Some(exists) = self.plan(&ancestors(t), true) else {
                    return false;
                };
                if exists && self.tree.get(t) == Some(&Node::Dir) {
                    return false;
                }
                self.used.insert(f.clone(), true);
                self.used.insert(t.clone(), true);
                true
            }
            Act::Mkdir(p) => {
                if self.used.get(p) == Some(&true) {
                    return false;
                }
                let mut all = ancestors(p);
                all.push(p.clone());
                self.plan(&all, true).is_some()
            }
        }
    }
}

fn to_snapshot(model: &BTreeMap<String, Node>) -> BTreeMap<String, Option<Vec<u8>>> {
    model
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                match v {
                    Node::File(b) => Some(b.clone()),
                    Node::Dir => None,
                },
            )
        })
        .collect()
}

fn run(seq: &[(Vec<Act>, bool)]) -> Result<(), TestCaseError> {
    let d = TempDir::new("prop");
    let mut model: BTreeMap<String, Node> = BTreeMap::new();
    for (i, (acts, commit)) in seq.iter().enumerate() {
        let mut t = Transaction::begin(d.path()).unwrap();
        let mut st = Staging {
            tree: &model,
            used: BTreeMap::new(),
            planned: BTreeSet::new(),
        };
        let mut accepted = Vec::new();
        for a in acts {
            let lib = match a {
                Act::Put(p, c) => t.write(p, c),
                Act::Remove(p) => t.remove(p),
                Act::Rename(f, to) => t.rename(f, to),
                Act::Mkdir(p) => t.mkdir(p),
            };
            let want = st.check(a);
            prop_assert_eq!(
                lib.is_ok(),
                want,
                "txn {} {:?}: library said {:?}, model said {}",
                i,
                a,
                lib.as_ref().err().map(ToString::to_string),
                want
            );
            if want {
                accepted.push(a.clone());
            }
        }
        let planned = st.planned.clone();
        if *commit {
            t.commit().unwrap();
            for dir in planned {
                model.insert(dir, Node::Dir);
            }
            for a in accepted {
                match a {
                    Act::Put(p, c) => {
                        model.insert(p, Node::File(c));
                    }
                    Act::Remove(p) => {
                        model.remove(&p);
                    }
                    Act::Rename(f, to) => {
                        let n = model.remove(&f).unwrap();
                        model.insert(to, n);
                    }
                    Act::Mkdir(_) => {}
                }
            }
        } else {
            t.abort().unwrap();
        }
        prop_assert_eq!(snapshot(d.path()), to_snapshot(&model), "after txn {}", i);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("FSTX_PROP_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(96),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_transactions_match_the_model(seq in prop::collection::vec(txn(), 1..7)) {
        run(&seq)?;
    }
}
