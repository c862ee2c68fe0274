//! Test harness: a real moto server (with bunker's plugin) per test binary, one AWS account
//! per test, and the real `bunker` binary run as a subprocess.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};

pub mod db;

pub const REGION: &str = "us-east-1";

/// The emulator of this test binary. It stops when the test process exits (its stdin closes).
pub struct Emulator {
    pub endpoint: String,
    _child: Mutex<Child>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("BUNKER_TEST_PYTHON") {
        return p.into();
    }
    let out = Command::new("bash")
        .arg(root().join("deploy/local/setup-emulator.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run deploy/local/setup-emulator.sh");
    assert!(out.status.success(), "setup-emulator.sh failed");
    String::from_utf8(out.stdout).unwrap().lines().last().expect("python path").trim().into()
}

pub fn emulator() -> &'static Emulator {
    static EMULATOR: OnceLock<Emulator> = OnceLock::new();
    EMULATOR.get_or_init(|| {
        let log = std::env::temp_dir().join(format!("bunker-moto-{}.log", std::process::id()));
        let mut child = Command::new(python())
            .arg(root().join("deploy/local/motoserver.py"))
            .args(["--port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start moto");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("BUNKER_MOTO_PORT=")
            .unwrap_or_else(|| panic!("moto did not start: {line:?}; see {}", log.display()));
        Emulator { endpoint: format!("http://127.0.0.1:{port}"), _child: Mutex::new(child) }
    })
}

/// Credentials for one emulated account (tests isolate themselves by account id).
#[derive(Clone)]
pub struct Account {
    pub id: String,
    pub endpoint: String,
    key: String,
    secret: String,
    token: String,
}

impl Account {
    /// AssumeRole into `id`: moto maps the returned credentials to that account.
    pub async fn new(id: &str) -> Account {
        let endpoint = emulator().endpoint.clone();
        let base = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new("test", "test", None, None, "test"))
            .load()
            .await;
        let creds = aws_sdk_sts::Client::new(&base)
            .assume_role()
            .role_arn(format!("arn:aws:iam::{id}:role/bunker-test"))
            .role_session_name("bunker-test")
            .send()
            .await
            .expect("assume role")
            .credentials
            .expect("credentials");
        Account {
            id: id.into(),
            endpoint,
            key: creds.access_key_id,
            secret: creds.secret_access_key,
            token: creds.session_token,
        }
    }

    pub async fn sdk(&self, region: &str) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            // Tests that inject throttling also read the emulator: retry like a patient client.
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(10))
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                &self.key,
                &self.secret,
                Some(self.token.clone()),
                None,
                "test",
            ))
            .load()
            .await
    }

    pub async fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk(REGION).await)
    }

    /// The `bunker` command with this account's credentials and a clean environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bunker"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_SESSION_TOKEN", &self.token)
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            // Commands that delete need an explicit owner id; the tests use the old default's
            // shape, one id per account and region (a test that needs none removes it).
            .env("BUNKER_DEPLOYMENT", "bunker-{account}-{region}");
        c
    }

    /// Starts `bunker serve --config config` with its state (leases) and its log (stderr, a
    /// file: a pipe nobody reads would fill and block the service) in `state`; returns the
    /// process, the `/healthz` + `/metrics` address and the log path.
    pub fn serve(&self, config: &str, state: &Path) -> (Child, String, PathBuf) {
        self.serve_with(config, state, &[])
    }

    /// [`Account::serve`] with more environment variables.
    pub fn serve_with(&self, config: &str, state: &Path, env: &[(&str, &str)]) -> (Child, String, PathBuf) {
        std::fs::create_dir_all(state).unwrap();
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let log = state.join(format!("serve-{n}.log"));
        let mut cmd = self.command();
        cmd.args(["serve", "--config", config])
            .env("STATE_DIRECTORY", state)
            .env("BUNKER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start bunker serve");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix("bunker serve: listening on ").map(String::from) else {
            panic!("serve did not start: {line:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        };
        (child, addr, log)
    }

    /// Runs bunker with `args`; returns (exit code, stdout, stderr).
    pub fn bunker(&self, args: &[&str]) -> Run {
        self.bunker_with(args, &[])
    }

    pub fn bunker_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.command();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Run::from(c.output().expect("run bunker"))
    }

    /// Runs bunker as on the instance [`this_instance`] made: IMDSv2 at the emulator, attached
    /// volumes' links in `devices`, its state directory (mount points) `state`, the engine
    /// checking its jobs every second.
    pub fn bunker_on_instance(&self, args: &[&str], devices: &Path, state: &Path) -> Run {
        let imds = format!("{}/_bunker/imds/{}", self.endpoint, self.id);
        let env = [
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str()),
            ("BUNKER_EXPORT_DEVICE_DIR", devices.to_str().unwrap()),
            ("STATE_DIRECTORY", state.to_str().unwrap()),
            ("BUNKER_SERVE_CHECK_INTERVAL", "1s"),
        ];
        self.bunker_with(args, &env)
    }

    /// Creates a KMS key in `region` (with `policy`, else KMS's default); returns its ARN.
    pub async fn kms_key(&self, region: &str, policy: Option<String>) -> String {
        let out = aws_sdk_kms::Client::new(&self.sdk(region).await).create_key().set_policy(policy).send().await;
        out.expect("create key").key_metadata().unwrap().arn().unwrap().to_string()
    }

    /// Creates a single-node Redshift cluster tagged for backup (encrypted under `key`, if
    /// given) in the tests' region.
    pub async fn redshift_cluster(&self, name: &str, key: Option<&str>) {
        aws_sdk_redshift::Client::new(&self.sdk(REGION).await)
            .create_cluster()
            .cluster_identifier(name)
            .node_type("dc2.large")
            .master_username("u")
            .master_user_password("Password1")
            .cluster_type("single-node")
            .set_encrypted(key.map(|_| true))
            .set_kms_key_id(key.map(String::from))
            .tags(aws_sdk_redshift::types::Tag::builder().key("bunker:create_backup").value("true").build())
            .send()
            .await
            .expect("create cluster");
    }

    /// Creates a volume with tags; returns its id.
    pub async fn volume(&self, tags: &[(&str, &str)]) -> String {
        let tags: Vec<Tag> = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect();
        self.ec2()
            .await
            .create_volume()
            .availability_zone(format!("{REGION}a"))
            .size(1)
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::Volume).set_tags(Some(tags)).build(),
            )
            .send()
            .await
            .unwrap()
            .volume_id
            .unwrap()
    }

    /// Starts an EC2 instance with tags; returns its id.
    pub async fn instance(&self, tags: &[(&str, &str)]) -> String {
        let tags: Vec<Tag> = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect();
        let out = self
            .ec2()
            .await
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::Instance).set_tags(Some(tags)).build(),
            )
            .send()
            .await
            .unwrap();
        out.instances()[0].instance_id().unwrap().to_string()
    }

    /// The accounts EBS snapshot `id` in `region` is shared with (createVolumePermission).
    pub async fn snapshot_shared_with(&self, region: &str, id: &str) -> Vec<String> {
        let attr = aws_sdk_ec2::Client::new(&self.sdk(region).await)
            .describe_snapshot_attribute()
            .snapshot_id(id)
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .unwrap();
        attr.create_volume_permissions().iter().filter_map(|p| p.user_id().map(String::from)).collect()
    }

    /// Every snapshot this account owns in REGION: id → tags.
    pub async fn snapshots(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.ec2()
            .await
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap()
            .snapshots()
            .iter()
            .map(|s| {
                let tags =
                    s.tags().iter().map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string())).collect();
                (s.snapshot_id().unwrap().to_string(), tags)
            })
            .collect()
    }
}

/// A finished bunker run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }
}

impl Run {
    /// Asserts exit code 0 and parses stdout as JSON.
    pub fn ok_json(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "bunker failed: {self:#?}");
        self.json()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

pub fn tag_values<'a>(snapshots: &'a BTreeMap<String, BTreeMap<String, String>>, key: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> = snapshots.values().filter_map(|t| t.get(key).map(String::as_str)).collect();
    v.sort();
    v
}

impl Run {
    /// Asserts the exit code (for runs whose output is not inspected).
    pub fn ok_json_or_code(&self, code: i32) {
        assert_eq!(self.code, code, "{self:#?}");
    }
}

/// POSTs `body` to the emulator's plugin endpoints (`/_bunker/faults`, `/_bunker/stats`).
pub fn post(endpoint: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let req =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// GETs `path` from `addr` (`HOST:PORT` or `http://HOST:PORT`); returns the whole response,
/// status line and headers included.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = addr.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// GETs a JSON document from the emulator's plugin endpoints.
pub fn get_json(endpoint: &str, path: &str) -> serde_json::Value {
    serde_json::from_str(http_get(endpoint, path).split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

/// EBS block size.
pub const BLOCK: usize = 524_288;

impl Account {
    /// Makes the emulator answer every request signed with this account's credentials
    /// `503 ServiceUnavailable` (`down`), or normally again: an AWS outage only this test sees.
    pub fn outage(&self, down: bool) {
        let body = serde_json::json!({"access_key": self.key, "down": down}).to_string();
        let answer = post(&self.endpoint, "/_bunker/outage", &body);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    pub async fn ebs(&self) -> aws_sdk_ebs::Client {
        aws_sdk_ebs::Client::new(&self.sdk(REGION).await)
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk(REGION).await).force_path_style(true).build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// A bucket named after this account (bucket names are global in the emulator too).
    pub async fn bucket(&self, name: &str) -> String {
        let bucket = format!("{name}-{}", self.id);
        self.s3().await.create_bucket().bucket(&bucket).send().await.expect("create bucket");
        bucket
    }

    /// Writes a snapshot of `gib` GiB with the EBS direct APIs: `blocks` (index → 512 KiB of
    /// data) on top of `parent`'s. Returns its id.
    pub async fn write_snapshot(&self, gib: i64, parent: Option<&str>, blocks: &BTreeMap<u64, Vec<u8>>) -> String {
        use sha2::Digest;
        let ebs = self.ebs().await;
        let snap = ebs
            .start_snapshot()
            .volume_size(gib)
            .set_parent_snapshot_id(parent.map(String::from))
            .send()
            .await
            .expect("start snapshot");
        let id = snap.snapshot_id().unwrap().to_string();
        let puts = blocks.iter().map(|(i, data)| {
            let ebs = ebs.clone();
            let id = id.clone();
            let sum = base64(&sha2::Sha256::digest(data));
            let data = data.clone();
            async move {
                ebs.put_snapshot_block()
                    .snapshot_id(id)
                    .block_index(*i as i32)
                    .data_length(data.len() as i32)
                    .block_data(aws_sdk_ebs::primitives::ByteStream::from(data))
                    .checksum(sum)
                    .checksum_algorithm(aws_sdk_ebs::types::ChecksumAlgorithm::ChecksumAlgorithmSha256)
                    .send()
                    .await
                    .expect("put block")
            }
        });
        futures::future::join_all(puts.collect::<Vec<_>>()).await;
        ebs.complete_snapshot().snapshot_id(&id).changed_blocks_count(blocks.len() as i32).send().await.unwrap();
        id
    }

    /// The image of a snapshot, read back with ListSnapshotBlocks + GetSnapshotBlock.
    pub async fn read_snapshot(&self, id: &str, gib: usize) -> (Vec<u8>, usize) {
        let ebs = self.ebs().await;
        let mut image = vec![0u8; gib << 30];
        let mut token = None;
        let mut count = 0;
        loop {
            let page = ebs.list_snapshot_blocks().snapshot_id(id).set_next_token(token.take()).send().await.unwrap();
            for b in page.blocks() {
                let i = b.block_index().unwrap() as usize;
                let out = ebs
                    .get_snapshot_block()
                    .snapshot_id(id)
                    .block_index(i as i32)
                    .block_token(b.block_token().unwrap())
                    .send()
                    .await
                    .unwrap();
                let data = out.block_data.collect().await.unwrap().into_bytes();
                image[i * BLOCK..(i + 1) * BLOCK].copy_from_slice(&data);
                count += 1;
            }
            match page.next_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        (image, count)
    }

    /// Reads an object whole.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self.s3().await.get_object().bucket(bucket).key(key).send().await.expect("get object");
        out.body.collect().await.unwrap().into_bytes().to_vec()
    }

    /// Keys under `prefix` (one page is enough for tests).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.s3().await.list_objects_v2().bucket(bucket).prefix(prefix).send().await.expect("list");
        out.contents().iter().filter_map(|o| o.key().map(String::from)).collect()
    }

    pub async fn put_object(&self, bucket: &str, key: &str, data: Vec<u8>) {
        self.s3()
            .await
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(data))
            .send()
            .await
            .expect("put object");
    }
}

/// Standard base64.
pub fn base64(bytes: &[u8]) -> String {
    bunker_actors::stream::base64(bytes)
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough to test with.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The image `blocks` make on a `gib`-GiB volume.
pub fn image(gib: usize, blocks: &BTreeMap<u64, Vec<u8>>) -> Vec<u8> {
    let mut image = vec![0u8; gib << 30];
    for (i, d) in blocks {
        let i = *i as usize;
        image[i * BLOCK..(i + 1) * BLOCK].copy_from_slice(d);
    }
    image
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// BLAKE3 (hex) of `data`: what `b3sum` prints and format 2's `image_blake3` holds.
pub fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// `zstd -d` of an archive, with the standard CLI (what a user without bunker runs).
pub fn zstd_decompress(archive: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the zstd CLI is installed (.ci/run installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let data = archive.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "zstd -d failed");
    out.stdout
}

/// A 1 GiB disk image at `disk` partitioned by `sfdisk` from `table`, with a 40 MiB ext4
/// filesystem made by `mkfs.ext4 -d` from `tree` at sector `sector`.
pub fn disk_with_ext4(disk: &std::path::Path, table: &str, tree: &std::path::Path, sector: u64) {
    use std::io::Write as _;
    std::fs::File::create(disk).unwrap().set_len(1 << 30).unwrap();
    let mut sfdisk = Command::new("sfdisk").arg("-q").arg(disk).stdin(Stdio::piped()).spawn().unwrap();
    sfdisk.stdin.take().unwrap().write_all(table.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk");
    let offset = format!("offset={}", sector * 512);
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-d"]).arg(tree).args(["-E", &offset]).arg(disk).arg("40M");
    assert!(mkfs.status().unwrap().success(), "mkfs.ext4");
}

/// The non-zero 512 KiB blocks of a disk image, as a snapshot holds them.
pub fn allocated(image: &[u8]) -> BTreeMap<u64, Vec<u8>> {
    let blocks = image.chunks(BLOCK).enumerate().filter(|(_, b)| b.iter().any(|x| *x != 0));
    blocks.map(|(i, b)| (i as u64, b.to_vec())).collect()
}

/// A queue and its dead-letter queue named after `name`: (client, queue URL, DLQ URL).
pub async fn queues(a: &Account, name: &str) -> (aws_sdk_sqs::Client, String, String) {
    let sqs = aws_sdk_sqs::Client::new(&a.sdk(REGION).await);
    let q = sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap();
    let d = sqs.create_queue().queue_name(format!("{name}-dlq")).send().await.unwrap().queue_url.unwrap();
    (sqs, q, d)
}

/// EC2's "EBS Snapshot Notification" for a completed snapshot (AWS's documented example).
pub fn ebs_event(snapshot: &str) -> String {
    serde_json::json!({
        "version": "0", "id": format!("ev-{snapshot}"), "detail-type": "EBS Snapshot Notification",
        "source": "aws.ec2", "account": "123456789012", "time": "2037-12-01T01:00:30Z", "region": REGION,
        "resources": [format!("arn:aws:ec2::{REGION}:snapshot/{snapshot}")],
        "detail": {"event": "createSnapshot", "result": "succeeded", "cause": "",
                   "snapshot_id": format!("arn:aws:ec2::{REGION}:snapshot/{snapshot}"),
                   "source": format!("arn:aws:ec2::{REGION}:volume/vol-1")}
    })
    .to_string()
}

/// The emulator plays this account's instance: IMDSv2 under the account's own prefix, and
/// attached volumes' links in `devices`. The instance id.
pub async fn this_instance(a: &Account, devices: &Path) -> String {
    let instance = a.instance(&[("Name", "bunker")]).await;
    let described = a.ec2().await.describe_instances().instance_ids(&instance).send().await.unwrap();
    let zone = described.reservations()[0].instances()[0].placement().unwrap().availability_zone().unwrap().to_string();
    let imds = serde_json::json!({"account": a.id, "instance_id": instance, "az": zone});
    post(&a.endpoint, "/_bunker/imds", &imds.to_string());
    let dirs = serde_json::json!({"account": a.id, "dir": devices});
    post(&a.endpoint, "/_bunker/devices", &dirs.to_string());
    instance
}

/// What the emulator did with this account's volumes: attached, detached, deleted (ids).
pub fn device_history(a: &Account) -> serde_json::Value {
    get_json(&a.endpoint, &format!("/_bunker/devices?account={}", a.id))
}

/// An XFS filesystem of 1 GiB (XFS needs 300 MB at least) holding `tree`: made with
/// `mkfs.xfs` on a loop device, filled through a read-write mount (xfsprogs 6.1 cannot fill
/// one from a directory), unmounted. The image's allocated blocks.
pub fn xfs_image(dir: &Path, tree: &Path) -> BTreeMap<u64, Vec<u8>> {
    fs_image(dir, tree, &["mkfs.xfs", "-q"], 1 << 30)
}

/// A filesystem of `size` bytes made by `mkfs` (its arguments before the image) and filled
/// with `tree` through a read-write loop mount, as a machine's volume is: the image's
/// allocated blocks.
pub fn fs_image(dir: &Path, tree: &Path, mkfs: &[&str], size: u64) -> BTreeMap<u64, Vec<u8>> {
    allocated(&fs_image_bytes(dir, tree, mkfs, size))
}

/// [`fs_image`]'s whole image.
pub fn fs_image_bytes(dir: &Path, tree: &Path, mkfs: &[&str], size: u64) -> Vec<u8> {
    let image = dir.join(format!("{}.img", mkfs[0]));
    std::fs::File::create(&image).unwrap().set_len(size).unwrap();
    assert!(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image).status().unwrap().success(), "{mkfs:?}");
    let mnt = dir.join(format!("{}.mnt", mkfs[0]));
    std::fs::create_dir(&mnt).unwrap();
    assert!(Command::new("mount").arg("-o").arg("loop").arg(&image).arg(&mnt).status().unwrap().success());
    let copied = Command::new("cp").arg("-a").arg(format!("{}/.", tree.display())).arg(&mnt).status();
    let unmounted = Command::new("umount").arg(&mnt).status();
    assert!(copied.unwrap().success() && unmounted.unwrap().success());
    std::fs::read(&image).unwrap()
}

impl Account {
    /// The calls the emulator saw made under each role of this account (the plugin's
    /// `by_role` counter): role name → `service:Operation` → count.
    pub fn calls_by_role(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let stats = get_json(&self.endpoint, "/_bunker/stats");
        let prefix = format!("{}:", self.id);
        stats["by_role"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(role, calls)| {
                let name = role.strip_prefix(&prefix)?;
                let calls = calls.as_object()?.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect();
                Some((name.to_string(), calls))
            })
            .collect()
    }
}

impl Account {
    /// This account's snapshots in `region` that `account` may create volumes from (shared
    /// with it): one `DescribeSnapshots` with `RestorableByUserIds`.
    pub async fn snapshot_ids_restorable_by(&self, region: &str, account: &str) -> Vec<String> {
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk(region).await);
        let out = ec2.describe_snapshots().owner_ids("self").restorable_by_user_ids(account).send().await.unwrap();
        out.snapshots().iter().filter_map(|s| s.snapshot_id().map(String::from)).collect()
    }
}
