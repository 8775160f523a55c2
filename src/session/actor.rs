//! The session actor's loop, state and handlers.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    GoneReason, Notice, Rejection, SessionDeps, SessionHandle, SessionMsg, SessionTiming,
    StreamItem,
    end::End,
    outbox::{self, Outbox, Pushed},
    worker::{WorkerStats, unix_ms_now},
};
use crate::{
    alarm::Alarm,
    domain::{
        AckKind, ClientId, Delivery, NewTask, QueueName, Registration, Resume, SessionId, Target,
        TaskId, TaskState, WorkerOp,
    },
    metrics::{DISPATCH_TO_ACK_SECONDS, DISPATCH_TO_RECEIPT_SECONDS, LatencyBatch, SessionMetrics},
    queue::{Completion, QueueHandle, Release, ReleaseReason},
    registry::RegistryHandle,
};

/// One task this session's worker holds (or held: a tombstone).
#[derive(Debug, Clone)]
pub(crate) struct Held {
    task: TaskId,
    attempt: u32,
    /// The task's lease length, for extensions that name none.
    lease: Duration,
    /// When it was pushed down the stream, for the latency histograms.
    pushed_at: Instant,
    lease_until: Instant,
    receipt_until: Option<Instant>,
    /// Set when the task was taken back. The entry stays (a tombstone) so
    /// that a seed client's positional acks stay aligned with its tasks.
    gone: Option<GoneReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Lease,
    Receipt,
}

/// The latency samples of one batch of worker operations.
struct Latencies {
    receipt: LatencyBatch,
    ack: LatencyBatch,
}

#[derive(Debug)]
pub(crate) struct Session {
    id: SessionId,
    client: ClientId,
    generated_id: bool,
    queues: Arc<[QueueName]>,
    max_in_flight: u32,
    receipts: bool,
    keepalive: Option<Duration>,
    timing: SessionTiming,
    inbox: mpsc::Receiver<SessionMsg>,
    outbox: Outbox,
    notices: async_broadcast::Receiver<Notice>,
    pub(super) queue: QueueHandle,
    pub(super) registry: RegistryHandle,
    /// Delivered tasks, oldest first (seed acks take the front).
    held: VecDeque<Held>,
    /// Entries of `held` that are not tombstones.
    live: usize,
    /// Lease and receipt deadlines of held tasks, earliest first.
    deadlines: BTreeSet<(Instant, Deadline, TaskId, u32)>,
    /// The outstanding lease request, if any.
    lease: Option<oneshot::Receiver<Vec<Delivery>>>,
    /// Cancels for tasks this session does not hold yet: they may be in the
    /// outstanding lease's answer, and must not be pushed.
    early_cancels: Vec<(TaskId, u32)>,
    draining: bool,
    /// The drain came from an operator, not the server stopping.
    operator_drain: bool,
    /// A receipt was missed: send nothing new until the worker shows life.
    suspected: bool,
    last_heard: Instant,
    /// Fires at `next_deadline()`.
    alarm: Alarm,
    detached_until: Option<Instant>,
    stats: Arc<WorkerStats>,
    metrics: SessionMetrics,
}

impl Session {
    pub(super) fn new(
        id: SessionId,
        registration: Registration,
        inbox: mpsc::Receiver<SessionMsg>,
        stream_tx: mpsc::Sender<StreamItem>,
        notices: async_broadcast::Receiver<Notice>,
        deps: &SessionDeps,
        stats: Arc<WorkerStats>,
    ) -> Self {
        let now = Instant::now();
        let extended = registration.receipts || registration.keepalive.is_some();
        Self {
            id,
            client: registration.client_id,
            generated_id: registration.generated_id,
            queues: registration.queues,
            max_in_flight: registration.max_in_flight,
            receipts: registration.receipts,
            keepalive: registration.keepalive,
            timing: deps.timing,
            inbox,
            outbox: Outbox::new(stream_tx, extended, now),
            notices,
            queue: deps.queue.clone(),
            registry: deps.registry.clone(),
            held: VecDeque::new(),
            live: 0,
            deadlines: BTreeSet::new(),
            lease: None,
            early_cancels: Vec::new(),
            draining: false,
            operator_drain: false,
            suspected: false,
            last_heard: now,
            alarm: Alarm::new(),
            detached_until: None,
            stats,
            metrics: SessionMetrics::new(),
        }
    }

    pub(super) fn client(&self) -> &ClientId {
        &self.client
    }

    /// Takes over from this worker's previous session: the tasks the resume
    /// names (at their attempts) stay with the worker, the rest go back.
    /// Returns how many were kept.
    pub(super) async fn take_over(
        &mut self,
        previous: SessionHandle,
        resume: Option<Resume>,
    ) -> usize {
        let held = match resume {
            Some(resume) if resume.session == previous.id() => resume.held,
            _ => Vec::new(),
        };
        let resuming = !held.is_empty();
        let taken = previous.hand_over(held).await;
        for mut entry in taken {
            // A cancel may have reached the old session after it handed
            // over; only tasks the queue still has with this worker stay.
            let current = self.queue.get(entry.task).await.is_ok_and(|info| {
                info.state == TaskState::Delivered
                    && info.worker.as_ref() == Some(&self.client)
                    && info.attempts == entry.attempt
            });
            if !current {
                continue;
            }
            // Claiming the task proves the worker received it.
            entry.receipt_until = None;
            self.track(entry);
        }
        if resuming {
            self.metrics.sessions_resumed.increment(1);
            info!(kept = self.live, "session resumed");
        }
        self.publish_in_flight();
        self.live
    }

    pub(super) async fn run(mut self) {
        self.metrics
            .worker_credit
            .increment(f64::from(self.max_in_flight));
        let end = self.serve().await;
        self.finish(end).await;
    }

    /// Credit the worker has not used: its limit less what it holds.
    fn free_credit(&self) -> u32 {
        self.max_in_flight.saturating_sub(self.live as u32)
    }

    /// How many more tasks to ask for: the worker's free credit, but never
    /// more than the stream buffer has room for.
    fn credit(&self) -> u32 {
        self.free_credit().min(self.outbox.room())
    }

    /// The worker has credit left but the stream buffer is full: it is slow
    /// to read, and the session waits for it instead of asking for tasks.
    fn waiting_for_room(&self) -> bool {
        self.outbox.is_attached() && self.free_credit() > 0 && self.credit() == 0
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.deadlines.first().map(|(at, ..)| *at);
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        if let Some(until) = self.detached_until {
            consider(until);
        } else if let Some(keepalive) = self.keepalive {
            consider(self.outbox.last_sent() + keepalive);
            consider(self.last_heard + self.timing.liveness_timeout);
        }
        next
    }

    async fn serve(&mut self) -> End {
        loop {
            if self.draining && self.live == 0 {
                return End::Drained;
            }
            let attached = self.outbox.is_attached();
            if attached
                && self.lease.is_none()
                && !self.draining
                && !self.suspected
                && self.credit() > 0
            {
                match self
                    .queue
                    .lease(
                        self.id,
                        self.client.clone(),
                        self.queues.clone(),
                        self.credit(),
                    )
                    .await
                {
                    Ok(lease) => self.lease = Some(lease),
                    Err(_) => return End::Shutdown,
                }
            }
            let next = self.next_deadline();
            let room_wanted = self
                .waiting_for_room()
                .then(|| self.outbox.room_wanted(self.free_credit()));
            let lease_slot = &mut self.lease;
            let lease = async {
                match lease_slot.as_mut() {
                    Some(lease) => lease.await,
                    None => std::future::pending().await,
                }
            };
            let stream_tx = self.outbox.sender();
            let closed = outbox::closed(stream_tx.as_ref());
            let room = outbox::wait_for_room(stream_tx.as_ref(), room_wanted);
            self.alarm.set(next);
            let timer = self.alarm.fired();
            tokio::select! {
                biased;
                notice = self.notices.recv() => match notice {
                    Ok(Notice::Drain) => {
                        self.draining = true;
                        self.cancel_lease().await;
                    }
                    Ok(Notice::ShutdownNow) | Err(async_broadcast::RecvError::Closed) => {
                        return End::Shutdown;
                    }
                    Ok(Notice::Broadcast(task)) => self.take_broadcast_copy(&task).await,
                    // The channel does not overflow (the server waits for
                    // room instead), so this is never seen; nothing to do.
                    Err(async_broadcast::RecvError::Overflowed(missed)) => {
                        warn!(missed, "session missed server notices");
                    }
                },
                () = closed => {
                    if let Some(end) = self.on_stream_closed().await {
                        return end;
                    }
                }
                msg = self.inbox.recv() => match msg {
                    Some(msg) => {
                        if let Some(end) = self.handle(msg).await {
                            return end;
                        }
                    }
                    // Unreachable while the registry holds our handle; if it
                    // ever happens, nothing more can reach us, so stop.
                    None => return End::Shutdown,
                },
                deliveries = lease => {
                    self.lease = None;
                    match deliveries {
                        Ok(deliveries) => {
                            if let Some(end) = self.push(deliveries).await {
                                return end;
                            }
                        }
                        Err(_) => return End::Shutdown,
                    }
                }
                () = timer => {
                    if let Some(end) = self.on_deadlines(Instant::now()).await {
                        return end;
                    }
                }
                () = room => {}
            }
        }
    }

    /// The stream is gone. A worker with its own id that holds tasks gets
    /// the resume grace period; anyone else ends now.
    async fn on_stream_closed(&mut self) -> Option<End> {
        self.outbox.detach();
        self.cancel_lease().await;
        let grace = self.timing.resume_grace;
        if self.generated_id || self.live == 0 || grace.is_zero() || self.draining {
            return Some(End::Disconnected { by_operator: false });
        }
        debug!(held = self.live, "stream dropped; waiting for a resume");
        self.detached_until = Some(Instant::now() + grace);
        let _ = self.registry.detached(self.client.clone(), self.id).await;
        None
    }

    async fn handle(&mut self, msg: SessionMsg) -> Option<End> {
        match msg {
            SessionMsg::Apply {
                ops,
                stop_at_error,
                respond_to,
            } => {
                let answers = self.apply(ops, stop_at_error).await;
                let _ = respond_to.send(answers);
            }
            SessionMsg::Heard => self.heard(),
            SessionMsg::Cancelled { task, attempt } => match self.position_of(task, attempt) {
                Some(i) if self.held[i].gone.is_none() => {
                    self.bury(i, GoneReason::Cancelled);
                    self.outbox.send_cancel(task, attempt);
                    self.publish_in_flight();
                }
                Some(_) => {}
                // Not here yet: it may be in the answer to our lease request.
                None if self.lease.is_some() => self.early_cancels.push((task, attempt)),
                None => {}
            },
            SessionMsg::HandOver { held, respond_to } => {
                let kept = self.hand_over(&held).await;
                let _ = respond_to.send(kept);
                return Some(End::HandedOver);
            }
            SessionMsg::Drain => {
                info!("drained by an operator");
                self.draining = true;
                self.operator_drain = true;
                self.cancel_lease().await;
            }
            SessionMsg::Disconnect => {
                info!("disconnected by an operator");
                return Some(End::Disconnected { by_operator: true });
            }
        }
        None
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.suspected = false;
    }

    /// The entry for `task`: the live one if any, else its latest
    /// tombstone. The same task can be here twice, dead and alive, when it
    /// came back to this worker after its lease ran out.
    fn position(&self, task: TaskId) -> Option<usize> {
        self.held
            .iter()
            .position(|h| h.task == task && h.gone.is_none())
            .or_else(|| self.held.iter().rposition(|h| h.task == task))
    }

    fn position_of(&self, task: TaskId, attempt: u32) -> Option<usize> {
        self.held
            .iter()
            .position(|h| h.task == task && h.attempt == attempt)
    }

    /// Starts tracking a delivered (or taken-over) task.
    fn track(&mut self, entry: Held) {
        self.schedule(&entry);
        self.held.push_back(entry);
        self.live += 1;
    }

    fn schedule(&mut self, entry: &Held) {
        let (task, attempt) = (entry.task, entry.attempt);
        self.deadlines
            .insert((entry.lease_until, Deadline::Lease, task, attempt));
        if let Some(at) = entry.receipt_until {
            self.deadlines
                .insert((at, Deadline::Receipt, task, attempt));
        }
    }

    fn unschedule(&mut self, entry: &Held) {
        let (task, attempt) = (entry.task, entry.attempt);
        self.deadlines
            .remove(&(entry.lease_until, Deadline::Lease, task, attempt));
        if let Some(at) = entry.receipt_until {
            self.deadlines
                .remove(&(at, Deadline::Receipt, task, attempt));
        }
    }

    /// Turns a held task into a tombstone. Tombstones beyond the worker's
    /// credit are dropped oldest first: they only serve positional acks.
    fn bury(&mut self, i: usize, why: GoneReason) {
        let entry = self.held[i].clone();
        self.unschedule(&entry);
        self.held[i].gone = Some(why);
        self.live -= 1;
        let limit = self.max_in_flight.max(16) as usize;
        if self.held.len() - self.live > limit
            && let Some(oldest) = self.held.iter().position(|h| h.gone.is_some())
        {
            self.held.remove(oldest);
        }
    }

    fn publish_in_flight(&self) {
        self.stats
            .in_flight
            .store(self.live as u32, Ordering::Relaxed);
    }

    /// Pushes leased tasks down the stream. Returns how the session must
    /// end if the stream cannot take them; whatever was not pushed has been
    /// handed back already.
    async fn push(&mut self, deliveries: Vec<Delivery>) -> Option<End> {
        let mut closed = false;
        let mut unpushed = Vec::new();
        let now = Instant::now();
        let early_cancels = std::mem::take(&mut self.early_cancels);
        for delivery in deliveries {
            if early_cancels.contains(&(delivery.task_id, delivery.attempt)) {
                // Cancelled while on its way here; the queue has it as such.
                continue;
            }
            if closed || !self.outbox.is_attached() {
                unpushed.push(delivery.task_id);
                continue;
            }
            match self.outbox.push(delivery.to_message(self.receipts)) {
                Pushed::Sent => self.track(Held {
                    task: delivery.task_id,
                    attempt: delivery.attempt,
                    lease: delivery.lease,
                    pushed_at: now,
                    lease_until: now + delivery.lease,
                    receipt_until: self.receipts.then(|| now + self.timing.receipt_timeout),
                    gone: None,
                }),
                Pushed::Closed => {
                    closed = true;
                    unpushed.push(delivery.task_id);
                }
                // Credit never asks for more than the buffer has room for,
                // but a control message may have taken the last slot; the
                // task simply goes back, undelivered.
                Pushed::Full => unpushed.push(delivery.task_id),
            }
        }
        self.outbox.sent_at(now);
        self.publish_in_flight();
        if !unpushed.is_empty() {
            self.release(Vec::new(), ReleaseReason::WorkerLost, unpushed, None)
                .await;
        }
        if closed {
            return self.on_stream_closed().await;
        }
        None
    }

    async fn apply(
        &mut self,
        ops: Vec<WorkerOp>,
        stop_at_error: bool,
    ) -> Vec<Result<(), Rejection>> {
        self.heard();
        let now = Instant::now();
        let mut answers = Vec::with_capacity(ops.len());
        let mut completions = Vec::new();
        let mut latencies = Latencies {
            receipt: DISPATCH_TO_RECEIPT_SECONDS.batch(),
            ack: DISPATCH_TO_ACK_SECONDS.batch(),
        };
        for op in ops {
            let answer = self
                .apply_one(op, now, &mut completions, &mut latencies)
                .await;
            let refused = answer.is_err();
            if let Err(Rejection::Stale { .. } | Rejection::Gone { .. }) = &answer {
                self.metrics.stale_acks_refused.increment(1);
            }
            answers.push(answer);
            if refused && stop_at_error {
                break;
            }
        }
        if !completions.is_empty() {
            self.publish_in_flight();
            self.stats
                .last_ack_unix_ms
                .store(unix_ms_now(), Ordering::Relaxed);
            if self
                .queue
                .complete(self.client.clone(), completions)
                .await
                .is_err()
            {
                warn!("queue stopped before acknowledgements were applied");
            }
        }
        answers
    }

    /// Finds the entry an op names and checks its attempt.
    fn find(&self, task: Option<TaskId>, attempt: Option<u32>) -> Result<usize, Rejection> {
        let i = match task {
            None => {
                if self.held.is_empty() {
                    return Err(Rejection::NothingHeld);
                }
                0
            }
            Some(task) => self.position(task).ok_or(Rejection::NotHeld(task))?,
        };
        let entry = &self.held[i];
        if let Some(why) = entry.gone {
            return Err(Rejection::Gone {
                task: entry.task,
                why,
            });
        }
        match attempt {
            Some(given) if given != entry.attempt => Err(Rejection::Stale {
                task: entry.task,
                given,
                held: entry.attempt,
            }),
            _ => Ok(i),
        }
    }

    async fn apply_one(
        &mut self,
        op: WorkerOp,
        now: Instant,
        completions: &mut Vec<Completion>,
        latencies: &mut Latencies,
    ) -> Result<(), Rejection> {
        match op {
            WorkerOp::Ack(ack) => {
                let found = self.find(ack.task_id, ack.attempt);
                if let Err(Rejection::Gone { .. }) = found
                    && ack.task_id.is_none()
                    && !matches!(ack.kind, AckKind::Receipt)
                {
                    // A positional ack consumes the tombstone it lines up with.
                    self.held.pop_front();
                }
                let i = found?;
                match ack.kind {
                    AckKind::Receipt => {
                        if let Some(at) = self.held[i].receipt_until.take() {
                            let entry = &self.held[i];
                            latencies.receipt.record(now - entry.pushed_at);
                            let key = (at, Deadline::Receipt, entry.task, entry.attempt);
                            self.deadlines.remove(&key);
                        }
                    }
                    AckKind::Outcome {
                        outcome,
                        result,
                        retry_after,
                    } => {
                        if let Some(entry) = self.held.remove(i) {
                            latencies.ack.record(now - entry.pushed_at);
                            self.unschedule(&entry);
                            self.live -= 1;
                            completions.push(Completion {
                                task: entry.task,
                                attempt: entry.attempt,
                                outcome,
                                result,
                                retry_after,
                            });
                        }
                    }
                }
                Ok(())
            }
            WorkerOp::Extend {
                task_id,
                attempt,
                lease,
            } => {
                let i = self.find(Some(task_id), attempt)?;
                let entry = &mut self.held[i];
                let old = (
                    entry.lease_until,
                    Deadline::Lease,
                    entry.task,
                    entry.attempt,
                );
                let until = now + lease.unwrap_or(entry.lease).min(self.timing.max_lease);
                entry.lease_until = until;
                let new = (until, Deadline::Lease, entry.task, entry.attempt);
                self.deadlines.remove(&old);
                self.deadlines.insert(new);
                Ok(())
            }
            WorkerOp::Credit(credit) => {
                self.metrics
                    .worker_credit
                    .increment(f64::from(credit) - f64::from(self.max_in_flight));
                self.max_in_flight = credit;
                self.stats.max_in_flight.store(credit, Ordering::Relaxed);
                // The outstanding request asked for the old credit.
                self.cancel_lease().await;
                Ok(())
            }
        }
    }

    /// Fires due lease, receipt, liveness, keepalive and resume deadlines.
    async fn on_deadlines(&mut self, now: Instant) -> Option<End> {
        if let Some(until) = self.detached_until {
            if now >= until {
                debug!("no resume within the grace period");
                return Some(End::Disconnected { by_operator: false });
            }
        } else if let Some(keepalive) = self.keepalive {
            if now >= self.last_heard + self.timing.liveness_timeout {
                self.metrics.sessions_expired.increment(1);
                warn!(
                    timeout_secs = self.timing.liveness_timeout.as_secs(),
                    "worker went silent; expiring its session"
                );
                return Some(End::Expired);
            }
            if now >= self.outbox.last_sent() + keepalive {
                self.outbox.send_keepalive();
            }
        }
        let mut expired = Vec::new();
        let mut missed = Vec::new();
        while let Some((at, kind, task, attempt)) = self.deadlines.first().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(i) = self.position_of(task, attempt) else {
                continue;
            };
            let entry = &self.held[i];
            let current = entry.gone.is_none()
                && match kind {
                    Deadline::Lease => entry.lease_until == at,
                    Deadline::Receipt => entry.receipt_until == Some(at),
                };
            if !current {
                continue;
            }
            let why = match kind {
                Deadline::Lease => {
                    self.metrics.leases_expired.increment(1);
                    expired.push((task, attempt));
                    GoneReason::LeaseExpired
                }
                Deadline::Receipt => {
                    self.metrics.receipts_missed.increment(1);
                    missed.push((task, attempt));
                    self.suspected = true;
                    GoneReason::ReceiptMissed
                }
            };
            self.bury(i, why);
            self.outbox.send_cancel(task, attempt);
        }
        if !expired.is_empty() || !missed.is_empty() {
            self.publish_in_flight();
            // Withdraw our own waiting request first, so the tasks go to
            // another worker if one is waiting rather than straight back here.
            self.cancel_lease().await;
        }
        if !expired.is_empty() {
            self.release(expired, ReleaseReason::LeaseExpired, Vec::new(), None)
                .await;
        }
        if !missed.is_empty() {
            warn!(tasks = missed.len(), "receipt missed; worker suspected");
            self.release(missed, ReleaseReason::ReceiptMissed, Vec::new(), None)
                .await;
        }
        None
    }

    /// A server-wide broadcast: workers of its queue submit themselves a copy.
    async fn take_broadcast_copy(&mut self, task: &crate::queue::BroadcastTask) {
        if !self.outbox.is_attached() || self.draining || !self.queues.contains(&task.queue) {
            return;
        }
        let copy = NewTask {
            target: Some(Target::Client(self.client.clone())),
            text: task.text.clone(),
            payload: task.payload.clone(),
            broadcast: Some(task.id),
            ..Default::default()
        };
        match self.queue.submit(vec![copy]).await {
            Ok(mut answers) => {
                if let Some(Err(error)) = answers.pop() {
                    warn!(%error, broadcast.id = %task.id, "broadcast copy refused");
                }
            }
            Err(error) => warn!(%error, "queue stopped before a broadcast copy was made"),
        }
    }

    /// Gives a resuming session the tasks it names; releases the rest.
    async fn hand_over(&mut self, claimed: &[(TaskId, u32)]) -> Vec<Held> {
        self.cancel_lease().await;
        let mut kept = Vec::new();
        let mut lost = Vec::new();
        for entry in self.held.drain(..) {
            if entry.gone.is_some() {
                continue;
            }
            if claimed.contains(&(entry.task, entry.attempt)) {
                kept.push(entry);
            } else {
                lost.push((entry.task, entry.attempt));
            }
        }
        self.live = 0;
        if !lost.is_empty() {
            self.release(lost, ReleaseReason::WorkerLost, Vec::new(), None)
                .await;
        }
        kept
    }

    async fn release(
        &self,
        delivered: Vec<(TaskId, u32)>,
        reason: ReleaseReason,
        undelivered: Vec<TaskId>,
        session_ended: Option<bool>,
    ) {
        let release = Release {
            session: self.id,
            worker: self.client.clone(),
            delivered,
            reason,
            undelivered,
            session_ended,
        };
        if let Err(error) = self.queue.release(release).await {
            warn!(%error, "queue stopped before tasks were handed back");
        }
    }

    /// Withdraws the outstanding lease request. Tasks already sent to it
    /// never reached the worker and go straight back.
    async fn cancel_lease(&mut self) {
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        lease.close();
        if let Ok(deliveries) = lease.try_recv() {
            let ids = deliveries.iter().map(|d| d.task_id).collect();
            self.release(Vec::new(), ReleaseReason::WorkerLost, ids, None)
                .await;
        }
    }

    async fn finish(mut self, end: End) {
        self.cancel_lease().await;
        let held: Vec<(TaskId, u32)> = self
            .held
            .drain(..)
            .filter(|h| h.gone.is_none())
            .map(|h| (h.task, h.attempt))
            .collect();
        debug!(?end, held = held.len(), "session ending");
        self.metrics
            .worker_credit
            .decrement(f64::from(self.max_in_flight));
        self.live = 0;
        self.publish_in_flight();
        if end != End::HandedOver {
            self.release(
                held,
                ReleaseReason::WorkerLost,
                Vec::new(),
                Some(self.generated_id),
            )
            .await;
            let _ = self
                .registry
                .session_closed(self.client.clone(), self.id)
                .await;
        }
        // The worker is still reading: tell it why the stream ends.
        if let Some(status) = end.status(self.operator_drain, self.timing.liveness_timeout) {
            self.outbox.end(status);
        }
    }
}
