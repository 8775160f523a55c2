//! The JSON the console's API answers with: plain data, named for people
//! and scripts, built from the actors' own types. Texts are cut to a
//! prefix (with their full length beside it) so a page never carries a
//! huge task.

use serde::Serialize;

use crate::{
    domain::{Target, TaskInfo, TaskState},
    queue::{QueueStats, Totals},
    session::{HeldView, registry::WorkerInfo},
};

pub(crate) use crate::domain::prefix;

/// The longest prefix of a text the API returns for one task.
pub(crate) const TEXT_PREFIX_BYTES: usize = 4096;

/// The longest prefix of a text in a list (dead letters, broadcasts, held
/// tasks): a page of them stays small however large the tasks are.
pub(crate) const LIST_PREFIX_BYTES: usize = 256;

#[derive(Debug, Serialize)]
pub(crate) struct TotalsView {
    pub(crate) submitted: u64,
    pub(crate) done: u64,
    pub(crate) failed: u64,
    pub(crate) dead_lettered: u64,
}

impl From<Totals> for TotalsView {
    fn from(t: Totals) -> Self {
        Self {
            submitted: t.submitted,
            done: t.done,
            failed: t.failed,
            dead_lettered: t.dead_lettered,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct QueueView {
    pub(crate) name: String,
    /// Waiting to be delivered, ready or delayed.
    pub(crate) pending: u64,
    pub(crate) ready: u64,
    pub(crate) delayed: u64,
    /// How long the oldest ready task has been due; null when none is ready.
    pub(crate) oldest_ready_age_ms: Option<u64>,
    /// Workers of this queue waiting for a task now.
    pub(crate) waiting_workers: u64,
    /// Every connected worker subscribed to it.
    pub(crate) workers: Vec<String>,
    pub(crate) dead_letters: u64,
}

impl QueueView {
    pub(crate) fn new(stats: QueueStats, workers: &[WorkerInfo]) -> Self {
        let name = stats.name.to_string();
        Self {
            workers: workers
                .iter()
                .filter(|w| w.queues.iter().any(|q| q.as_str() == name))
                .map(|w| w.client.to_string())
                .collect(),
            name,
            pending: stats.pending as u64,
            ready: stats.ready as u64,
            delayed: stats.pending.saturating_sub(stats.ready) as u64,
            oldest_ready_age_ms: stats
                .oldest_ready_age
                .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
            waiting_workers: stats.waiting_workers as u64,
            dead_letters: stats.dead_letters as u64,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct HeldTaskView {
    pub(crate) task_id: String,
    pub(crate) attempt: u32,
    pub(crate) delivered_unix_ms: u64,
    pub(crate) lease_deadline_unix_ms: u64,
    pub(crate) awaiting_receipt: bool,
    /// A prefix of its text, when the server still has it.
    pub(crate) text: Option<String>,
}

impl HeldTaskView {
    pub(crate) fn new(held: HeldView, text: Option<String>) -> Self {
        Self {
            task_id: held.task.to_string(),
            attempt: held.attempt,
            delivered_unix_ms: held.pushed_unix_ms,
            lease_deadline_unix_ms: held.lease_deadline_unix_ms,
            awaiting_receipt: held.awaiting_receipt,
            text,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct WorkerView {
    pub(crate) client_id: String,
    pub(crate) peer: Option<String>,
    pub(crate) queues: Vec<String>,
    /// Its in-flight limit.
    pub(crate) credit: u32,
    pub(crate) in_flight: u32,
    pub(crate) connected_unix_ms: u64,
    pub(crate) last_heard_unix_ms: u64,
    /// Its last sendStatus text.
    pub(crate) status: String,
    pub(crate) reported_running: u32,
    /// Its stream dropped; it may still resume.
    pub(crate) detached: bool,
    pub(crate) held: Vec<HeldTaskView>,
}

impl WorkerView {
    pub(crate) fn new(worker: WorkerInfo, held: Vec<HeldTaskView>) -> Self {
        Self {
            client_id: worker.client.to_string(),
            peer: worker.peer.map(|p| p.to_string()),
            queues: worker.queues.iter().map(ToString::to_string).collect(),
            credit: worker.max_in_flight,
            in_flight: worker.in_flight,
            connected_unix_ms: worker.connected_unix_ms,
            last_heard_unix_ms: worker.last_heard_unix_ms,
            status: worker.last_status,
            reported_running: worker.reported_running,
            detached: worker.detached,
            held,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct TaskView {
    pub(crate) task_id: String,
    /// pending, delivered, done, dead_lettered or cancelled.
    pub(crate) state: &'static str,
    pub(crate) queue: Option<String>,
    /// The worker it was sent to by id.
    pub(crate) target_client_id: Option<String>,
    pub(crate) attempts: u32,
    /// The worker holding it, or the one that finished it.
    pub(crate) worker: Option<String>,
    /// A prefix of its text, while the server keeps it (until done or cancelled).
    pub(crate) text: Option<String>,
    pub(crate) text_bytes: Option<usize>,
    pub(crate) ret: String,
    pub(crate) error: String,
    pub(crate) output_bytes: usize,
    pub(crate) priority: i32,
    pub(crate) not_before_unix_ms: u64,
    pub(crate) dead_letter_reason: Option<&'static str>,
    pub(crate) broadcast_id: Option<String>,
}

fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Pending => "pending",
        TaskState::Delivered => "delivered",
        TaskState::Done => "done",
        TaskState::DeadLettered => "dead_lettered",
        TaskState::Cancelled => "cancelled",
    }
}

impl From<TaskInfo> for TaskView {
    fn from(info: TaskInfo) -> Self {
        Self::cut(info, TEXT_PREFIX_BYTES)
    }
}

impl TaskView {
    /// The view, with its texts cut to `max` bytes.
    pub(crate) fn cut(info: TaskInfo, max: usize) -> Self {
        let (queue, target_client_id) = match info.target {
            Target::Queue(q) => (Some(q.to_string()), None),
            Target::Client(c) => (None, Some(c.to_string())),
        };
        Self {
            task_id: info.id.to_string(),
            state: state_name(info.state),
            queue,
            target_client_id,
            attempts: info.attempts,
            worker: info.worker.map(|w| w.to_string()),
            text: info.text.as_deref().map(|t| prefix(t, max).to_owned()),
            text_bytes: info.text.as_deref().map(str::len),
            ret: prefix(&info.result.ret, max).to_owned(),
            error: prefix(&info.result.error, max).to_owned(),
            output_bytes: info.result.output.len(),
            priority: info.priority,
            not_before_unix_ms: info.not_before_unix_ms,
            dead_letter_reason: info.dead_letter_reason.map(|r| r.as_str()),
            broadcast_id: info.broadcast.map(|b| b.to_string()),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct BroadcastView {
    pub(crate) broadcast_id: String,
    pub(crate) copies: Vec<TaskView>,
}

/// The overview page's figures.
#[derive(Debug, Serialize)]
pub(crate) struct Overview {
    pub(crate) now_unix_ms: u64,
    /// Since the server started; null before the first sample.
    pub(crate) totals: Option<TotalsView>,
    /// Per second, one a second, over the last five minutes.
    pub(crate) rates: Vec<crate::console::rates::RatePoint>,
    pub(crate) queues: usize,
    pub(crate) pending: u64,
    pub(crate) ready: u64,
    pub(crate) oldest_ready_age_ms: Option<u64>,
    pub(crate) dead_letters: u64,
    pub(crate) workers: usize,
    pub(crate) in_flight: u64,
    pub(crate) credit: u64,
}

/// Who the browser is signed in as.
#[derive(Debug, Serialize)]
pub(crate) struct SessionView {
    /// Whether the server asks for a sign-in.
    pub(crate) auth_required: bool,
    /// The principal's name, when signed in.
    pub(crate) principal: Option<String>,
    /// Whether it may act (drain, cancel, requeue, purge).
    pub(crate) may_act: bool,
}
