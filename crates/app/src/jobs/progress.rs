//! How far a job is, as the front ends are told: a percentage that reaches 100 only when the
//! job succeeded, the run time, an estimate of the time left, and the errors to show.

use br_cti_domain::model::{Job, JobStatus};

/// The figures of a job's progress answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    /// 0-99 while it runs, 100 once it succeeded (the front ends' only "done" signal).
    pub percent: u64,
    /// Run time over all runs, seconds.
    pub use_time: f64,
    /// Seconds left at the rate so far (running jobs that have done some rows), to 0.1 s.
    pub eta_seconds: Option<f64>,
    /// The first row errors, then the job's own message (why it failed or was canceled).
    pub errors: Vec<String>,
    /// Rows converted: done minus rejected.
    pub rows_converted: u64,
}

impl Figures {
    pub fn of(job: &Job) -> Self {
        let p = &job.progress;
        let percent = if job.status == JobStatus::Succeeded {
            100
        } else {
            (p.steps_done * 100)
                .checked_div(job.total_steps)
                .unwrap_or(0)
                .min(99)
        };
        let eta_seconds = (job.status == JobStatus::Running && p.rows_done > 0 && p.run_ms > 0)
            .then(|| {
                let rate = p.rows_done as f64 / (p.run_ms as f64 / 1000.0);
                (job.rows_total.saturating_sub(p.rows_done) as f64 / rate * 10.0).round() / 10.0
            });
        let mut errors = p.errors.clone();
        if let Some(m) = &job.message {
            errors.push(m.clone());
        }
        Figures {
            percent,
            use_time: p.run_ms as f64 / 1000.0,
            eta_seconds,
            errors,
            rows_converted: p.rows_done - p.rows_rejected,
        }
    }
}
