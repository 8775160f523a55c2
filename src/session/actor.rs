//! The session actor: its state, its loop and its message handling.
//!
//! The loop asks the queue for tasks while the worker has credit and the
//! stream has room, pushes what it is given, applies the worker's acks,
//! receipts, extensions and credit changes, and fires the deadlines of what
//! it holds. The bookkeeping it drives lives beside it: the held-task list
//! in `held`, the stream buffer in `outbox`, the final status in `end`; the
//! handover between an old and a resuming session is in `resume`.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    Notice, Rejection, SessionDeps, SessionMsg, SessionTiming, StreamItem,
    end::End,
    held::{Cancel, Deadline, Expired, Held, HeldTasks},
    outbox::{self, Outbox, Pushed},
    worker::WorkerStats,
};
use crate::{
    alarm::Alarm,
    domain::{
        AckKind, ClientId, Delivery, NewTask, QueueName, Registration, SessionId, Target, TaskId,
        WorkerOp,
    },
    metrics::{DISPATCH_TO_ACK_SECONDS, DISPATCH_TO_RECEIPT_SECONDS, LatencyBatch, SessionMetrics},
    queue::{Completion, QueueHandle, Release, ReleaseReason},
    session::registry::RegistryHandle,
};

mod resume;

/// The latency samples of one batch of worker operations, recorded into
/// the shared histograms once, when the batch is dropped.
struct Latencies {
    receipt: LatencyBatch,
    ack: LatencyBatch,
}

/// One worker session's actor: everything it owns, driven by `run`.
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
    /// Delivered tasks not yet acknowledged, and their deadlines.
    held: HeldTasks,
    /// The outstanding lease request, if any.
    lease: Option<oneshot::Receiver<Vec<Delivery>>>,
    /// Leases asked for so far: the queue serves a worker's queues in turn.
    leases_asked: u32,
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
            held: HeldTasks::default(),
            lease: None,
            leases_asked: 0,
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

    pub(super) async fn run(mut self) {
        self.metrics
            .worker_credit
            .increment(f64::from(self.max_in_flight));
        let end = self.serve().await;
        self.finish(end).await;
    }

    /// Credit the worker has not used: its limit less what it holds.
    fn free_credit(&self) -> u32 {
        self.max_in_flight.saturating_sub(self.held.live() as u32)
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
        let mut next = self.held.next_deadline();
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
            if self.draining && self.held.live() == 0 {
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
                        self.leases_asked,
                    )
                    .await
                {
                    Ok(lease) => {
                        self.lease = Some(lease);
                        self.leases_asked = self.leases_asked.wrapping_add(1);
                    }
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
        let live = self.held.live();
        if self.generated_id || live == 0 || grace.is_zero() || self.draining {
            return Some(End::Disconnected { by_operator: false });
        }
        debug!(held = live, "stream dropped; waiting for a resume");
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
            SessionMsg::Cancelled { task, attempt } => {
                match self.held.cancel(task, attempt, self.max_in_flight) {
                    Cancel::Taken => {
                        self.outbox.send_cancel(task, attempt);
                        self.publish_in_flight();
                    }
                    Cancel::AlreadyGone => {}
                    // Not here yet: it may be in the answer to our lease request.
                    Cancel::NotHeld if self.lease.is_some() => {
                        self.early_cancels.push((task, attempt));
                    }
                    Cancel::NotHeld => {}
                }
            }
            SessionMsg::HandOver { held, respond_to } => {
                let kept = self.hand_over(&held).await;
                let _ = respond_to.send(kept);
                return Some(End::HandedOver);
            }
            SessionMsg::BroadcastCopy { task, respond_to } => {
                let copy = self.take_broadcast_copy(&task).await;
                // The producer may have given up waiting; the copy stands.
                let _ = respond_to.send(copy);
            }
            SessionMsg::Drain => {
                info!("drained by an operator");
                self.draining = true;
                self.operator_drain = true;
                self.cancel_lease().await;
            }
            SessionMsg::Holding { respond_to } => {
                let views = self.held.views(Instant::now(), crate::clock::unix_ms_now());
                let _ = respond_to.send(views);
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

    fn publish_in_flight(&self) {
        self.stats
            .in_flight
            .store(self.held.live() as u32, Ordering::Relaxed);
    }

    /// Pushes leased tasks down the stream. Returns how the session must
    /// end if the stream cannot take them; whatever was not pushed has been
    /// handed back already.
    async fn push(&mut self, deliveries: Vec<Delivery>) -> Option<End> {
        let mut closed = false;
        let mut unpushed = Vec::new();
        let now = Instant::now();
        let receipt_timeout = self.receipts.then_some(self.timing.receipt_timeout);
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
                Pushed::Sent => self.held.track(Held::pushed(
                    delivery.task_id,
                    delivery.attempt,
                    delivery.lease,
                    now,
                    receipt_timeout,
                )),
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
                .store(crate::clock::unix_ms_now(), Ordering::Relaxed);
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

    async fn apply_one(
        &mut self,
        op: WorkerOp,
        now: Instant,
        completions: &mut Vec<Completion>,
        latencies: &mut Latencies,
    ) -> Result<(), Rejection> {
        match op {
            WorkerOp::Ack(ack) => match ack.kind {
                AckKind::Receipt => {
                    if let Some(latency) =
                        self.held.confirm_receipt(ack.task_id, ack.attempt, now)?
                    {
                        latencies.receipt.record(latency);
                    }
                }
                AckKind::Outcome {
                    outcome,
                    result,
                    retry_after,
                } => {
                    let acked = self.held.complete(ack.task_id, ack.attempt, now)?;
                    latencies.ack.record(acked.latency);
                    completions.push(Completion {
                        task: acked.task,
                        attempt: acked.attempt,
                        outcome,
                        result,
                        retry_after,
                    });
                }
            },
            WorkerOp::Extend {
                task_id,
                attempt,
                lease,
            } => {
                self.held
                    .extend(task_id, attempt, lease, self.timing.max_lease, now)?;
            }
            WorkerOp::Credit(credit) => {
                self.metrics
                    .worker_credit
                    .increment(f64::from(credit) - f64::from(self.max_in_flight));
                self.max_in_flight = credit;
                self.stats.max_in_flight.store(credit, Ordering::Relaxed);
                // The outstanding request asked for the old credit.
                self.cancel_lease().await;
            }
        }
        Ok(())
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
        while let Some(Expired {
            task,
            attempt,
            deadline,
        }) = self.held.pop_expired(now, self.max_in_flight)
        {
            match deadline {
                Deadline::Lease => {
                    self.metrics.leases_expired.increment(1);
                    expired.push((task, attempt));
                }
                Deadline::Receipt => {
                    self.metrics.receipts_missed.increment(1);
                    missed.push((task, attempt));
                    self.suspected = true;
                }
            }
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

    /// A broadcast: a worker of its queue that is connected and not
    /// draining submits itself a copy; its id.
    async fn take_broadcast_copy(&mut self, task: &crate::queue::BroadcastTask) -> Option<TaskId> {
        if !self.outbox.is_attached() || self.draining || !self.queues.contains(&task.queue) {
            return None;
        }
        let copy = NewTask {
            target: Some(Target::Client(self.client.clone())),
            text: task.text.clone(),
            payload: task.payload.clone(),
            broadcast: Some(task.id),
            ..Default::default()
        };
        match self.queue.submit(vec![copy]).await {
            Ok(mut answers) => match answers.pop() {
                Some(Ok(id)) => Some(id),
                Some(Err(error)) => {
                    warn!(%error, broadcast.id = %task.id, "broadcast copy refused");
                    None
                }
                None => None,
            },
            Err(error) => {
                warn!(%error, "queue stopped before a broadcast copy was made");
                None
            }
        }
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
            .drain_live()
            .map(|h| (h.task(), h.attempt()))
            .collect();
        debug!(?end, held = held.len(), "session ending");
        self.metrics
            .worker_credit
            .decrement(f64::from(self.max_in_flight));
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
