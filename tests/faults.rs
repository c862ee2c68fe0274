//! Throttling and quota errors injected by the emulator plugin (20 % of EC2 calls throttled,
//! 20 % of copies refused for quota, copies pending for 2 s): `bunker serve` still completes
//! every copy and share, never has more copies in progress than the cap, and sends no error
//! notification. Its own test binary: the faults are server-wide.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Account, REGION};

const DR: &str = "us-west-2";
const SHARE: &str = "111111111111";

fn post(endpoint: &str, path: &str, body: &str) -> String {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::Write;
    let req =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn get_json(endpoint: &str, path: &str) -> serde_json::Value {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::Write;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap()
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
    post(
        endpoint,
        "/_bunker/faults",
        r#"{"throttle": {"ec2:*": 0.2}, "quota": {"ec2:CopySnapshot": 0.2}, "copy_pending_seconds": 2}"#,
    );
    let mut cmd = a.command();
    cmd.args(["serve", "--config", &cfg])
        .env("STATE_DIRECTORY", dir.path())
        .env("BUNKER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("bunker serve: listening on"), "{line}");

    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let dr = aws_sdk_ec2::Client::new(&a.sdk(DR).await);
    let t = Instant::now();
    loop {
        let copies = dr.describe_snapshots().owner_ids("self").send().await.unwrap();
        let done =
            copies.snapshots().iter().filter(|s| s.state() == Some(&aws_sdk_ec2::types::SnapshotState::Completed));
        let mut all_shared = true;
        let mut n = 0;
        for s in done {
            n += 1;
            let attr = dr
                .describe_snapshot_attribute()
                .snapshot_id(s.snapshot_id().unwrap())
                .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                .send()
                .await
                .unwrap();
            all_shared &= attr.create_volume_permissions().len() == 1;
        }
        assert!(copies.snapshots().len() <= 30, "a second copy was made");
        if n == 30 && all_shared {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "only {n} of 30 copies complete and shared");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for s in ec2.describe_snapshots().owner_ids("self").send().await.unwrap().snapshots() {
        let attr = ec2
            .describe_snapshot_attribute()
            .snapshot_id(s.snapshot_id().unwrap())
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .unwrap();
        assert_eq!(attr.create_volume_permissions()[0].user_id(), Some(SHARE));
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

    let pid = child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("deferred: quota"), "quota deferrals are logged as such");
}
