//! The queue actor's hot path: sessions asking for tasks, and the
//! dispatch that hands ready tasks to the sessions waiting for them, first
//! come first served, with a burst split evenly among them. A lease answer
//! that never reaches its session is undone here too. Split from
//! `actor.rs` to keep the path every task takes in one place; the state it
//! changes is the actor's.

use std::time::Duration;

use tokio::time::Instant;

use super::Queue;
use crate::{
    domain::{QueueName, Target, TaskId, TaskState},
    metrics::SUBMIT_TO_DISPATCH_SECONDS,
    queue::{LeaseRequest, entry::Placement},
};

impl Queue {
    /// A session asks for tasks: its request waits until dispatch, at the
    /// end of this turn, serves it or leaves it waiting.
    pub(super) fn handle_lease(&mut self, request: LeaseRequest) {
        if request.respond_to.is_closed() || request.max == 0 {
            return;
        }
        // Park even when tasks are ready: dispatch serves waiting sessions in
        // arrival order, so a late asker never jumps the line.
        self.backlog
            .mark_dirty(&Target::Client(request.client.clone()));
        for queue in request.queues.iter() {
            self.backlog.mark_dirty(&Target::Queue(queue.clone()));
        }
        self.waiting.park(request);
    }

    /// Hands waiting sessions the tasks that became pending (or the sessions
    /// that arrived) this turn. A burst is split evenly across the sessions
    /// waiting on its queue, first come first served, instead of filling the
    /// first session's whole credit.
    pub(in crate::queue) fn dispatch(&mut self) {
        // Serving a session that has gone puts its tasks back in line, which
        // lists them again; go on until nothing is left to offer.
        while let Some(target) = self.backlog.pop_dirty() {
            match &target {
                Target::Client(client) => {
                    if let Some(request) = self.waiting.take_client(client) {
                        let max = request.max as usize;
                        self.serve(request, max);
                    }
                }
                Target::Queue(queue) => self.dispatch_queue(&target, queue),
            }
        }
    }

    fn dispatch_queue(&mut self, target: &Target, queue: &QueueName) {
        let mut waiters = self.waiting.count(queue);
        while waiters > 0 {
            let ready = self.backlog.ready(target);
            if ready == 0 {
                break;
            }
            let Some(request) = self.waiting.take_next(queue) else {
                break;
            };
            self.serve(request, ready.div_ceil(waiters));
            waiters -= 1;
        }
    }

    /// Answers a lease request with up to `limit` tasks (never more than it
    /// asked for): the worker's own tasks first, then its queues in turn.
    /// With nothing to give (every slot was stale) the request waits again.
    fn serve(&mut self, request: LeaseRequest, limit: usize) {
        let max = limit.min(request.max as usize);
        let mut ids = Vec::with_capacity(max.min(64));
        let own = Target::Client(request.client.clone());
        self.backlog.take_ready(&own, max, &self.tasks, &mut ids);
        match &request.queues[..] {
            [queue] => {
                let target = Target::Queue(queue.clone());
                self.backlog.take_ready(&target, max, &self.tasks, &mut ids);
            }
            queues => self.take_in_turn(queues, request.turn, max, &mut ids),
        }
        if ids.is_empty() {
            self.handle_lease(request);
            return;
        }
        let mut deliveries = Vec::with_capacity(ids.len());
        let now_ms = self.clock_ms(Instant::now());
        // Recorded once the deliveries are on their way, and once per task.
        let mut first_waits = Vec::new();
        for id in ids {
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            let in_line = entry.leave_pending();
            self.backlog.remove(&entry.target, in_line);
            if !entry.wait_recorded {
                first_waits.push((id, now_ms.saturating_sub(entry.due_ms())));
            }
            deliveries.push(entry.deliver(id, &request.client));
        }
        for delivery in &deliveries {
            self.record_delivered(
                delivery.task_id,
                delivery.attempt,
                &request.client,
                request.session,
            );
        }
        let count = deliveries.len();
        self.in_flight_count += count;
        match request.respond_to.send(deliveries) {
            Ok(()) => {
                self.metrics.dispatched.increment(count as u64);
                for (id, waited_ms) in first_waits {
                    SUBMIT_TO_DISPATCH_SECONDS.record(Duration::from_millis(waited_ms));
                    if let Some(entry) = self.tasks.get_mut(&id) {
                        entry.wait_recorded = true;
                    }
                }
            }
            Err(returned) => {
                // The session ended before the answer reached it: nothing left
                // the server, so the tasks go back to the front as they were.
                let ids: Vec<TaskId> = returned.iter().map(|d| d.task_id).collect();
                self.undo_deliveries(&ids);
            }
        }
    }

    /// Takes up to `max` ready tasks from a worker's several queues so that
    /// none starves behind a busy one: this lease starts at queue
    /// `turn % len` (the session counts its leases, so the start moves
    /// round), and what is left of the credit is split evenly among the
    /// queues that still have ready tasks, round after round.
    fn take_in_turn(&mut self, queues: &[QueueName], turn: u32, max: usize, ids: &mut Vec<TaskId>) {
        if queues.is_empty() {
            return;
        }
        let start = turn as usize % queues.len();
        let mut open: Vec<&QueueName> = queues[start..].iter().chain(&queues[..start]).collect();
        while ids.len() < max && !open.is_empty() {
            let share = (max - ids.len()).div_ceil(open.len());
            let mut kept = 0;
            for i in 0..open.len() {
                let queue = open[i];
                let want = (ids.len() + share).min(max);
                let before = ids.len();
                self.backlog
                    .take_ready(&Target::Queue(queue.clone()), want, &self.tasks, ids);
                // A queue that gave less than asked has nothing more ready.
                if ids.len() - before == want - before && want > before {
                    open[kept] = queue;
                    kept += 1;
                }
            }
            open.truncate(kept);
        }
    }

    /// Takes back tasks that were leased but never pushed to the worker.
    pub(super) fn undo_deliveries(&mut self, ids: &[TaskId]) {
        for id in ids.iter().rev() {
            let Some(entry) = self.tasks.get_mut(id) else {
                continue;
            };
            if entry.state != TaskState::Delivered {
                continue;
            }
            entry.attempts = entry.attempts.saturating_sub(1);
            self.in_flight_count = self.in_flight_count.saturating_sub(1);
            self.make_pending(*id, Placement::Front);
        }
    }
}
