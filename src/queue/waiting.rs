//! Sessions waiting for tasks: the lease requests the queue could not (or
//! did not yet) answer, at most one per session, and the order in which
//! they are served.
//!
//! Each queue keeps its waiting sessions first come, first served. A
//! session waiting on several queues is listed in each; once it is served
//! from one (or asks again, or goes), its entries elsewhere are stale. A
//! ticket per request tells a current entry from a stale one, so nothing
//! is searched on removal; stale entries are skipped when met and swept
//! when a list grows long. Tasks sent to a worker by id are offered to the
//! worker's waiting session directly.

use std::collections::{HashMap, VecDeque, hash_map::Entry};

// Server-made random ids only: keys a client chooses keep std's SipHash.
use rustc_hash::FxHashMap;

use super::LeaseRequest;
use crate::domain::{ClientId, QueueName, SessionId};

/// A session's place in a queue's list: current while its ticket matches
/// the session's waiting request.
type Place = (SessionId, u64);

/// The waiting lease requests; see the module docs.
#[derive(Debug)]
pub(super) struct Waiting {
    /// Lease requests waiting for tasks, one per session.
    parked: FxHashMap<SessionId, LeaseRequest>,
    /// Waiting sessions per queue, first come first served. Entries whose
    /// ticket no longer matches `parked` are stale and skipped.
    queues: HashMap<QueueName, VecDeque<Place>>,
    /// The waiting session of each worker, for tasks targeted at it.
    clients: HashMap<ClientId, SessionId>,
    next_ticket: u64,
}

impl Default for Waiting {
    fn default() -> Self {
        Self {
            parked: FxHashMap::default(),
            queues: HashMap::new(),
            clients: HashMap::new(),
            next_ticket: 1,
        }
    }
}

impl Waiting {
    /// Puts a request at the back of each of its queues' lists (replacing
    /// any earlier request of its session) and makes it its worker's
    /// waiting session.
    pub(super) fn park(&mut self, mut request: LeaseRequest) {
        request.ticket = self.next_ticket;
        self.next_ticket += 1;
        let parked_count = self.parked.len() + 1;
        for queue in request.queues.iter() {
            let line = self.queues.entry(queue.clone()).or_default();
            line.push_back((request.session, request.ticket));
            // A session parked on several queues but served from one leaves
            // stale entries behind; sweep them before they pile up.
            if line.len() > 2 * parked_count + 16 {
                let parked = &self.parked;
                let (session, ticket) = (request.session, request.ticket);
                line.retain(|(s, t)| {
                    (*s == session && *t == ticket) || parked.get(s).is_some_and(|r| r.ticket == *t)
                });
            }
        }
        self.clients.insert(request.client.clone(), request.session);
        self.parked.insert(request.session, request);
    }

    fn is_current(&self, (session, ticket): Place) -> bool {
        self.parked
            .get(&session)
            .is_some_and(|r| r.ticket == ticket)
    }

    /// Sessions waiting on `queue`.
    pub(super) fn count(&self, queue: &QueueName) -> usize {
        self.queues.get(queue).map_or(0, |line| {
            line.iter().filter(|place| self.is_current(**place)).count()
        })
    }

    /// Queues that have had sessions waiting (some may have none now).
    pub(super) fn queues(&self) -> impl Iterator<Item = &QueueName> {
        self.queues.keys()
    }

    /// Takes the request of `client`'s waiting session, to serve it.
    pub(super) fn take_client(&mut self, client: &ClientId) -> Option<LeaseRequest> {
        let session = *self.clients.get(client)?;
        let request = self.parked.remove(&session)?;
        self.clients.remove(client);
        Some(request)
    }

    /// Takes the request of the session that has waited longest on
    /// `queue`, to serve it; stale entries on the way are dropped.
    pub(super) fn take_next(&mut self, queue: &QueueName) -> Option<LeaseRequest> {
        let line = self.queues.get_mut(queue)?;
        let request = loop {
            let (session, ticket) = line.pop_front()?;
            if let Entry::Occupied(parked) = self.parked.entry(session)
                && parked.get().ticket == ticket
            {
                break parked.remove();
            }
        };
        self.unlist_client(&request);
        Some(request)
    }

    /// The session has ended: its request, if one waits, is dropped.
    pub(super) fn remove_session(&mut self, session: SessionId) {
        if let Some(request) = self.parked.remove(&session) {
            self.unlist_client(&request);
        }
    }

    /// Unlists `request` as its worker's waiting session, unless a newer
    /// session of the worker took its place.
    fn unlist_client(&mut self, request: &LeaseRequest) {
        if self.clients.get(&request.client) == Some(&request.session) {
            self.clients.remove(&request.client);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::sync::oneshot;

    use super::*;

    fn queue(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    fn request(session: SessionId, client: &str, queues: &[&str]) -> LeaseRequest {
        let (respond_to, _answer) = oneshot::channel();
        LeaseRequest {
            session,
            client: ClientId::parse(client).unwrap(),
            queues: queues.iter().map(|q| queue(q)).collect::<Vec<_>>().into(),
            max: 1,
            respond_to,
            ticket: 0,
            turn: 0,
        }
    }

    /// Sessions are served in the order they came, queue by queue.
    #[test]
    fn first_come_first_served() {
        let mut waiting = Waiting::default();
        let sessions: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
        for (i, session) in sessions.iter().enumerate() {
            waiting.park(request(*session, &format!("w{i}"), &["a"]));
        }
        assert_eq!(waiting.count(&queue("a")), 3);
        let served: Vec<SessionId> = std::iter::from_fn(|| waiting.take_next(&queue("a")))
            .map(|r| r.session)
            .collect();
        assert_eq!(served, sessions);
        assert_eq!(waiting.count(&queue("a")), 0);
    }

    /// A session served from one queue, or asking again, leaves only stale
    /// entries behind: it is served once, at its newest place.
    #[test]
    fn stale_entries_are_skipped() {
        let mut waiting = Waiting::default();
        let (s1, s2) = (SessionId::generate(), SessionId::generate());
        waiting.park(request(s1, "w1", &["a", "b"]));
        waiting.park(request(s2, "w2", &["b"]));
        assert_eq!(waiting.take_next(&queue("a")).unwrap().session, s1);
        assert_eq!(waiting.count(&queue("b")), 1);
        assert_eq!(waiting.take_next(&queue("b")).unwrap().session, s2);
        assert!(waiting.take_next(&queue("b")).is_none());

        waiting.park(request(s1, "w1", &["a"]));
        waiting.park(request(s2, "w2", &["a"]));
        waiting.park(request(s1, "w1", &["a"]));
        let served: Vec<SessionId> = std::iter::from_fn(|| waiting.take_next(&queue("a")))
            .map(|r| r.session)
            .collect();
        assert_eq!(served, vec![s2, s1]);
    }

    /// Tasks for a worker reach its newest waiting session; an older
    /// session of the same worker going away does not unlist it.
    #[test]
    fn workers_find_their_waiting_session() {
        let mut waiting = Waiting::default();
        let (old, new) = (SessionId::generate(), SessionId::generate());
        let client = ClientId::parse("w").unwrap();
        waiting.park(request(old, "w", &["a"]));
        waiting.park(request(new, "w", &["a"]));
        waiting.remove_session(old);
        assert_eq!(waiting.count(&queue("a")), 1);
        assert_eq!(waiting.take_client(&client).unwrap().session, new);
        assert!(waiting.take_client(&client).is_none());
        assert!(waiting.take_next(&queue("a")).is_none(), "served already");
    }

    /// Stale entries of a queue nobody serves are swept as it grows.
    #[test]
    fn stale_entries_do_not_pile_up() {
        let mut waiting = Waiting::default();
        let session = SessionId::generate();
        for _ in 0..1000 {
            waiting.park(request(session, "w", &["a", "idle"]));
            waiting.take_next(&queue("a"));
        }
        assert!(waiting.queues.get(&queue("idle")).unwrap().len() < 20);
    }
}
