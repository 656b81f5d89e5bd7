//! Threads of their own, at a lower priority than the threads serving requests, for CPU work
//! that a request must not wait behind: token counts of large bodies (`counting`) and the JSON
//! of the pages a search move copies and compares (`search_router::Offload`). At nice 10 the
//! scheduler lets a request thread that wakes up run first, and such work can never take every
//! core from the requests being served.

use std::sync::Arc;

/// A unit of work for the threads.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of low-priority threads fed from one queue; they exit when this is dropped.
pub struct LowPriorityThreads {
    jobs: parking_lot::Mutex<std::sync::mpsc::Sender<Job>>,
}

/// The threads are gone (could not start, or a job panicked in every one).
#[derive(Debug, thiserror::Error)]
#[error("the {0} threads are gone")]
pub struct Gone(pub &'static str);

impl LowPriorityThreads {
    /// Starts `threads` threads named `{name}-{i}`.
    pub fn start(name: &'static str, threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(parking_lot::Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    lower_priority(name);
                    loop {
                        let job = queue.lock().recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, name, "cannot start a background thread");
            }
        }
        Self {
            jobs: parking_lot::Mutex::new(jobs),
        }
    }

    /// Queues `job`; it runs when a thread is free.
    pub fn submit(&self, job: Job, name: &'static str) -> Result<(), Gone> {
        self.jobs.lock().send(job).map_err(|_| Gone(name))
    }
}

/// Nice 10 for the calling thread (best effort: a platform without it runs the work at the
/// normal priority, which is still off the async workers).
fn lower_priority(name: &str) {
    let lowered = thread_priority::ThreadPriorityValue::try_from(24u8)
        .map_err(|e| e.to_string())
        .and_then(|value| {
            thread_priority::set_current_thread_priority(
                thread_priority::ThreadPriority::Crossplatform(value),
            )
            .map_err(|e| e.to_string())
        });
    if let Err(error) = lowered {
        tracing::debug!(%error, name, "could not lower a background thread's priority");
    }
}

/// The search router's heavy page work, on low-priority threads of its own.
pub struct PageThreads(pub LowPriorityThreads);

impl search_router::Offload for PageThreads {
    fn run(&self, job: search_router::Job) -> bool {
        self.0.submit(job, "search page").is_ok()
    }
}
