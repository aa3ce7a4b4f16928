//! The store contract: scenarios every backend of these traits must pass, written against the
//! traits alone. A backend runs them all from its tests with [`record_store_contract!`] and
//! [`blob_store_contract!`] (feature `contract`), each scenario on a fresh, empty store:
//!
//! ```ignore
//! br_cti_store::record_store_contract!(|| my_backend::open_empty());
//! ```
//!
//! The scenarios say what the application relies on: task and step records, one running job per
//! kind and file, durable progress, records that keep their chain state when committed again,
//! paging, hidden-danger revisions, TAXII pages and watermarks, content-addressed blobs.

use std::io::Read;

use sha2::Digest;

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::ioc::{Confidence, IocSighting, IocState};
use br_cti_domain::model::{
    BodyRef, CtiRecord, Fence, FileMeta, HiddenDangerFilter, JobKind, JobProgress, JobStatus,
    LeaseState, NewTaxiiObject, Position, Publication, ReportClaim, ReportKey, Step, StepState,
    StixRecord, TaxiiBody, TaxiiQuery, TaxiiStatus, TokenBucket, Upsert, VersionMatch,
};
use br_cti_domain::testing::{cti_params, sample, stix_params};
use br_cti_domain::vocab::{
    DataType, IncentiveMechanism, IocKind, OpenSource, Tag, Tlp, TrafficType,
};

use crate::{BlobStore, RecordStore, StoreError};

fn hash(c: char) -> Sha256Hex {
    Sha256Hex::parse(&c.to_string().repeat(64)).unwrap()
}

fn file(c: char) -> FileMeta {
    FileMeta {
        hash: hash(c),
        size: 10,
        original_name: Some("a.csv".into()),
        created_at_ms: 1_700_000_000_000,
    }
}

fn stix_record(source: char, stix: char, job_id: i64, batch: u64) -> StixRecord {
    StixRecord {
        source_file_hash: hash(source),
        stix_file_hash: hash(stix),
        job_id,
        batch,
        file_size: 100 + batch,
        rows: 5,
        objects: 22,
        stix_type: DataType::MaliciousTraffic,
        stix_tags: vec![Tag::Other],
        stix_iocs: vec![IocKind::Ip],
        ioc_ips_map: vec![("10.0.0.1".into(), 2)],
        created_at: 1_700_000_000_000 + batch as i64,
        onchain: false,
        cti_file_path: None,
    }
}

fn cti_record(source: char, stix: char, job_id: i64) -> CtiRecord {
    CtiRecord {
        source_file_hash: hash(source),
        cti_hash: hash(stix),
        job_id,
        cti_name: "name".into(),
        cti_type: DataType::MaliciousTraffic,
        cti_traffic_type: TrafficType::NotTraffic,
        open_source: OpenSource::Open,
        description: "d".into(),
        tags: vec![Tag::Other],
        iocs: vec![IocKind::Ip],
        value: 1.5,
        incentive_mechanism: IncentiveMechanism::First,
        data_size: 100,
        stix_data: "/x".into(),
        stix_ipfs_hash: String::new(),
        statistic_info: "{}".into(),
        data_source_hash: hash(source),
        data_source_ipfs_hash: String::new(),
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_000_000,
        onchain: false,
        cti_id: None,
    }
}

fn progress(steps: u64) -> JobProgress {
    JobProgress {
        steps_done: steps,
        rows_done: steps * 5,
        rows_rejected: 1,
        objects: steps * 22,
        files: steps,
        errors: vec!["row 3: bad".into()],
        recent_steps: (1..=steps).collect(),
        run_ms: 42,
    }
}

/// An upload records a file and a task with four steps (upload finished); the same task and
/// file again is the same record; a task id of another file is a conflict; a step is set for
/// every task of a file.
pub fn uploads_tasks_and_steps(db: &dyn RecordStore) {
    db.check().unwrap();
    let a = file('a');
    let rec = db.record_upload(&a, "1001").unwrap();
    assert_eq!(rec.step_status.len(), 4);
    assert_eq!(rec.step_status[0].status, StepState::Finished);
    assert_eq!(rec.step_status[1].status, StepState::Pending);
    assert_eq!(db.record_upload(&a, "1001").unwrap(), rec);
    assert_eq!(db.record_upload(&a, "1002").unwrap().task_id, "1002");
    let err = db.record_upload(&file('b'), "1001").unwrap_err();
    assert!(matches!(err, StoreError::TaskConflict { .. }), "{err}");
    db.set_step_for_file(&a.hash, Step::Stix, StepState::Finished, 7)
        .unwrap();
    let tasks = db.tasks_for_file(&a.hash).unwrap();
    assert_eq!(
        tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
        ["1001", "1002"]
    );
    for t in &tasks {
        assert_eq!(t.step_status[1].status, StepState::Finished);
        assert_eq!(t.step_status[1].total_num, 7);
    }
    assert_eq!(db.task("1001").unwrap().unwrap().source_file_hash, a.hash);
    assert!(db.task("nope").unwrap().is_none());
    assert_eq!(db.file(&a.hash).unwrap().unwrap(), a);
    assert!(db.file(&hash('c')).unwrap().is_none());
    db.checkpoint().unwrap();
}

/// One queued or running job per kind and file; attempts are counted; a cancel request and an
/// ending are kept; finished jobs are not resumed, and a new job may then start.
pub fn jobs_run_one_at_a_time_per_file(db: &dyn RecordStore) {
    let a = file('a');
    db.record_upload(&a, "t").unwrap();
    let job = db.create_job(&a.hash, "p1", &stix_params(), 3, 15).unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!((job.total_steps, job.rows_total), (3, 15));
    assert_eq!(job.params, stix_params());
    assert_eq!(job.kind(), JobKind::Stix);
    assert_eq!(
        db.task("t").unwrap().unwrap().step_status[1].status,
        StepState::Running
    );
    let err = db
        .create_job(&a.hash, "p2", &stix_params(), 3, 15)
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // Another kind for the same file is another queue.
    db.create_job(&a.hash, "p3", &cti_params(), 1, 1).unwrap();
    assert_eq!(db.unfinished_jobs().unwrap().len(), 2);
    let (claimed, _) = db.claim_job("n1", 60_000).unwrap().unwrap();
    assert_eq!(claimed.id, job.id, "the oldest first");
    db.expire_leases().unwrap();
    let (claimed, fence) = db.claim_job("n1", 60_000).unwrap().unwrap();
    assert_eq!(
        claimed.id, job.id,
        "an ended lease makes the job claimable again"
    );
    let running = db.job(job.id).unwrap().unwrap();
    assert_eq!((running.status, running.attempts), (JobStatus::Running, 2));
    assert_eq!(claimed, running);
    db.request_cancel(job.id).unwrap();
    assert!(db.job(job.id).unwrap().unwrap().cancel_requested);
    db.finish_job(
        job.id,
        fence,
        JobStatus::Canceled,
        Some("canceled on request"),
    )
    .unwrap();
    let ended = db.job(job.id).unwrap().unwrap();
    assert_eq!(ended.status, JobStatus::Canceled);
    assert_eq!(ended.message.as_deref(), Some("canceled on request"));
    assert!(ended.finished_at.is_some());
    assert_eq!(db.unfinished_jobs().unwrap().len(), 1);
    let again = db.create_job(&a.hash, "p4", &stix_params(), 3, 15).unwrap();
    assert_ne!(again.id, job.id);
    assert_eq!(
        db.latest_job(JobKind::Stix, &a.hash).unwrap().unwrap().id,
        again.id
    );
    assert!(db.latest_job(JobKind::Stix, &hash('b')).unwrap().is_none());
    assert!(db.job(i64::MAX).unwrap().is_none());
}

/// Claims the next job for a node named `owner`, which must exist.
fn claim(db: &dyn RecordStore, owner: &str) -> Fence {
    db.claim_job(owner, 60_000)
        .unwrap()
        .expect("a job to claim")
        .1
}

/// A claimed job is leased: no other node claims it while the lease lasts, renewing tells
/// whether a cancel was asked, and once another node took it over (the lease ended) the first
/// node's commits and ending are refused and change nothing.
pub fn leases_fence_a_jobs_writes(db: &dyn RecordStore) {
    let a = file('a');
    db.record_upload(&a, "t").unwrap();
    assert!(
        db.claim_job("n1", 60_000).unwrap().is_none(),
        "nothing queued"
    );
    let job = db.create_job(&a.hash, "p", &stix_params(), 3, 15).unwrap();
    let (claimed, first) = db.claim_job("n1", 60_000).unwrap().unwrap();
    assert_eq!((claimed.id, claimed.attempts), (job.id, 1));
    assert!(
        db.claim_job("n2", 60_000).unwrap().is_none(),
        "leased to n1"
    );
    assert_eq!(
        db.renew_lease(job.id, first, 60_000).unwrap(),
        LeaseState::Held {
            cancel_requested: false
        }
    );
    db.commit_stix_steps(
        job.id,
        first,
        &[stix_record('a', '1', job.id, 1)],
        &progress(1),
    )
    .unwrap();
    // n1 stalls past its lease; n2 takes the job over.
    assert_eq!(db.expire_leases().unwrap(), 1);
    let (taken, second) = db.claim_job("n2", 60_000).unwrap().unwrap();
    assert_ne!(first, second);
    assert_eq!((taken.id, taken.attempts), (job.id, 2));
    assert_eq!(taken.progress, progress(1), "resumes from the last commit");
    assert_eq!(
        db.renew_lease(job.id, first, 60_000).unwrap(),
        LeaseState::Lost
    );
    let err = db
        .commit_stix_steps(
            job.id,
            first,
            &[stix_record('a', '2', job.id, 2)],
            &progress(2),
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost(id) if id == job.id),
        "{err}"
    );
    assert_eq!(
        db.stix_records(&a.hash, None).unwrap().1,
        1,
        "nothing written"
    );
    assert_eq!(db.job(job.id).unwrap().unwrap().progress, progress(1));
    let err = db
        .finish_job(job.id, first, JobStatus::Failed, Some("stale"))
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");
    // A cancel asked anywhere reaches the holder when it renews.
    db.request_cancel(job.id).unwrap();
    assert_eq!(
        db.renew_lease(job.id, second, 60_000).unwrap(),
        LeaseState::Held {
            cancel_requested: true
        }
    );
    db.finish_job(
        job.id,
        second,
        JobStatus::Canceled,
        Some("canceled on request"),
    )
    .unwrap();
    assert_eq!(
        db.renew_lease(job.id, second, 60_000).unwrap(),
        LeaseState::Lost
    );
    assert_eq!(db.job(job.id).unwrap().unwrap().status, JobStatus::Canceled);
    assert!(
        db.claim_job("n1", 60_000).unwrap().is_none(),
        "an ended job is not claimed"
    );
    // A lease that runs out by itself.
    let next = db.create_job(&a.hash, "p", &stix_params(), 3, 15).unwrap();
    let (_, short) = db.claim_job("n1", 1).unwrap().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (again, longer) = db.claim_job("n2", 60_000).unwrap().unwrap();
    assert_eq!(again.id, next.id);
    assert_ne!(short, longer);
}

/// Steps commit records and progress together; pages keep creation order; committing a record
/// again keeps its chain state and CTI link; CTI records link their STIX records and are
/// marked on chain.
pub fn records_commit_with_progress_and_keep_chain_state(db: &dyn RecordStore) {
    let a = file('a');
    db.record_upload(&a, "t").unwrap();
    let job = db.create_job(&a.hash, "p", &stix_params(), 3, 15).unwrap();
    let fence = claim(db, "n1");
    let first = [
        stix_record('a', '1', job.id, 1),
        stix_record('a', '2', job.id, 2),
    ];
    db.commit_stix_steps(job.id, fence, &first, &progress(2))
        .unwrap();
    db.commit_stix_steps(
        job.id,
        fence,
        &[stix_record('a', '3', job.id, 3)],
        &progress(3),
    )
    .unwrap();
    assert_eq!(db.job(job.id).unwrap().unwrap().progress, progress(3));
    let (all, total) = db.stix_records(&a.hash, None).unwrap();
    assert_eq!(total, 3);
    assert_eq!(all[0], first[0]);
    assert_eq!(
        all.iter().map(|r| r.batch).collect::<Vec<_>>(),
        [1, 2, 3],
        "creation order"
    );
    let (page, total) = db.stix_records(&a.hash, Some((2, 2))).unwrap();
    assert_eq!((page.len(), total), (1, 3));
    assert_eq!(page[0].batch, 3);
    assert_eq!(
        db.stix_record(&a.hash, &hash('2')).unwrap().unwrap(),
        first[1]
    );
    assert!(db.stix_record(&a.hash, &hash('9')).unwrap().is_none());
    db.finish_job(job.id, fence, JobStatus::Succeeded, None)
        .unwrap();

    let cti_job = db.create_job(&a.hash, "p", &cti_params(), 1, 1).unwrap();
    let cti_fence = claim(db, "n1");
    db.commit_cti_steps(
        cti_job.id,
        cti_fence,
        &[(cti_record('a', '1', cti_job.id), "cti/1.json".into())],
        &progress(1),
    )
    .unwrap();
    let (ctis, total) = db.cti_records(&a.hash, None).unwrap();
    assert_eq!(total, 1);
    assert_eq!(ctis[0], cti_record('a', '1', cti_job.id));
    let linked = db.stix_record(&a.hash, &hash('1')).unwrap().unwrap();
    assert_eq!(linked.cti_file_path.as_deref(), Some("cti/1.json"));
    let publication = Publication {
        cti_id: "42".into(),
        stix_ipfs_hash: Some("Qm1".into()),
        data_source_ipfs_hash: None,
    };
    assert!(
        db.mark_cti_onchain(&a.hash, &hash('1'), &publication)
            .unwrap()
    );
    assert!(
        !db.mark_cti_onchain(&a.hash, &hash('9'), &publication)
            .unwrap()
    );
    let cti = db.cti_record(&a.hash, &hash('1')).unwrap().unwrap();
    assert!(cti.onchain);
    assert_eq!(cti.cti_id.as_deref(), Some("42"));
    assert_eq!(cti.stix_ipfs_hash, "Qm1");
    // The same file committed again by a new conversion keeps its chain state and CTI link.
    let rerun = db.create_job(&a.hash, "p", &stix_params(), 3, 15).unwrap();
    let rerun_fence = db.claim_job("n1", 60_000).unwrap().unwrap().1;
    let mut again = stix_record('a', '1', rerun.id, 1);
    again.stix_tags = vec![Tag::Apt, Tag::Iot];
    db.commit_stix_steps(rerun.id, rerun_fence, &[again], &progress(1))
        .unwrap();
    let kept = db.stix_record(&a.hash, &hash('1')).unwrap().unwrap();
    assert!(kept.onchain);
    assert_eq!(kept.stix_tags, [Tag::Apt, Tag::Iot]);
    assert_eq!(kept.cti_file_path.as_deref(), Some("cti/1.json"));
}

/// Reporting users: names are unique, tokens are replaced, removal keeps nothing listed.
pub fn users_and_tokens(db: &dyn RecordStore) {
    db.add_user("alice", "token-a").unwrap();
    let err = db.add_user("alice", "other").unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(db.user_token("alice").unwrap().as_deref(), Some("token-a"));
    assert_eq!(
        db.user_by_token("token-a").unwrap().as_deref(),
        Some("alice")
    );
    assert!(db.rotate_user("alice", "token-b").unwrap());
    assert_eq!(db.user_token("alice").unwrap().as_deref(), Some("token-b"));
    assert!(db.user_by_token("token-a").unwrap().is_none());
    assert!(!db.rotate_user("bob", "x").unwrap());
    // A reporting platform's marking: the node's default until set.
    assert_eq!(db.report_tlp("alice").unwrap(), None);
    assert!(db.set_report_tlp("alice", Some(Tlp::Red)).unwrap());
    assert_eq!(db.report_tlp("alice").unwrap(), Some(Tlp::Red));
    assert!(db.set_report_tlp("alice", None).unwrap());
    assert_eq!(db.report_tlp("alice").unwrap(), None);
    assert!(!db.set_report_tlp("bob", Some(Tlp::Red)).unwrap());
    assert_eq!(
        db.users()
            .unwrap()
            .iter()
            .map(|u| u.name.as_str())
            .collect::<Vec<_>>(),
        ["alice"]
    );
    assert!(db.remove_user("alice").unwrap());
    assert!(!db.remove_user("alice").unwrap());
    assert!(db.users().unwrap().is_empty());
    assert!(db.user_token("alice").unwrap().is_none());
}

/// Hidden dangers: `riskId` is unique per user; a repeat with the same content changes
/// nothing, a changed one adds a revision; listings filter and page; a scan sees them all;
/// revisions are published in the order of positions that only grow.
pub fn hidden_dangers_keep_revisions(db: &dyn RecordStore) {
    db.add_user("u", "t").unwrap();
    db.add_user("v", "t2").unwrap();
    let (r1, r2) = (sample("r1"), sample("r2"));
    assert_eq!(
        db.upsert_hidden_dangers("u", &[r1.clone(), r2.clone()])
            .unwrap(),
        [Upsert::Created, Upsert::Created]
    );
    assert_eq!(
        db.upsert_hidden_dangers("u", std::slice::from_ref(&r1))
            .unwrap(),
        [Upsert::Unchanged]
    );
    // The same riskId from another user is another record.
    assert_eq!(
        db.upsert_hidden_dangers("v", std::slice::from_ref(&r1))
            .unwrap(),
        [Upsert::Created]
    );
    let mut changed = r1.clone();
    changed.issue_name = "changed".into();
    assert_eq!(
        db.upsert_hidden_dangers("u", &[changed]).unwrap(),
        [Upsert::Updated]
    );
    let (stored, revisions) = db.hidden_danger("u", "r1").unwrap().unwrap();
    assert_eq!(stored.revision, 2);
    assert_eq!(revisions.len(), 2);
    assert!(stored.data.contains("changed"), "{}", stored.data);
    assert!(db.hidden_danger("u", "nope").unwrap().is_none());

    let all = HiddenDangerFilter::default();
    let (_, total) = db.hidden_dangers(&all, None).unwrap();
    assert_eq!(total, 3);
    let only_u = HiddenDangerFilter {
        user: Some("u".into()),
        ..Default::default()
    };
    let (page, total) = db.hidden_dangers(&only_u, Some((1, 1))).unwrap();
    assert_eq!((page.len(), total), (1, 2));
    let mut scanned = Vec::new();
    db.scan_hidden_dangers(&only_u, &mut |hd| {
        scanned.push(hd.risk_id);
        Ok(())
    })
    .unwrap();
    scanned.sort();
    assert_eq!(scanned, ["r1", "r2"]);
    // One position per revision (r1 of u twice), each with the record as it is now.
    let after = db.hidden_dangers_after(Position::START, 100).unwrap();
    assert_eq!(after.len(), 4);
    assert!(
        after
            .iter()
            .filter(|(_, hd)| hd.user == "u" && hd.risk_id == "r1")
            .all(|(_, hd)| hd.revision == 2)
    );
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0), "positions grow");
    let last = after.last().unwrap().0;
    assert!(db.hidden_dangers_after(last, 100).unwrap().is_empty());

    // One batch naming a record several times: stored as if item by item.
    let (a1, b) = (sample("a"), sample("b"));
    let mut a2 = a1.clone();
    a2.issue_name = "second".into();
    assert_eq!(
        db.upsert_hidden_dangers("u", &[a1.clone(), a2.clone(), a2.clone(), b, a1.clone()])
            .unwrap(),
        [
            Upsert::Created,
            Upsert::Updated,
            Upsert::Unchanged,
            Upsert::Created,
            Upsert::Updated
        ]
    );
    let (stored, revisions) = db.hidden_danger("u", "a").unwrap().unwrap();
    assert_eq!(stored.revision, 3);
    assert_eq!(
        revisions.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(revisions[1].data.contains("second"));
    assert!(!stored.data.contains("second"), "the last item wins");
    let added = db.hidden_dangers_after(last, 100).unwrap();
    assert_eq!(added.len(), 4, "one position per revision, in item order");
    assert_eq!(
        added
            .iter()
            .map(|(_, hd)| hd.risk_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "a", "b", "a"]
    );
}

/// Signed requests are claimed once within their window: the same body again is pending,
/// then answered with the first answer; another body is refused; a released claim may be sent
/// again; an expired one is forgotten. Token buckets are per user and refill at their rate.
pub fn report_claims_and_rate_limits(db: &dyn RecordStore) {
    let key = ReportKey {
        user: "u",
        timestamp: "1717200000",
        sign: "abc",
    };
    let now = 1_800_000_000_000;
    let ttl = 601_000;
    assert_eq!(
        db.claim_report(&key, &hash('1'), now, ttl).unwrap(),
        ReportClaim::Claimed
    );
    assert_eq!(
        db.claim_report(&key, &hash('1'), now, ttl).unwrap(),
        ReportClaim::Pending
    );
    assert_eq!(
        db.claim_report(&key, &hash('2'), now, ttl).unwrap(),
        ReportClaim::OtherBody
    );
    db.settle_report(&key, "answered", "{\"success\":true}")
        .unwrap();
    assert_eq!(
        db.claim_report(&key, &hash('1'), now + 1, ttl).unwrap(),
        ReportClaim::Answered {
            outcome: "answered".into(),
            answer: "{\"success\":true}".into()
        }
    );
    let other = ReportKey { user: "v", ..key };
    assert_eq!(
        db.claim_report(&other, &hash('1'), now, ttl).unwrap(),
        ReportClaim::Claimed,
        "per user"
    );
    db.release_report(&other).unwrap();
    assert_eq!(
        db.claim_report(&other, &hash('1'), now, ttl).unwrap(),
        ReportClaim::Claimed,
        "released"
    );
    // Past its window the claim is forgotten.
    assert_eq!(
        db.claim_report(&key, &hash('2'), now + ttl + 1, ttl)
            .unwrap(),
        ReportClaim::Claimed
    );

    let bucket = TokenBucket {
        rate: 1.0,
        burst: 2.0,
    };
    assert!(db.take_report_token("u", bucket, now).unwrap().is_ok());
    assert!(db.take_report_token("u", bucket, now).unwrap().is_ok());
    assert_eq!(db.take_report_token("u", bucket, now).unwrap(), Err(1.0));
    assert!(
        db.take_report_token("v", bucket, now).unwrap().is_ok(),
        "per user"
    );
    assert!(
        db.take_report_token("u", bucket, now + 1000)
            .unwrap()
            .is_ok()
    );
}

fn taxii_object(i: usize, version_us: i64) -> NewTaxiiObject {
    NewTaxiiObject {
        id: format!("indicator--00000000-0000-4000-8000-{i:012}"),
        kind: "indicator".into(),
        version: format!("v{version_us}"),
        version_us,
        spec_version: "2.1".into(),
        body: TaxiiBody::Text(format!(r#"{{"n":{i}}}"#)),
        tlp: Tlp::Clear,
    }
}

fn query(after: Position, limit: u64) -> TaxiiQuery {
    TaxiiQuery {
        after,
        max_tlp: Tlp::Red,
        added_after: None,
        limit,
        ids: vec![],
        types: vec![],
        versions: vec![VersionMatch::All],
        spec_versions: vec![],
    }
}

/// TAXII: a reader sees the objects marked up to its level, and pages over them exactly (a
/// page is full unless it is the last; `more` is true only when a visible object follows).
/// A user reads green unless granted more.
pub fn taxii_pages_honour_tlp(db: &dyn RecordStore) {
    let levels = [
        Tlp::Clear,
        Tlp::Amber,
        Tlp::Green,
        Tlp::Red,
        Tlp::Amber,
        Tlp::Green,
        Tlp::AmberStrict,
    ];
    let objects: Vec<NewTaxiiObject> = levels
        .iter()
        .enumerate()
        .map(|(i, t)| NewTaxiiObject {
            tlp: *t,
            ..taxii_object(i, 10)
        })
        .collect();
    db.taxii_add("c", &objects, None).unwrap();
    for max in Tlp::ALL {
        let expected: Vec<String> = levels
            .iter()
            .enumerate()
            .filter(|(_, t)| *t <= max)
            .map(|(i, _)| taxii_object(i, 10).id)
            .collect();
        let mut seen = Vec::new();
        let mut after = Position::START;
        loop {
            let q = TaxiiQuery {
                max_tlp: *max,
                ..query(after, 1)
            };
            let (page, more) = db.taxii_page("c", &q).unwrap();
            assert!(page.len() <= 1);
            seen.extend(page.iter().map(|o| o.id.clone()));
            match page.last() {
                Some(o) if more => after = o.position,
                _ => {
                    assert!(!more);
                    break;
                }
            }
        }
        assert_eq!(seen, expected, "{max:?}");
    }
    // Deleting reaches only what the deleter may read.
    let amber = taxii_object(1, 10).id;
    assert_eq!(
        db.taxii_delete("c", &amber, &[VersionMatch::All], Tlp::Green)
            .unwrap(),
        0
    );
    assert_eq!(
        db.taxii_delete("c", &amber, &[VersionMatch::All], Tlp::Amber)
            .unwrap(),
        1
    );
    db.add_user("reader", "t").unwrap();
    assert_eq!(db.user_tlp("reader").unwrap(), Some(Tlp::Green));
    assert!(db.set_user_tlp("reader", Tlp::Amber).unwrap());
    assert_eq!(db.user_tlp("reader").unwrap(), Some(Tlp::Amber));
    assert_eq!(db.users().unwrap()[0].tlp, Tlp::Amber);
    assert!(!db.set_user_tlp("nobody", Tlp::Red).unwrap());
    assert_eq!(db.user_tlp("nobody").unwrap(), None);
}

/// TAXII: a body kept in a STIX file comes back as the same reference, a text as the text.
pub fn taxii_bodies_come_back_as_stored(db: &dyn RecordStore) {
    let reference = BodyRef {
        file: Sha256Hex::parse(&"ab".repeat(32)).unwrap(),
        offset: 5_000_000_000,
        len: 851,
    };
    let in_file = NewTaxiiObject {
        body: TaxiiBody::InFile(reference.clone()),
        ..taxii_object(1, 10)
    };
    db.taxii_add("c", &[in_file, taxii_object(2, 10)], None)
        .unwrap();
    let (page, _) = db.taxii_page("c", &query(Position::START, 10)).unwrap();
    let bodies: Vec<&TaxiiBody> = page.iter().map(|o| &o.body).collect();
    assert_eq!(
        bodies,
        [
            &TaxiiBody::InFile(reference),
            &TaxiiBody::Text(r#"{"n":2}"#.into())
        ]
    );
}

/// TAXII: an id and version already there is kept; pages follow insertion order with an opaque
/// position; deletes count; statuses, grants and watermarks are kept.
pub fn taxii_collections_page_and_keep_watermarks(db: &dyn RecordStore) {
    let added = db
        .taxii_add(
            "c",
            &[taxii_object(1, 10), taxii_object(2, 10)],
            Some(("src", Position::from_backend(5))),
        )
        .unwrap();
    assert_eq!(added, [true, true]);
    assert_eq!(
        db.taxii_add("c", &[taxii_object(1, 10), taxii_object(1, 20)], None)
            .unwrap(),
        [false, true]
    );
    assert_eq!(
        db.taxii_watermark("src").unwrap(),
        Position::from_backend(5)
    );
    assert_eq!(db.taxii_watermark("other").unwrap(), Position::START);
    let (first, more) = db.taxii_page("c", &query(Position::START, 2)).unwrap();
    assert_eq!(first.len(), 2);
    assert!(more);
    let (rest, more) = db.taxii_page("c", &query(first[1].position, 2)).unwrap();
    assert_eq!(rest.len(), 1);
    assert!(!more);
    assert!(first[0].date_added < first[1].date_added);
    assert!(first[1].date_added < rest[0].date_added);
    assert!(
        db.taxii_page("other", &query(Position::START, 10))
            .unwrap()
            .0
            .is_empty()
    );
    let last = TaxiiQuery {
        versions: vec![VersionMatch::Last],
        ..query(Position::START, 10)
    };
    let (latest, _) = db.taxii_page("c", &last).unwrap();
    assert_eq!(latest.len(), 2, "one version per object");
    let id = taxii_object(1, 0).id;
    assert_eq!(
        db.taxii_delete("c", &id, &[VersionMatch::All], Tlp::Red)
            .unwrap(),
        2
    );
    assert_eq!(
        db.taxii_delete("c", &id, &[VersionMatch::All], Tlp::Red)
            .unwrap(),
        0
    );

    let status = TaxiiStatus {
        id: "s1".into(),
        collection: "c".into(),
        request_timestamp: 1,
        total: 2,
        successes: "[]".into(),
        failures: "[]".into(),
        success_count: 2,
        failure_count: 0,
    };
    db.taxii_save_status(&status).unwrap();
    assert_eq!(db.taxii_status("s1").unwrap().unwrap(), status);
    assert!(db.taxii_status("s2").unwrap().is_none());

    db.add_user("w", "tok").unwrap();
    db.taxii_grant("w", "c").unwrap();
    assert_eq!(db.taxii_grants("w").unwrap(), ["c"]);
    assert!(db.taxii_revoke("w", "c").unwrap());
    assert!(!db.taxii_revoke("w", "c").unwrap());
    assert!(db.taxii_grants("w").unwrap().is_empty());
}

/// TAXII `match[version]`: pages of any versions hold exactly the matching rows in the order
/// they were added, whatever the page size, also where older versions arrive after newer ones
/// and latest and older versions interleave.
pub fn taxii_version_pages_follow_insertion_order(db: &dyn RecordStore) {
    // (object, version) in the order added: object 3's 5 is older than its 10, and comes later.
    let adds: &[&[(usize, i64)]] = &[
        &[(1, 10), (2, 10), (3, 10), (4, 10)],
        &[(2, 20), (5, 10)],
        &[(3, 5), (4, 30), (6, 10)],
        &[(2, 30), (4, 20), (1, 10)],
    ];
    let mut added: Vec<(usize, i64)> = Vec::new();
    for batch in adds {
        let objects: Vec<NewTaxiiObject> = batch.iter().map(|&(i, v)| taxii_object(i, v)).collect();
        db.taxii_add("c", &objects, None).unwrap();
        for &row in batch.iter() {
            if !added.contains(&row) {
                added.push(row);
            }
        }
    }
    db.taxii_add("other", &[taxii_object(1, 40), taxii_object(7, 10)], None)
        .unwrap();
    let versions_of = |i: usize| added.iter().filter(move |r| r.0 == i).map(|r| r.1);
    let is_latest = |&(i, v): &(usize, i64)| versions_of(i).max() == Some(v);
    let is_first = |&(i, v): &(usize, i64)| versions_of(i).min() == Some(v);
    // The `match[version]` values, and the (object, version) pairs they match in order.
    type Case = (Vec<VersionMatch>, Vec<(usize, i64)>);
    let cases: Vec<Case> = vec![
        (vec![VersionMatch::All], added.clone()),
        (
            vec![VersionMatch::Last],
            added.iter().copied().filter(is_latest).collect(),
        ),
        (
            vec![VersionMatch::First],
            added.iter().copied().filter(is_first).collect(),
        ),
        (
            vec![VersionMatch::First, VersionMatch::Last],
            added
                .iter()
                .copied()
                .filter(|r| is_first(r) || is_latest(r))
                .collect(),
        ),
        (
            vec![VersionMatch::At(10)],
            added.iter().copied().filter(|r| r.1 == 10).collect(),
        ),
    ];
    for (versions, expected) in cases {
        let expected: Vec<String> = expected
            .iter()
            .map(|&(i, v)| format!("{} v{v}", taxii_object(i, v).id))
            .collect();
        for limit in [1, 2, 3, 100] {
            let mut got = Vec::new();
            let mut after = Position::START;
            loop {
                let q = TaxiiQuery {
                    versions: versions.clone(),
                    ..query(after, limit)
                };
                let (page, more) = db.taxii_page("c", &q).unwrap();
                assert!(page.len() as u64 <= limit);
                got.extend(page.iter().map(|o| format!("{} {}", o.id, o.version)));
                match page.last() {
                    Some(last) if more => after = last.position,
                    _ => {
                        assert!(
                            !more,
                            "{versions:?} limit {limit}: `more` after an empty page"
                        );
                        break;
                    }
                }
            }
            assert_eq!(got, expected, "{versions:?}, pages of {limit}");
        }
    }
}

/// TAXII `added_after`: a page holds exactly the collection's objects added after the time,
/// whatever the other collections hold and wherever rows were deleted, including the last.
pub fn taxii_added_after_is_exact(db: &dyn RecordStore) {
    // Collections "a" and "b" in alternate adds of one, two or three objects.
    let mut n = 0;
    for round in 0..12 {
        let collection = if round % 2 == 0 { "a" } else { "b" };
        let objects: Vec<NewTaxiiObject> = (0..1 + round % 3)
            .map(|_| {
                n += 1;
                taxii_object(n, 10)
            })
            .collect();
        db.taxii_add(collection, &objects, None).unwrap();
    }
    for gone in [3, 4, n] {
        for c in ["a", "b"] {
            db.taxii_delete(c, &taxii_object(gone, 10).id, &[], Tlp::Red)
                .unwrap();
        }
    }
    let all = |c: &str| db.taxii_page(c, &query(Position::START, 1000)).unwrap().0;
    let (a, b) = (all("a"), all("b"));
    assert!(!a.is_empty() && !b.is_empty());
    let mut times: Vec<i64> = a.iter().chain(&b).map(|o| o.date_added).collect();
    times.sort();
    times.insert(0, times[0] - 1);
    for t in times.iter().flat_map(|t| [*t - 1, *t, *t + 1]) {
        for (c, objects) in [("a", &a), ("b", &b)] {
            let expected: Vec<&str> = objects
                .iter()
                .filter(|o| o.date_added > t)
                .map(|o| o.id.as_str())
                .collect();
            let q = TaxiiQuery {
                added_after: Some(t),
                ..query(Position::START, 1000)
            };
            let got = db.taxii_page(c, &q).unwrap().0;
            let got: Vec<&str> = got.iter().map(|o| o.id.as_str()).collect();
            assert_eq!(got, expected, "collection {c}, added after {t}");
        }
    }
}

/// The IOC registry folds each (indicator, file) sighting once: the same sighting again, in
/// the same call or a later one, changes nothing; a new one widens the window, lengthens the
/// validity, raises the confidence and gives the indicator a `modified` that only grows;
/// states come back in the order first named.
pub fn ioc_registry_folds_each_sighting_once(db: &dyn RecordStore) {
    let s = |id: &str, file: char, first, last, count, c| IocSighting {
        indicator: format!("indicator--{id}"),
        file: hash(file),
        first_us: first,
        last_us: last,
        count,
        confidence: Confidence::new(c).unwrap(),
        valid_until_us: last + 1_000,
    };
    assert!(db.ioc_fold(&[], 1).unwrap().is_empty());
    let states = db
        .ioc_fold(
            &[
                s("b", 'a', 100, 200, 3, 70),
                s("a", 'a', 50, 60, 1, 70),
                s("b", 'b', 150, 400, 2, 80),
                // Given twice in one call (two records of one STIX file).
                s("b", 'b', 150, 400, 2, 80),
            ],
            1_000,
        )
        .unwrap();
    // (id, first, last, valid until, files, observations, confidence, modified)
    let view = |st: &IocState| {
        (
            st.indicator.clone(),
            st.first_us,
            st.last_us,
            st.valid_until_us,
            st.files,
            st.observations,
            st.confidence.get(),
            st.modified_us,
        )
    };
    let b = |last, until, files, obs, modified| {
        (
            "indicator--b".to_string(),
            100,
            last,
            until,
            files,
            obs,
            80,
            modified,
        )
    };
    assert_eq!(
        states.iter().map(view).collect::<Vec<_>>(),
        [
            b(400, 1_400, 2, 5, 1_001),
            ("indicator--a".to_string(), 50, 60, 1_060, 1, 1, 70, 1_000),
        ]
    );
    // Again, later: nothing new, the same states.
    let again = db
        .ioc_fold(
            &[s("a", 'a', 50, 60, 1, 70), s("b", 'a', 100, 200, 3, 70)],
            9_000,
        )
        .unwrap();
    assert_eq!(
        again.iter().map(view).collect::<Vec<_>>(),
        [
            ("indicator--a".to_string(), 50, 60, 1_060, 1, 1, 70, 1_000),
            b(400, 1_400, 2, 5, 1_001),
        ]
    );
    // A file inside the window with a lower confidence: counted, same version.
    let inside = db.ioc_fold(&[s("b", 'c', 120, 130, 4, 60)], 9_000).unwrap();
    assert_eq!(view(&inside[0]), b(400, 1_400, 3, 9, 1_001));
    // Inside the window but valid for longer (its conversion asked so): a new version.
    let longer = IocSighting {
        valid_until_us: 5_000,
        ..s("b", 'e', 120, 130, 1, 60)
    };
    let longer = db.ioc_fold(&[longer], 9_000).unwrap();
    assert_eq!(view(&longer[0]), b(400, 5_000, 4, 10, 9_000));
    // A later sighting under a clock that went back: `modified` still grows.
    let later = db
        .ioc_fold(&[s("b", 'd', 4_500, 4_600, 1, 60)], 10)
        .unwrap();
    assert_eq!(view(&later[0]), b(4_600, 5_600, 5, 11, 9_001));
}

/// Blobs are named by the SHA-256 of their bytes; storing them again is deduplicated; a
/// dropped stage leaves nothing; unknown hashes are absent.
pub fn blobs_are_content_addressed(store: &dyn BlobStore) {
    let mut staged = store.stage().unwrap();
    std::io::Write::write_all(&mut staged, b"hello").unwrap();
    assert_eq!(staged.written(), 5);
    let first = staged.commit().unwrap();
    assert_eq!(
        first.hash.as_str(),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert!(!first.deduplicated);
    let second = store.put(b"hello").unwrap();
    assert!(second.deduplicated);
    assert_eq!(second.hash, first.hash);
    let mut text = String::new();
    store
        .open(&first.hash)
        .unwrap()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "hello");
    assert_eq!(store.size(&first.hash).unwrap(), Some(5));
    let mut dropped = store.stage().unwrap();
    std::io::Write::write_all(&mut dropped, b"partial").unwrap();
    drop(dropped);
    let partial = Sha256Hex::from_digest(&sha2::Sha256::digest(b"partial"));
    assert!(store.open(&partial).unwrap().is_none());
    assert!(store.open(&hash('0')).unwrap().is_none());
    assert_eq!(store.size(&hash('0')).unwrap(), None);
    // Ranges: exactly the bytes asked for; none of a missing blob; past the end, an error.
    assert_eq!(
        store.read_range(&first.hash, 1, 3).unwrap().as_deref(),
        Some(&b"ell"[..])
    );
    assert_eq!(
        store.read_range(&first.hash, 0, 5).unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        store.read_range(&first.hash, 2, 0).unwrap().as_deref(),
        Some(&b""[..])
    );
    assert_eq!(store.read_range(&hash('0'), 0, 1).unwrap(), None);
    let err = store.read_range(&first.hash, 3, 4).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert!(store.check().is_ok());
}

/// The console's counts: files newest first with paging, jobs by state, rows and reports since
/// a time, TAXII collections, hidden dangers by user and level (honouring the filter).
pub fn summary_counts_what_is_stored(db: &dyn RecordStore) {
    let empty = db.summary(0).unwrap();
    assert_eq!((empty.files, empty.stored_bytes), (0, 0));
    assert_eq!(
        empty.jobs,
        crate::JOB_STATES
            .iter()
            .map(|s| (*s, 0))
            .collect::<Vec<_>>()
    );
    assert!(empty.taxii.is_empty());

    let (a, mut b) = (file('a'), file('b'));
    b.created_at_ms += 10;
    db.record_upload(&a, "t1").unwrap();
    db.record_upload(&b, "t2").unwrap();
    let (page, total) = db.files((1, 1)).unwrap();
    assert_eq!((page, total), (vec![b.clone()], 2), "newest first");
    let (page, _) = db.files((2, 1)).unwrap();
    assert_eq!(page, vec![a.clone()]);
    assert!(db.files((3, 1)).unwrap().0.is_empty());

    let job = db.create_job(&a.hash, "p", &stix_params(), 3, 15).unwrap();
    db.create_job(&b.hash, "p", &stix_params(), 3, 15).unwrap();
    let fence = claim(db, "n1");
    let records = [
        stix_record('a', '1', job.id, 1),
        stix_record('a', '2', job.id, 2),
        stix_record('a', '3', job.id, 3),
    ];
    db.commit_stix_steps(job.id, fence, &records, &progress(3))
        .unwrap();
    let since = records[1].created_at;
    let s = db.summary(since).unwrap();
    assert_eq!(s.files, 2);
    assert_eq!(
        s.stored_bytes,
        a.size + b.size + records.iter().map(|r| r.file_size).sum::<u64>()
    );
    assert_eq!(s.stix_rows_since, 10, "two records of 5 rows since {since}");
    let state =
        |s: &crate::Summary, st: JobStatus| s.jobs.iter().find(|(x, _)| *x == st).map(|(_, n)| *n);
    assert_eq!(state(&s, JobStatus::Running), Some(1));
    assert_eq!(state(&s, JobStatus::Queued), Some(1));
    assert_eq!(state(&s, JobStatus::Failed), Some(0));

    db.add_user("u", "t").unwrap();
    db.add_user("v", "t2").unwrap();
    db.upsert_hidden_dangers("u", &[sample("r1"), sample("r2")])
        .unwrap();
    db.upsert_hidden_dangers("v", &[sample("r1")]).unwrap();
    let level = sample("r1").issue_level;
    assert_eq!(
        db.hidden_danger_counts(&HiddenDangerFilter::default())
            .unwrap(),
        vec![("u".to_string(), level, 2), ("v".to_string(), level, 1)]
    );
    let only_v = HiddenDangerFilter {
        user: Some("v".into()),
        ..Default::default()
    };
    assert_eq!(
        db.hidden_danger_counts(&only_v).unwrap(),
        vec![("v".to_string(), level, 1)]
    );
    assert_eq!(db.summary(0).unwrap().reports_since, 3);
    assert_eq!(db.summary(i64::MAX).unwrap().reports_since, 0);

    db.taxii_add("c", &[taxii_object(1, 10), taxii_object(2, 10)], None)
        .unwrap();
    db.taxii_add("d", &[taxii_object(1, 10)], None).unwrap();
    let s = db.summary(0).unwrap();
    assert_eq!(
        s.taxii
            .iter()
            .map(|c| (c.collection.as_str(), c.objects))
            .collect::<Vec<_>>(),
        [("c", 2), ("d", 1)]
    );
    assert!(s.taxii.iter().all(|c| c.newest_added_us > 0));
    // Deletes and repeated adds keep the counts exact; an emptied collection is not listed.
    let d = &db.taxii_page("d", &query(Position::START, 10)).unwrap().0[0];
    db.taxii_add("c", &[taxii_object(1, 10), taxii_object(3, 10)], None)
        .unwrap();
    db.taxii_delete("c", &taxii_object(2, 10).id, &[VersionMatch::All], Tlp::Red)
        .unwrap();
    db.taxii_delete("d", &d.id, &[VersionMatch::All], Tlp::Red)
        .unwrap();
    let s = db.summary(0).unwrap();
    assert_eq!(
        s.taxii
            .iter()
            .map(|c| (c.collection.as_str(), c.objects))
            .collect::<Vec<_>>(),
        [("c", 2)]
    );
}

/// Runs every [`RecordStore`] scenario as its own test, each on a store from `$make` (a closure
/// answering a fresh, empty store that lives as long as the value it returns).
#[macro_export]
macro_rules! record_store_contract {
    ($make:expr) => {
        mod record_store_contract {
            use super::*;

            #[test]
            fn uploads_tasks_and_steps() {
                let store = ($make)();
                $crate::contract::uploads_tasks_and_steps(&*store);
            }

            #[test]
            fn jobs_run_one_at_a_time_per_file() {
                let store = ($make)();
                $crate::contract::jobs_run_one_at_a_time_per_file(&*store);
            }

            #[test]
            fn leases_fence_a_jobs_writes() {
                let store = ($make)();
                $crate::contract::leases_fence_a_jobs_writes(&*store);
            }

            #[test]
            fn records_commit_with_progress_and_keep_chain_state() {
                let store = ($make)();
                $crate::contract::records_commit_with_progress_and_keep_chain_state(&*store);
            }

            #[test]
            fn users_and_tokens() {
                let store = ($make)();
                $crate::contract::users_and_tokens(&*store);
            }

            #[test]
            fn report_claims_and_rate_limits() {
                let store = ($make)();
                $crate::contract::report_claims_and_rate_limits(&*store);
            }

            #[test]
            fn hidden_dangers_keep_revisions() {
                let store = ($make)();
                $crate::contract::hidden_dangers_keep_revisions(&*store);
            }

            #[test]
            fn taxii_collections_page_and_keep_watermarks() {
                let store = ($make)();
                $crate::contract::taxii_collections_page_and_keep_watermarks(&*store);
            }

            #[test]
            fn summary_counts_what_is_stored() {
                let store = ($make)();
                $crate::contract::summary_counts_what_is_stored(&*store);
            }

            #[test]
            fn ioc_registry_folds_each_sighting_once() {
                let store = ($make)();
                $crate::contract::ioc_registry_folds_each_sighting_once(&*store);
            }

            #[test]
            fn taxii_bodies_come_back_as_stored() {
                let store = ($make)();
                $crate::contract::taxii_bodies_come_back_as_stored(&*store);
            }

            #[test]
            fn taxii_added_after_is_exact() {
                let store = ($make)();
                $crate::contract::taxii_added_after_is_exact(&*store);
            }

            #[test]
            fn taxii_version_pages_follow_insertion_order() {
                let store = ($make)();
                $crate::contract::taxii_version_pages_follow_insertion_order(&*store);
            }

            #[test]
            fn taxii_pages_honour_tlp() {
                let store = ($make)();
                $crate::contract::taxii_pages_honour_tlp(&*store);
            }
        }
    };
}

/// Runs the [`BlobStore`] scenario on a store from `$make`.
#[macro_export]
macro_rules! blob_store_contract {
    ($make:expr) => {
        #[test]
        fn blob_store_contract() {
            let store = ($make)();
            $crate::contract::blobs_are_content_addressed(&*store);
        }
    };
}
