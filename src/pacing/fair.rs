//! The order of the pacing line: weighted fair among callers, arrival
//! order within each.
//!
//! The algorithm is start-time fair queuing (SFQ; Goyal, Vin and Cheng,
//! "Start-time Fair Queueing", SIGCOMM 1996), with every request costing
//! one slot. In words: each caller has a virtual clock that advances by
//! `1 / weight` for each of its requests, so a caller of weight 3 moves
//! through virtual time three times slower than one of weight 1. A request
//! is tagged, on arrival, with the later of the line's virtual time and
//! the tag after its caller's previous request; the line serves the
//! smallest tag first (ties in arrival order), and its virtual time is the
//! tag of the request served last. So:
//!
//! - while several callers have requests waiting, each gets slots in
//!   proportion to its weight: a caller of weight `w` gets at least
//!   `w / Σw` of them (give or take one request);
//! - a caller alone in the line gets every slot: nothing is held back for
//!   callers that are not asking (the line is work-conserving);
//! - a caller that was idle starts at the line's virtual time, not at its
//!   old tag: idling earns no credit to burst with later;
//! - within a caller the tags grow, so its requests go in arrival order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::layers::caller::Caller;

/// Virtual time of one request of weight 1. A weight `w` costs
/// `UNIT / w`, which for the weights allowed (up to 1,000) is exact to
/// within one part in a thousand.
const UNIT: u64 = 1 << 20;

/// Past this many callers remembered with nobody waiting, their tags are
/// forgotten (they would all start at the virtual time anyway, but for
/// the last request of each).
const MAX_REMEMBERED: usize = 1024;

/// A request's place in the fair order: its start tag, then its arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tag {
    start: u64,
    arrival: u64,
}

/// A request's tag with what it takes back if it leaves unserved.
#[derive(Debug, Clone)]
pub(crate) struct Tagged {
    pub(crate) tag: Tag,
    caller: Arc<str>,
    /// The tag its caller's next request starts at.
    finish: u64,
}

/// The waiting requests in fair order, and each caller's next tag.
#[derive(Debug, Default)]
pub(crate) struct FairLine {
    waiting: BTreeMap<Tag, Arc<Notify>>,
    /// Per caller: where its next request's tag starts at the earliest.
    next_start: HashMap<Arc<str>, u64>,
    /// The start tag of the request served last.
    virtual_now: u64,
    arrivals: u64,
}

fn cost(weight: u32) -> u64 {
    UNIT / u64::from(weight.max(1))
}

impl FairLine {
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// The tag a request of `caller` arriving now would take (taken only
    /// by [`FairLine::join`]).
    pub(crate) fn tag(&mut self, caller: &Caller) -> Tagged {
        let last = self.next_start.get(&caller.name).copied().unwrap_or(0);
        let start = self.virtual_now.max(last);
        self.arrivals += 1;
        Tagged {
            tag: Tag {
                start,
                arrival: self.arrivals,
            },
            caller: Arc::clone(&caller.name),
            finish: start + cost(caller.weight),
        }
    }

    /// How many waiting requests go before `tag`.
    pub(crate) fn ahead_of(&self, tag: Tag) -> usize {
        self.waiting.range(..tag).count()
    }

    /// The request whose turn it is.
    pub(crate) fn first(&self) -> Option<Tag> {
        self.waiting.keys().next().copied()
    }

    /// Puts a tagged request in line; `turn` is woken when it may have
    /// become the first.
    pub(crate) fn join(&mut self, tagged: &Tagged, turn: Arc<Notify>) {
        self.next_start
            .insert(Arc::clone(&tagged.caller), tagged.finish);
        self.waiting.insert(tagged.tag, turn);
    }

    /// A request of `caller` sent without waiting (the line was empty).
    pub(crate) fn served_at_once(&mut self, caller: &Caller) {
        if self.next_start.len() >= MAX_REMEMBERED {
            self.next_start.clear();
        }
        let tagged = self.tag(caller);
        self.next_start.insert(tagged.caller, tagged.finish);
        self.virtual_now = tagged.tag.start;
    }

    /// The first request is sent: the virtual time moves to its tag.
    pub(crate) fn served(&mut self, tag: Tag) {
        self.waiting.remove(&tag);
        self.virtual_now = self.virtual_now.max(tag.start);
        // Callers whose next tag the virtual time has reached would start
        // at the virtual time anyway: forgetting them changes nothing.
        if self.next_start.len() > 2 * self.waiting.len() + 64 {
            let now = self.virtual_now;
            self.next_start.retain(|_, next| *next > now);
        }
        self.wake_first();
    }

    /// A request leaves unserved (refused, or its client went away). If it
    /// was its caller's last, the caller's next tag is taken back.
    pub(crate) fn left(&mut self, tagged: &Tagged) {
        if self.waiting.remove(&tagged.tag).is_none() {
            return;
        }
        if let Some(next) = self.next_start.get_mut(&tagged.caller) {
            if *next == tagged.finish {
                *next = tagged.tag.start;
            }
        }
        self.wake_first();
    }

    fn wake_first(&self) {
        if let Some(turn) = self.waiting.values().next() {
            turn.notify_one();
        }
    }
}

/// A turnstile in fair order, for a line whose first request does
/// something that takes a while (the shared budget's reservation, a round
/// trip to Redis) rather than ask a limiter: one request at a time holds
/// the turn, and turns go in the [`FairLine`]'s order.
#[derive(Debug, Default)]
pub(crate) struct FairGate {
    line: Mutex<FairLine>,
}

impl FairGate {
    fn line(&self) -> MutexGuard<'_, FairLine> {
        self.line.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until it is `caller`'s request's turn. Dropping the [`Turn`]
    /// (or this future) without [`Turn::served`] leaves the line.
    pub(crate) async fn turn(&self, caller: &Caller) -> Turn<'_> {
        let wake = Arc::new(Notify::new());
        let tagged = {
            let mut line = self.line();
            let tagged = line.tag(caller);
            line.join(&tagged, Arc::clone(&wake));
            tagged
        };
        let turn = Turn {
            gate: self,
            tagged,
            served: false,
        };
        // `notify_one` keeps a permit for a waiter not yet waiting, so a
        // wake-up between the check and the wait is not lost.
        while self.line().first() != Some(turn.tagged.tag) {
            wake.notified().await;
        }
        turn
    }
}

/// The turn at a [`FairGate`], held until the request is served or leaves.
pub(crate) struct Turn<'a> {
    gate: &'a FairGate,
    tagged: Tagged,
    served: bool,
}

impl Turn<'_> {
    /// The request got its slot: the next in fair order takes the turn.
    pub(crate) fn served(mut self) {
        self.gate.line().served(self.tagged.tag);
        self.served = true;
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.served {
            self.gate.line().left(&self.tagged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, weight: u32) -> Caller {
        Caller::standalone(name, weight)
    }

    /// Keeps `backlog` requests of each caller waiting and serves `n`;
    /// returns who was served, in order.
    fn serve(callers: &[(Caller, usize)], n: usize) -> Vec<String> {
        let mut line = FairLine::default();
        let mut tags: Vec<(Tag, String)> = Vec::new();
        let add = |line: &mut FairLine, c: &Caller, tags: &mut Vec<(Tag, String)>| {
            let t = line.tag(c);
            line.join(&t, Arc::new(Notify::new()));
            tags.push((t.tag, c.name.to_string()));
        };
        for (c, backlog) in callers {
            for _ in 0..*backlog {
                add(&mut line, c, &mut tags);
            }
        }
        let mut out = Vec::new();
        for _ in 0..n {
            let first = line.first().unwrap();
            let name = tags.iter().find(|(t, _)| *t == first).unwrap().1.clone();
            line.served(first);
            // Closed loop: the caller sends its next one at once.
            let c = &callers.iter().find(|(c, _)| *c.name == name).unwrap().0;
            add(&mut line, c, &mut tags);
            out.push(name);
        }
        out
    }

    fn share(served: &[String], name: &str) -> f64 {
        served.iter().filter(|n| *n == name).count() as f64 / served.len() as f64
    }

    #[test]
    fn equal_weights_share_equally_whatever_the_backlog() {
        let served = serve(&[(caller("a", 1), 12), (caller("b", 1), 1)], 1000);
        assert!(
            (share(&served, "b") - 0.5).abs() < 0.01,
            "{}",
            share(&served, "b")
        );
    }

    #[test]
    fn weights_3_to_1_share_75_25() {
        let served = serve(&[(caller("a", 3), 6), (caller("b", 1), 6)], 1000);
        assert!(
            (share(&served, "a") - 0.75).abs() < 0.01,
            "{}",
            share(&served, "a")
        );
    }

    #[test]
    fn a_caller_alone_is_served_in_arrival_order() {
        let mut line = FairLine::default();
        let a = caller("a", 1);
        let tags: Vec<Tag> = (0..5)
            .map(|_| {
                let t = line.tag(&a);
                line.join(&t, Arc::new(Notify::new()));
                t.tag
            })
            .collect();
        let mut order = Vec::new();
        while let Some(first) = line.first() {
            line.served(first);
            order.push(first);
        }
        assert_eq!(order, tags);
    }

    #[test]
    fn an_idle_caller_earns_no_credit_and_one_that_leaves_gives_its_tag_back() {
        let mut line = FairLine::default();
        let (a, b) = (caller("a", 1), caller("b", 1));
        for _ in 0..10 {
            line.served_at_once(&a);
        }
        // b was idle: it starts at the virtual time, level with a.
        let tb = line.tag(&b);
        let ta = line.tag(&a);
        assert!(tb.tag.start <= ta.tag.start);
        line.join(&tb, Arc::new(Notify::new()));
        line.left(&tb);
        assert!(line.is_empty());
        assert_eq!(line.tag(&b).tag.start, tb.tag.start);
    }
}
