//! The nemesis checker: a pure function of what the clients saw (operations sent, answers
//! acknowledged) and what the nodes hold (journals, leaders observed per term).
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One journal entry as the checker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub id: String,
}

/// A successful answer to a client: the operation is at `index` in a `term` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub id: String,
    pub index: u64,
    pub term: u64,
}

/// What one journal reader was given: segments, each the index the reader asked to start at
/// and the entries that followed. A new segment starts only after an explicit `COMPACTED`;
/// within one, every entry must be the previous index + 1 (the first: the index asked for).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Node and kind of reader, for findings.
    pub reader: String,
    pub segments: Vec<(u64, Vec<Entry>)>,
    /// Whether it read through the end of the agreed journal before its deadline.
    pub reached_end: bool,
}

/// Everything the checker reads.
#[derive(Debug, Default)]
pub struct History {
    /// Every operation id any client sent (acknowledged or not).
    pub sent: HashSet<String>,
    pub acks: Vec<Ack>,
    /// Per node (by name): its whole journal, or None when it could not be read.
    pub journals: Vec<(String, Option<Vec<Entry>>)>,
    /// Nodes that said `isLeader: true` in each term.
    pub leaders: BTreeMap<u64, BTreeSet<String>>,
    /// Operations whose every answer was a certain refusal (not `TIMEOUT`, no lost
    /// connection), then abandoned by their client: none may ever be committed.
    pub refused: HashSet<String>,
    /// What each journal reader saw.
    pub readers: Vec<Observed>,
    /// Whether retention trimmed the final journals: the readers' observations then stand in
    /// for the trimmed part, and an acknowledgement at an index no reader saw counts as
    /// unverified, not lost.
    pub journals_trimmed: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Distinct operations acknowledged at least once.
    pub acknowledged: usize,
    /// Acknowledged but absent, or present somewhere other than where it was acknowledged.
    pub lost: usize,
    /// Extra copies of an operation id in the agreed journal.
    pub duplicated: usize,
    /// Entries where two journals disagree, plus gaps and out-of-order indices.
    pub divergent: usize,
    /// Operations in a journal that no client sent.
    pub phantom: usize,
    /// Terms in which two different nodes claimed to lead.
    pub split_terms: usize,
    /// Operations answered only with certain refusals that are in the journal anyway.
    pub false_refusals: usize,
    /// Nodes whose journal could not be read or does not reach the longest one's end.
    pub lagging: usize,
    /// Journal readers checked.
    pub readers: usize,
    /// Indices a reader was not given in order: a hole, a repeat or a backward step with no
    /// `COMPACTED` before it.
    pub gaps: usize,
    /// Readers that did not read through to the end of the agreed journal.
    pub stalled_readers: usize,
    /// Acknowledgements at an index no reader and no final journal holds (only when the
    /// journals are trimmed by retention).
    pub unverified: usize,
    /// Length of the agreed (merged) journal.
    pub journal_len: usize,
    pub details: Vec<String>,
}

impl Verdict {
    pub fn safe(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.divergent == 0
            && self.phantom == 0
            && self.split_terms == 0
            && self.false_refusals == 0
            && self.gaps == 0
    }

    fn note(&mut self, detail: String) {
        if self.details.len() < 40 {
            self.details.push(detail);
        }
    }
}

pub fn check(h: &History) -> Verdict {
    let mut v = Verdict {
        acknowledged: h.acks.iter().map(|a| &a.id).collect::<HashSet<_>>().len(),
        ..Verdict::default()
    };
    // Each journal on its own: indices strictly increasing and dense (journal indices are).
    for (name, journal) in &h.journals {
        let Some(journal) = journal else {
            v.lagging += 1;
            v.note(format!("{name}: journal unreadable"));
            continue;
        };
        for w in journal.windows(2) {
            if w[1].index != w[0].index + 1 {
                v.divergent += 1;
                v.note(format!(
                    "{name}: index {} follows {} (indices must increase by one)",
                    w[1].index, w[0].index
                ));
            }
        }
    }
    // The longest journal is the reference; every other one must be a prefix of it
    // (compared where both still hold entries: older ones may have been compacted).
    let readable: Vec<(&String, &Vec<Entry>)> = h
        .journals
        .iter()
        .filter_map(|(n, j)| j.as_ref().map(|j| (n, j)))
        .collect();
    let Some((longest_name, longest)) = readable
        .iter()
        .max_by_key(|(_, j)| j.last().map_or(0, |e| e.index))
        .copied()
    else {
        v.note("no journal could be read".into());
        return v;
    };
    let last = longest.last().map_or(0, |e| e.index);
    let mut merged: BTreeMap<u64, &Entry> = BTreeMap::new();
    for e in longest {
        merged.entry(e.index).or_insert(e);
    }
    for (name, journal) in &readable {
        for e in journal.iter() {
            merge(&mut v, &mut merged, name, e);
        }
        let their_last = journal.last().map_or(0, |e| e.index);
        if their_last < last {
            v.lagging += 1;
            v.note(format!(
                "{name} ends at index {their_last}, {longest_name} at {last}"
            ));
        }
    }
    v.readers = h.readers.len();
    check_readers(h, &mut v, &mut merged, last);
    v.journal_len = merged.len();
    // Duplicates and phantoms in the agreed journal.
    let mut position: HashMap<&str, &Entry> = HashMap::new();
    for e in merged.values() {
        if let Some(first) = position.get(e.id.as_str()) {
            v.duplicated += 1;
            v.note(format!(
                "{} appears at {} and again at {}",
                e.id, first.index, e.index
            ));
        } else {
            position.insert(&e.id, e);
        }
        if !h.sent.contains(&e.id) {
            v.phantom += 1;
            v.note(format!("{} at {} was never sent", e.id, e.index));
        }
    }
    // Every acknowledgement: present, exactly where (index and term) it was acknowledged.
    for a in &h.acks {
        match position.get(a.id.as_str()) {
            Some(e) if e.index == a.index && e.term == a.term => {}
            Some(e) => {
                v.lost += 1;
                v.note(format!(
                    "{} acknowledged at {} (term {}) but the journal has it at {} (term {})",
                    a.id, a.index, a.term, e.index, e.term
                ));
            }
            None if h.journals_trimmed && !merged.contains_key(&a.index) => v.unverified += 1,
            None => {
                v.lost += 1;
                v.note(format!(
                    "{} acknowledged at {} (term {}) is in no journal",
                    a.id, a.index, a.term
                ));
            }
        }
    }
    for id in &h.refused {
        if let Some(e) = position.get(id.as_str()) {
            v.false_refusals += 1;
            v.note(format!(
                "{id} was refused (a certain answer) but is committed at {} (term {})",
                e.index, e.term
            ));
        }
    }
    for (term, leaders) in &h.leaders {
        if leaders.len() > 1 {
            v.split_terms += 1;
            v.note(format!("term {term} had leaders {leaders:?}"));
        }
    }
    v
}

/// Every reader gap-free and in the agreed order; what readers saw of indices the final
/// journals no longer hold joins the agreed journal.
fn check_readers<'h>(
    h: &'h History,
    v: &mut Verdict,
    merged: &mut BTreeMap<u64, &'h Entry>,
    last: u64,
) {
    for r in &h.readers {
        for (from, entries) in &r.segments {
            let mut want = *from;
            for e in entries {
                if e.index != want {
                    v.gaps += 1;
                    v.note(format!(
                        "{}: was given {} where {want} was due",
                        r.reader, e.index
                    ));
                }
                want = e.index + 1;
                merge(v, merged, &r.reader, e);
            }
        }
        if !r.reached_end {
            v.stalled_readers += 1;
            v.note(format!("{} did not read through to {last}", r.reader));
        }
    }
}

/// Add what `source` holds at `e.index` to the agreed journal, or count a divergence when the
/// agreed journal has another entry there.
fn merge<'h>(v: &mut Verdict, merged: &mut BTreeMap<u64, &'h Entry>, source: &str, e: &'h Entry) {
    match merged.get(&e.index) {
        Some(m) if *m == e => {}
        Some(m) => {
            v.divergent += 1;
            v.note(format!(
                "{source} has {}@{} (term {}) where the agreed journal has {} (term {})",
                e.id, e.index, e.term, m.id, m.term
            ));
        }
        None => {
            merged.insert(e.index, e);
        }
    }
}
