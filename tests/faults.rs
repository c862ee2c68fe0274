//! Throttling and quota errors injected by the emulator plugin (20 % of EC2 calls throttled,
//! 20 % of copies refused for quota, copies pending for 2 s): `bunker serve` still completes
//! every copy and share, never has more copies in progress than the cap, and sends no error
//! notification. Its own test binary: the faults are server-wide.

mod common;

use std::time::{Duration, Instant};

use common::{get_json, post, Account, REGION};

const DR: &str = "us-west-2";
const SHARE: &str = "111111111111";

/// The faults are server-wide: tests that set them take turns.
static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts `bunker serve` (stderr to a file in `dir`); returns the process and the log path.
fn start_serve(a: &Account, cfg: &str, dir: &std::path::Path) -> (std::process::Child, std::path::PathBuf) {
    let (child, _, log) = a.serve(cfg, dir);
    (child, log)
}

fn sigterm(child: &mut std::process::Child) -> (Option<i32>, Duration) {
    let t = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    (status.code(), t.elapsed())
}

/// (copies in DR, copies complete and shared).
async fn dr_progress(a: &Account) -> (usize, usize) {
    let dr = aws_sdk_ec2::Client::new(&a.sdk(DR).await);
    let copies = dr.describe_snapshots().owner_ids("self").send().await.unwrap();
    let mut done = 0;
    for s in copies.snapshots() {
        if s.state() == Some(&aws_sdk_ec2::types::SnapshotState::Completed) {
            done += usize::from(a.snapshot_shared_with(DR, s.snapshot_id().unwrap()).await == [SHARE]);
        }
    }
    (copies.snapshots().len(), done)
}

/// Waits until `n` copies exist in DR, complete and shared, never more than `n`.
async fn wait_all_copied(a: &Account, n: usize, limit: Duration) {
    let t = Instant::now();
    loop {
        let (copies, done) = dr_progress(a).await;
        assert!(copies <= n, "a second copy was made: {copies} copies of {n} backups");
        if done == n {
            return;
        }
        assert!(t.elapsed() < limit, "only {done} of {n} copies complete and shared ({copies} exist)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn sigterm_with_work_in_flight_exits_cleanly_and_a_restart_finishes_it() {
    let a = Account::new("610000000002").await;
    let sdk = a.sdk(REGION).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let q = sqs.create_queue().queue_name("bunker-events").send().await.unwrap().queue_url.unwrap();
    let dlq = sqs.create_queue().queue_name("bunker-events-dlq").send().await.unwrap().queue_url.unwrap();
    for _ in 0..10 {
        a.volume(&[("bunker:create_backup", "true")]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    std::fs::write(
        &cfg,
        format!(
            "regions = [\"{REGION}\"]\ndr_regions = [\"{DR}\"]\nshare_accounts = [\"{SHARE}\"]\n\
             schedule.create = \"\"\nschedule.clean = \"\"\n\
             [serve]\nkinds = \"ebs\"\nlisten = \"127.0.0.1:0\"\ncheck_interval = \"1s\"\nreconcile_interval = \"1h\"\n\
             shutdown_deadline = \"2s\"\nqueue_url = \"{q}\"\ndead_letter_queue_url = \"{dlq}\"\n"
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    a.bunker(&["ebs", "create-backups", "--config", &cfg, "--json"]).ok_json();

    let faults = FAULTS.lock().await;
    post(&a.endpoint, "/_bunker/faults", r#"{"copy_pending_seconds": 4}"#);
    let (mut child, log) = start_serve(&a, &cfg, dir.path());
    // A command in flight: its message must survive the shutdown.
    sqs.send_message().queue_url(&q).message_body(r#"{"action":"reconcile"}"#).send().await.unwrap();
    let t = Instant::now();
    while dr_progress(&a).await.0 == 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "no copy started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, took) = sigterm(&mut child);
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(6), "exit within the 2 s deadline (+ slack): {took:?}");
    let (copies, done) = dr_progress(&a).await;
    assert!(done < 10, "work was still in flight at SIGTERM ({copies} copies, {done} done)");
    post(&a.endpoint, "/_bunker/faults", "{}");
    drop(faults);

    let (mut child, log) = start_serve(&a, &cfg, dir.path());
    wait_all_copied(&a, 10, Duration::from_secs(60)).await;
    // The interrupted command message comes back after its visibility timeout and is handled.
    let t = Instant::now();
    loop {
        use aws_sdk_sqs::types::QueueAttributeName as N;
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&q)
            .attribute_names(N::ApproximateNumberOfMessages)
            .attribute_names(N::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let a = attrs.attributes().unwrap();
        if a[&N::ApproximateNumberOfMessages] == "0" && a[&N::ApproximateNumberOfMessagesNotVisible] == "0" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "the interrupted message was never handled: {a:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (code, _) = sigterm(&mut child);
    assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&log).unwrap());
}

#[tokio::test]
async fn throttling_and_quota_faults_defer_but_everything_completes() {
    let a = Account::new("610000000001").await;
    let sdk = a.sdk(REGION).await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let topic = sns.create_topic().name("bunker-errors").send().await.unwrap().topic_arn.unwrap();
    let inbox = sqs.create_queue().queue_name("errors-inbox").send().await.unwrap().queue_url.unwrap();
    let inbox_arn = format!("arn:aws:sqs:{REGION}:{}:errors-inbox", a.id);
    sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(&inbox_arn).send().await.unwrap();
    for _ in 0..30 {
        a.volume(&[("bunker:create_backup", "true")]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunker.toml");
    std::fs::write(
        &cfg,
        format!(
            "regions = [\"{REGION}\"]\ndr_regions = [\"{DR}\"]\nshare_accounts = [\"{SHARE}\"]\nerror_sns_topic = \"{topic}\"\n\
             schedule.create = \"\"\nschedule.clean = \"\"\n\
             [serve]\nkinds = \"ebs\"\nlisten = \"127.0.0.1:0\"\ncheck_interval = \"1s\"\nreconcile_interval = \"1h\"\n"
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    a.bunker(&["ebs", "create-backups", "--config", &cfg, "--json"]).ok_json();

    let endpoint = &a.endpoint;
    let _faults = FAULTS.lock().await;
    post(
        endpoint,
        "/_bunker/faults",
        r#"{"throttle": {"ec2:*": 0.2}, "quota": {"ec2:CopySnapshot": 0.2}, "copy_pending_seconds": 2}"#,
    );
    let (mut child, log) = start_serve(&a, &cfg, dir.path());

    wait_all_copied(&a, 30, Duration::from_secs(120)).await;
    for (id, _) in a.snapshots().await {
        assert_eq!(a.snapshot_shared_with(REGION, &id).await, [SHARE], "{id}");
    }
    let stats = get_json(endpoint, "/_bunker/stats");
    post(endpoint, "/_bunker/faults", "{}");
    let injected = stats["injected"].as_object().unwrap();
    let throttled: u64 =
        injected.iter().filter(|(k, _)| k.starts_with("throttle:")).map(|(_, v)| v.as_u64().unwrap()).sum();
    let quota = injected.get("quota:ec2:CopySnapshot").and_then(|v| v.as_u64()).unwrap_or(0);
    eprintln!("injected: {throttled} throttles, {quota} quota errors; stats {stats}");
    assert!(throttled > 10 && quota > 0, "faults were injected: {stats}");
    let max = stats["max_pending_copies"][format!("{}:{DR}", a.id)].as_u64().unwrap();
    assert!((1..=20).contains(&max), "copies in progress at once: {max} (cap 20)");

    // No error notification for deferrals and retries.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let msgs = sqs.receive_message().queue_url(&inbox).max_number_of_messages(10).send().await.unwrap();
    assert!(msgs.messages().is_empty(), "error notifications: {:?}", msgs.messages());

    let (code, _) = sigterm(&mut child);
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("deferred: quota"), "quota deferrals are logged as such");
}
