//! Which Events are written to the apiserver, and when: the pure decision
//! behind [`super::Events`], in the spirit of client-go's EventCorrelator.
//!
//! - An Event identical to one already written (same object, type, reason
//!   and note) is a repeat: it raises that Event's series count instead of
//!   creating another object.
//! - Once one object and reason have had [`Limits::similar_max`] different
//!   notes within [`Limits::window`], further notes are folded into one Event
//!   whose note starts with [`COMBINED_PREFIX`] (as upstream's aggregator).
//! - Writes for one object and reason draw on a token bucket
//!   ([`Limits::per_object_burst`], one more every
//!   [`Limits::per_object_every`]); all writes draw on a global bucket
//!   ([`Limits::global_burst`], [`Limits::global_per_second`]). What a bucket
//!   refuses is held, its count kept, and written by [`Gate::flush`] once
//!   tokens are back; first Events of an object go before series updates, so
//!   in a storm every object still gets its Event and the apiserver sees at
//!   most the global rate.
//! - At most [`Limits::max_series`] series are remembered; the least recently
//!   seen of those already written are forgotten first (a later repeat then
//!   creates a new Event).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The start of the note of an Event that stands for many different notes.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// The bounds on Event writes.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Writes one object and reason may make at once...
    pub per_object_burst: u32,
    /// ...and one more every this long.
    pub per_object_every: Duration,
    /// Writes all objects together may make at once...
    pub global_burst: u32,
    /// ...and this many more each second.
    pub global_per_second: f64,
    /// Different notes one object and reason may have within `window` before
    /// further ones are combined into one Event.
    pub similar_max: usize,
    pub window: Duration,
    /// Series remembered at most.
    pub max_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_object_burst: 5,
            per_object_every: Duration::from_secs(60),
            // A thousand nodes joining at once get their Events in the
            // same few seconds as their routes; a storm beyond that is
            // spread at 100 a second.
            global_burst: 1000,
            global_per_second: 100.0,
            similar_max: 10,
            window: Duration::from_secs(600),
            max_series: 8192,
        }
    }
}

/// What an Event is about: the object, and the type and reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subject {
    /// `Kind/namespace/name` (any text that names the object uniquely).
    pub object: String,
    /// The object's name, the start of the Event's name.
    pub name: String,
    pub warning: bool,
    pub reason: String,
}

/// One Event object: its subject and note key (the note, or empty for the
/// combined Event).
pub type SeriesKey = (Subject, String);

/// A write the caller makes now: create the Event `name` (`create`), or
/// raise its series count; `count` occurrences so far (a held Event may
/// have repeated before it was written), `note` the latest; `payload` as
/// given with the occurrence that made the series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write<P> {
    pub create: bool,
    pub key: SeriesKey,
    pub name: String,
    pub note: String,
    pub count: u32,
    pub payload: P,
}

/// A token bucket: `tokens` at `at`, refilled at `rate` per second up to
/// `burst`.
#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, burst: u32, per_second: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(f64::from(burst));
        self.at = now;
    }
}

struct Series<P> {
    name: String,
    payload: P,
    note: String,
    /// Occurrences seen.
    count: u32,
    /// Occurrences written (0: not created yet).
    written: u32,
    last: Instant,
}

struct SubjectState {
    bucket: Bucket,
    /// Different notes seen within the window, with when last seen.
    notes: HashMap<String, Instant>,
}

/// The decision state; see the module doc.
pub struct Gate<P> {
    limits: Limits,
    global: Bucket,
    subjects: HashMap<Subject, SubjectState>,
    series: HashMap<SeriesKey, Series<P>>,
    /// Series with occurrences not written yet.
    pending: HashSet<SeriesKey>,
    /// Event names are `<object name>.<hex>`, from here up.
    next_name: u64,
}

impl<P: Clone> Gate<P> {
    /// `name_seed` starts the hex suffix of Event names (the time in
    /// nanoseconds keeps names apart across restarts).
    pub fn new(limits: Limits, name_seed: u64, now: Instant) -> Self {
        Self {
            global: Bucket::full(limits.global_burst, now),
            limits,
            subjects: HashMap::new(),
            series: HashMap::new(),
            pending: HashSet::new(),
            next_name: name_seed,
        }
    }

    /// An Event occurred: the write to make now, if any (otherwise it is
    /// held or counted into a series for later).
    pub fn offer(
        &mut self,
        now: Instant,
        subject: Subject,
        note: &str,
        payload: P,
    ) -> Option<Write<P>> {
        let limits = self.limits.clone();
        let state = self
            .subjects
            .entry(subject.clone())
            .or_insert_with(|| SubjectState {
                bucket: Bucket::full(limits.per_object_burst, now),
                notes: HashMap::new(),
            });
        state
            .notes
            .retain(|_, seen| now.saturating_duration_since(*seen) < limits.window);
        let combined = if let Some(seen) = state.notes.get_mut(note) {
            *seen = now;
            false
        } else if state.notes.len() >= limits.similar_max {
            true
        } else {
            state.notes.insert(note.to_owned(), now);
            false
        };
        let (note_key, shown) = if combined {
            (String::new(), format!("{COMBINED_PREFIX}{note}"))
        } else {
            (note.to_owned(), note.to_owned())
        };
        let key: SeriesKey = (subject, note_key);
        let series = match self.series.get_mut(&key) {
            Some(s) => s,
            None => {
                let name = format!("{}.{:x}", key.0.name, self.next_name);
                self.next_name = self.next_name.wrapping_add(1);
                self.series.entry(key.clone()).or_insert(Series {
                    name,
                    payload,
                    note: String::new(),
                    count: 0,
                    written: 0,
                    last: now,
                })
            }
        };
        series.count = series.count.saturating_add(1);
        series.note = shown;
        series.last = now;
        let write = self.take(now, &key);
        if write.is_none() {
            self.pending.insert(key);
        }
        self.forget_oldest();
        write
    }

    /// The held writes whose tokens are back: first Events of objects
    /// first, then series updates, oldest first within each.
    pub fn flush(&mut self, now: Instant) -> Vec<Write<P>> {
        let mut due: Vec<(bool, Instant, SeriesKey)> = self
            .pending
            .iter()
            .filter_map(|k| {
                let s = self.series.get(k)?;
                Some((s.written > 0, s.last, k.clone()))
            })
            .collect();
        due.sort_by_key(|d| (d.0, d.1));
        let mut out = Vec::new();
        for (_, _, key) in due {
            if let Some(w) = self.take(now, &key) {
                self.pending.remove(&key);
                out.push(w);
            }
        }
        // Keys whose series was forgotten.
        let series = &self.series;
        self.pending.retain(|k| series.contains_key(k));
        self.expire(now);
        out
    }

    /// A write failed: a failed create is forgotten (the next occurrence
    /// creates again); a failed update is held for the next flush.
    pub fn failed(&mut self, write: &Write<P>) {
        let key = &write.key;
        if write.create {
            self.series.remove(key);
            self.pending.remove(key);
        } else if let Some(s) = self.series.get_mut(key) {
            // Created, the count not known to be written.
            s.written = 1;
            self.pending.insert(key.clone());
        }
    }

    /// Writes held, waiting for tokens.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Series remembered.
    pub fn remembered(&self) -> usize {
        self.series.len()
    }

    /// The write for `key` if both buckets have a token (both are drawn).
    fn take(&mut self, now: Instant, key: &SeriesKey) -> Option<Write<P>> {
        let l = &self.limits;
        let state = self.subjects.get_mut(&key.0)?;
        let per_object = 1.0 / l.per_object_every.as_secs_f64().max(1e-9);
        state.bucket.refill(now, l.per_object_burst, per_object);
        self.global.refill(now, l.global_burst, l.global_per_second);
        if state.bucket.tokens < 1.0 || self.global.tokens < 1.0 {
            return None;
        }
        let series = self.series.get_mut(key)?;
        if series.written == series.count {
            return None;
        }
        state.bucket.tokens -= 1.0;
        self.global.tokens -= 1.0;
        let create = series.written == 0;
        series.written = series.count;
        Some(Write {
            create,
            key: key.clone(),
            name: series.name.clone(),
            note: series.note.clone(),
            count: series.count,
            payload: series.payload.clone(),
        })
    }

    /// Forget series beyond `max_series`: written ones before held ones,
    /// least recently seen first.
    fn forget_oldest(&mut self) {
        let over = self.series.len().saturating_sub(self.limits.max_series);
        if over == 0 {
            return;
        }
        // Drop a tenth at once so this is not paid on every offer.
        let drop = over.max(self.limits.max_series / 10).min(self.series.len());
        // Written ones first: a held one is an Event not written yet.
        let mut by_age: Vec<(bool, Instant, SeriesKey)> = self
            .series
            .iter()
            .map(|(k, s)| (self.pending.contains(k), s.last, k.clone()))
            .collect();
        by_age.sort_by_key(|d| (d.0, d.1));
        for (_, _, key) in by_age.into_iter().take(drop) {
            self.series.remove(&key);
            self.pending.remove(&key);
        }
        self.forget_idle_subjects();
    }

    /// Forget series and subjects not seen within the window with nothing
    /// held.
    fn expire(&mut self, now: Instant) {
        let window = self.limits.window;
        let pending = &self.pending;
        self.series
            .retain(|k, s| pending.contains(k) || now.saturating_duration_since(s.last) < window);
        self.forget_idle_subjects();
    }

    /// Subjects without a series left (their bucket would be full again by
    /// the time one comes back, unless it comes back at once: then it starts
    /// full, which a storm cannot exploit past `max_series`).
    fn forget_idle_subjects(&mut self) {
        let live: HashSet<&Subject> = self.series.keys().map(|(s, _)| s).collect();
        self.subjects.retain(|s, _| live.contains(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(object: &str, reason: &str) -> Subject {
        Subject {
            object: format!("Pod/default/{object}"),
            name: object.into(),
            warning: true,
            reason: reason.into(),
        }
    }

    fn limits() -> Limits {
        Limits {
            per_object_burst: 2,
            per_object_every: Duration::from_secs(10),
            global_burst: 5,
            global_per_second: 1.0,
            similar_max: 3,
            window: Duration::from_secs(600),
            max_series: 100,
        }
    }

    fn gate(limits: Limits, seed: u64, t: Instant) -> Gate<()> {
        Gate::new(limits, seed, t)
    }

    #[test]
    fn a_repeat_updates_the_series_of_the_first_event() {
        let t = Instant::now();
        let mut g = gate(limits(), 0x100, t);
        let first = g.offer(t, subject("a", "Failed"), "boom", ()).unwrap();
        assert!(first.create);
        assert_eq!((first.name.as_str(), first.count), ("a.100", 1));
        let again = g.offer(t, subject("a", "Failed"), "boom", ()).unwrap();
        assert_eq!(
            again,
            Write {
                create: false,
                key: first.key.clone(),
                name: "a.100".into(),
                note: "boom".into(),
                count: 2,
                payload: (),
            }
        );
        // Another note on the same object is its own Event (held: the
        // object's burst of two is spent).
        assert!(g.offer(t, subject("a", "Failed"), "bang", ()).is_none());
        let later = g.flush(t + Duration::from_secs(10));
        assert!(later[0].create && later[0].name == "a.101", "{later:?}");
    }

    #[test]
    fn repeats_past_the_object_bucket_are_held_and_written_as_one_count() {
        let t = Instant::now();
        let mut g = gate(limits(), 0, t);
        let s = subject("a", "Failed");
        let writes: Vec<_> = (0..10)
            .filter_map(|_| g.offer(t, s.clone(), "boom", ()))
            .collect();
        assert_eq!(writes.len(), 2, "the object's burst");
        assert_eq!(g.held(), 1);
        assert!(
            g.flush(t + Duration::from_secs(5)).is_empty(),
            "no token yet"
        );
        let later = g.flush(t + Duration::from_secs(10));
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].count, 10, "every occurrence counted");
        assert!(!later[0].create);
        assert_eq!(g.held(), 0);
        assert!(g.flush(t + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn the_global_cap_holds_first_events_and_writes_them_before_updates() {
        let t = Instant::now();
        let mut g = gate(limits(), 0, t);
        // A storm: 20 objects fail alike, each 3 times.
        let mut writes = Vec::new();
        for _ in 0..3 {
            for i in 0..20 {
                writes.extend(g.offer(t, subject(&format!("p{i}"), "Throttled"), "throttled", ()));
            }
        }
        assert_eq!(writes.len(), 5, "the global burst");
        assert!(writes.iter().all(|w| w.create));
        // One token a second: the 15 objects without an Event come first.
        let mut created: HashSet<String> = writes.iter().map(|w| w.key.0.name.clone()).collect();
        for s in 1..=15 {
            let out = g.flush(t + Duration::from_secs(s));
            assert_eq!(out.len(), 1, "second {s}");
            assert!(out[0].create, "{out:?}");
            assert_eq!(out[0].count, 3);
            created.insert(out[0].key.0.name.clone());
        }
        assert_eq!(created.len(), 20, "every object got its Event");
        // Then the updates of the first five, one a second.
        let out = g.flush(t + Duration::from_secs(16));
        assert!(
            matches!(&out[..], [w] if !w.create && w.count == 3),
            "{out:?}"
        );
        assert_eq!(g.held(), 4);
    }

    #[test]
    fn many_different_notes_on_one_object_are_combined() {
        let t = Instant::now();
        let mut g = gate(
            Limits {
                per_object_burst: 100,
                global_burst: 100,
                ..limits()
            },
            0,
            t,
        );
        let s = subject("a", "AllocIPFailed");
        let writes: Vec<_> = (0..8)
            .filter_map(|i| g.offer(t, s.clone(), &format!("request {i} failed"), ()))
            .collect();
        let creates = writes.iter().filter(|w| w.create).count();
        // Three notes of their own, then one combined Event, then updates.
        assert_eq!(creates, 4);
        let last = writes.last().unwrap();
        assert!(!last.create);
        assert_eq!(last.note, format!("{COMBINED_PREFIX}request 7 failed"));
        assert_eq!(last.count, 5);
        // A note seen before within the window keeps its own Event.
        let w = g.offer(t, s.clone(), "request 0 failed", ()).unwrap();
        assert!(!w.create && w.count == 2, "{w:?}");
        // After the window, notes count afresh.
        let later = t + Duration::from_secs(601);
        let w = g.offer(later, s, "request 99 failed", ()).unwrap();
        assert!(w.create && w.note == "request 99 failed", "{w:?}");
    }

    #[test]
    fn a_failed_create_is_created_again_and_a_failed_update_is_retried() {
        let t = Instant::now();
        let mut g = gate(limits(), 0, t);
        let s = subject("a", "Failed");
        let w = g.offer(t, s.clone(), "boom", ()).unwrap();
        g.failed(&w);
        assert_eq!(g.remembered(), 0);
        let w = g.offer(t, s.clone(), "boom", ()).unwrap();
        assert!(w.create && w.count == 1);
        let later = t + Duration::from_secs(60);
        let u = g.offer(later, s, "boom", ()).unwrap();
        assert!(!u.create && u.count == 2);
        g.failed(&u);
        let again = g.flush(later + Duration::from_secs(10));
        assert!(
            matches!(&again[..], [w] if !w.create && w.count == 2),
            "{again:?}"
        );
    }

    #[test]
    fn held_events_outlive_written_ones_when_series_are_forgotten() {
        let t = Instant::now();
        let mut g = gate(
            Limits {
                global_burst: 50,
                global_per_second: 1000.0,
                ..limits()
            },
            0,
            t,
        );
        // 50 written at once, then 60 held (no global token left).
        let mut written = 0;
        for i in 0..110 {
            written += usize::from(
                g.offer(t, subject(&format!("p{i}"), "R"), "n", ())
                    .is_some(),
            );
        }
        assert_eq!(written, 50);
        assert!(g.remembered() <= 100);
        assert_eq!(g.held(), 60, "no held Event was forgotten");
        let mut out = g.flush(t + Duration::from_secs(1));
        out.extend(g.flush(t + Duration::from_secs(2)));
        assert_eq!(out.len(), 60);
        assert!(out.iter().all(|w| w.create));
    }

    #[test]
    fn memory_is_bounded_by_max_series_and_the_window() {
        let t = Instant::now();
        let mut g = gate(
            Limits {
                global_burst: 10_000,
                ..limits()
            },
            0,
            t,
        );
        for i in 0..1000 {
            g.offer(t, subject(&format!("p{i}"), "R"), "n", ());
        }
        assert!(g.remembered() <= 100, "{}", g.remembered());
        assert!(g.flush(t + Duration::from_secs(601)).is_empty());
        assert_eq!(g.remembered(), 0);
        assert!(g.subjects.is_empty());
    }
}
