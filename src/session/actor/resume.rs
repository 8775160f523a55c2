//! The session's half of a resume: a worker whose stream dropped opens a
//! new one naming its old session and the tasks it still holds, and the new
//! session takes those over from the old one, which hands back the rest and
//! ends. Both halves are here so the handover reads in one place.
//!
//! A child of the actor module (it reaches the actor's private state); the
//! new session calls [`Session::take_over`] before its loop starts, and the
//! old one answers `SessionMsg::HandOver` with [`Session::hand_over`].

use tracing::info;

use super::Session;
use crate::{
    domain::{Resume, TaskId, TaskState},
    queue::ReleaseReason,
    session::{SessionHandle, held::Held},
};

impl Session {
    /// Takes over from this worker's previous session: the tasks the resume
    /// names (at their attempts) stay with the worker, the rest go back.
    /// Returns how many were kept.
    pub(in crate::session) async fn take_over(
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
            let current = self.queue.get(entry.task()).await.is_ok_and(|info| {
                info.state == TaskState::Delivered
                    && info.worker.as_ref() == Some(&self.client)
                    && info.attempts == entry.attempt()
            });
            if !current {
                continue;
            }
            // Claiming the task proves the worker received it.
            entry.mark_received();
            self.held.track(entry);
        }
        if resuming {
            self.metrics.sessions_resumed.increment(1);
            info!(kept = self.held.live(), "session resumed");
        }
        self.publish_in_flight();
        self.held.live()
    }

    /// Takes over a session the server recovered from its journal after a
    /// restart (no session of this process had it): the queue moves the
    /// tasks the resume names to this session, unchanged, and puts the rest
    /// of what it had delivered to this worker back in line. Returns how
    /// many were kept.
    pub(in crate::session) async fn take_over_recovered(&mut self, resume: Resume) -> usize {
        let adopted = match self
            .queue
            .adopt(self.client.clone(), self.id, resume.held)
            .await
        {
            Ok(adopted) => adopted,
            Err(_) => return 0,
        };
        if adopted.is_empty() {
            return 0;
        }
        let now = tokio::time::Instant::now();
        for delivery in adopted {
            // Claiming the task proves the worker received it; its lease
            // starts again now.
            let mut entry = Held::pushed(
                delivery.task_id,
                delivery.attempt,
                delivery.lease,
                now,
                None,
            );
            entry.mark_received();
            self.held.track(entry);
        }
        self.metrics.sessions_resumed.increment(1);
        info!(
            kept = self.held.live(),
            "session resumed across a server restart"
        );
        self.publish_in_flight();
        self.held.live()
    }

    /// Gives a resuming session the tasks it names; releases the rest.
    pub(super) async fn hand_over(&mut self, claimed: &[(TaskId, u32)]) -> Vec<Held> {
        self.cancel_lease().await;
        let mut kept = Vec::new();
        let mut lost = Vec::new();
        for entry in self.held.drain_live() {
            let key = (entry.task(), entry.attempt());
            if claimed.contains(&key) {
                kept.push(entry);
            } else {
                lost.push(key);
            }
        }
        if !lost.is_empty() {
            self.release(lost, ReleaseReason::WorkerLost, Vec::new(), None)
                .await;
        }
        kept
    }
}
