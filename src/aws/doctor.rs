//! The AWS side of `bunker doctor`: read-only questions whose answers become
//! `bunker_protocol::doctor` facts (nothing here judges them), and the only two writes doctor
//! makes: a multipart upload aborted at once (the write probe) and this install's record in
//! the lease table.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use bunker_actors::ports::PortError;
use bunker_protocol::doctor::{BucketFacts, InstallRecord, KeyFacts, KeyUse, QueueFacts};
use bunker_protocol::roles::Function;

use super::{client, port_error, Aws};

/// The answer, `None` when S3 says the bucket has no such configuration, or the error's text
/// (a missing bucket is an error, not a missing configuration).
fn absent_is_none<T>(r: Result<T, PortError>) -> Result<Option<T>, String> {
    const NOT_CONFIGURED: [&str; 3] = [
        "ServerSideEncryptionConfigurationNotFoundError",
        "ObjectLockConfigurationNotFoundError",
        "NoSuchLifecycleConfiguration",
    ];
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code.as_deref().is_some_and(|c| NOT_CONFIGURED.contains(&c)) => Ok(None),
        Err(e) => Err(e.message),
    }
}

/// The account and ARN `conf`'s credentials resolve to (`sts:GetCallerIdentity`).
async fn identity(conf: &aws_config::SdkConfig, calls: &super::CallHealth) -> Result<(String, String), PortError> {
    let out = client!(aws_sdk_sts, conf, calls)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| port_error("sts:GetCallerIdentity", e))?;
    Ok((out.account().unwrap_or_default().to_string(), out.arn().unwrap_or_default().to_string()))
}

impl Aws {
    /// The account and ARN the credentials resolve to.
    pub async fn caller(&self) -> Result<(String, String), PortError> {
        identity(&self.sdk, &self.calls).await
    }

    /// The ARN the calls of `function` run as in `region` (its role's session, once assumed).
    pub async fn caller_as(&self, function: Function, region: &str) -> Result<String, PortError> {
        Ok(identity(&self.conf(function, region), &self.calls).await?.1)
    }

    /// How many availability zones `region` reports (proves it answers these credentials).
    pub async fn zones(&self, region: &str) -> Result<usize, PortError> {
        let out = client!(aws_sdk_ec2, &self.regional(region), self.calls)
            .describe_availability_zones()
            .send()
            .await
            .map_err(|e| port_error("ec2:DescribeAvailabilityZones", e))?;
        Ok(out.availability_zones().len())
    }

    /// A queue's ARN, redrive target and encryption.
    pub async fn queue_facts(&self, url: &str) -> Result<QueueFacts, PortError> {
        let out = client!(aws_sdk_sqs, &self.sdk, self.calls)
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| port_error("sqs:GetQueueAttributes", e))?;
        let attrs = out.attributes().cloned().unwrap_or_default();
        let get = |n: QueueAttributeName| attrs.get(&n).cloned();
        let redrive_to = get(QueueAttributeName::RedrivePolicy)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
            .and_then(|p| p["deadLetterTargetArn"].as_str().map(String::from));
        let encrypted = get(QueueAttributeName::KmsMasterKeyId).is_some_and(|k| !k.is_empty())
            || get(QueueAttributeName::SqsManagedSseEnabled).as_deref() == Some("true");
        Ok(QueueFacts { arn: get(QueueAttributeName::QueueArn).unwrap_or_default(), redrive_to, encrypted })
    }

    /// Whether a topic (in its own region) is encrypted with a KMS key.
    pub async fn topic_encrypted(&self, arn: &str) -> Result<bool, PortError> {
        let region = arn.split(':').nth(3).unwrap_or_default();
        let out = client!(aws_sdk_sns, &self.regional(region), self.calls)
            .get_topic_attributes()
            .topic_arn(arn)
            .send()
            .await
            .map_err(|e| port_error("sns:GetTopicAttributes", e))?;
        Ok(out.attributes().and_then(|a| a.get("KmsMasterKeyId")).is_some_and(|k| !k.is_empty()))
    }

    /// A table's status and whether its key is bunker's (string partition key `pk`, no sort key).
    pub async fn lease_table_facts(&self, table: &str) -> Result<(String, bool), PortError> {
        let out = client!(aws_sdk_dynamodb, &self.sdk, self.calls)
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| port_error("dynamodb:DescribeTable", e))?;
        let t = out.table();
        let keys = t.map(|t| t.key_schema()).unwrap_or_default();
        let key_ok = keys.len() == 1
            && keys[0].attribute_name() == "pk"
            && t.map(|t| t.attribute_definitions())
                .unwrap_or_default()
                .iter()
                .any(|d| d.attribute_name() == "pk" && d.attribute_type().as_str() == "S");
        let status = t.and_then(|t| t.table_status()).map(|s| s.as_str().to_string()).unwrap_or_default();
        Ok((status, key_ok))
    }

    /// The install record under `key` in the lease table.
    pub async fn install_record(&self, table: &str, key: &str) -> Result<Option<InstallRecord>, PortError> {
        let out = client!(aws_sdk_dynamodb, &self.sdk, self.calls)
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(key.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| port_error("dynamodb:GetItem", e))?;
        let Some(item) = out.item() else { return Ok(None) };
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        Ok(Some(InstallRecord { fingerprint: text("fingerprint"), host: text("host"), seen: text("seen") }))
    }

    /// Writes this install's record under `key`.
    pub async fn put_install_record(&self, table: &str, key: &str, record: &InstallRecord) -> Result<(), PortError> {
        client!(aws_sdk_dynamodb, &self.sdk, self.calls)
            .put_item()
            .table_name(table)
            .item("pk", AttributeValue::S(key.into()))
            .item("fingerprint", AttributeValue::S(record.fingerprint.clone()))
            .item("host", AttributeValue::S(record.host.clone()))
            .item("seen", AttributeValue::S(record.seen.clone()))
            .send()
            .await
            .map_err(|e| port_error("dynamodb:PutItem", e))?;
        Ok(())
    }

    /// An event bus's ARN (`bus`: a name in `region`, or an ARN).
    pub async fn event_bus_arn(&self, region: &str, bus: &str) -> Result<String, PortError> {
        let region = bus.strip_prefix("arn:").and_then(|r| r.split(':').nth(2)).unwrap_or(region);
        let out = client!(aws_sdk_eventbridge, &self.regional(region), self.calls)
            .describe_event_bus()
            .name(bus)
            .send()
            .await
            .map_err(|e| port_error("events:DescribeEventBus", e))?;
        Ok(out.arn().unwrap_or(bus).to_string())
    }

    /// An AWS Backup vault's ARN.
    pub async fn vault_arn(&self, region: &str, name: &str) -> Result<String, PortError> {
        let out = client!(aws_sdk_backup, &self.conf(Function::Lifecycle, region), self.calls)
            .describe_backup_vault()
            .backup_vault_name(name)
            .send()
            .await
            .map_err(|e| port_error("backup:DescribeBackupVault", e))?;
        Ok(out.backup_vault_arn().unwrap_or(name).to_string())
    }

    /// A KMS key's ARN, state, default policy (if readable) and grants (if listable).
    pub async fn key_facts(&self, region: &str, key: &str, use_: KeyUse) -> Result<KeyFacts, PortError> {
        let kms = client!(aws_sdk_kms, &self.conf(use_.function(), region), self.calls);
        let out = kms.describe_key().key_id(key).send().await.map_err(|e| port_error("kms:DescribeKey", e))?;
        let meta = out.key_metadata();
        let arn = meta.and_then(|m| m.arn()).unwrap_or(key).to_string();
        let state = meta.and_then(|m| m.key_state()).map(|s| s.as_str().to_string()).unwrap_or_default();
        let policy = kms.get_key_policy().key_id(&arn).policy_name("default").send().await.ok();
        let grants = kms.list_grants().key_id(&arn).send().await.ok();
        let grants = grants
            .map(|g| g.grants().to_vec())
            .unwrap_or_default()
            .into_iter()
            .map(|g| {
                let ops = g.operations().iter().map(|o| o.as_str().to_string()).collect();
                (g.grantee_principal().unwrap_or_default().to_string(), ops)
            })
            .collect();
        Ok(KeyFacts { arn, state, policy: policy.and_then(|p| p.policy().map(String::from)), grants })
    }

    /// What S3 says about `bucket`, every request carrying `owner` as ExpectedBucketOwner.
    pub async fn bucket_facts(&self, region: &str, bucket: &str, owner: &str) -> BucketFacts {
        let s3 = super::s3::client(&self.conf(Function::Export, region), &self.calls);
        let owned = s3.head_bucket().bucket(bucket).expected_bucket_owner(owner).send().await;
        let owner_fact = owned.map(|_| ()).map_err(|e| port_error("s3:HeadBucket", e).message);
        let encryption = s3.get_bucket_encryption().bucket(bucket).expected_bucket_owner(owner).send().await.map(|o| {
            let rule = o.server_side_encryption_configuration().and_then(|c| c.rules().first().cloned())?;
            let default = rule.apply_server_side_encryption_by_default()?;
            Some((
                default.sse_algorithm().as_str().to_string(),
                default.kms_master_key_id().map(String::from),
                rule.bucket_key_enabled().unwrap_or(false),
            ))
        });
        let encryption =
            absent_is_none(encryption.map_err(|e| port_error("s3:GetBucketEncryption", e))).map(Option::flatten);
        let versioning = s3.get_bucket_versioning().bucket(bucket).expected_bucket_owner(owner).send().await;
        let versioning = versioning
            .map(|v| v.status().is_some_and(|s| s.as_str() == "Enabled"))
            .map_err(|e| port_error("s3:GetBucketVersioning", e).message);
        let lock =
            s3.get_object_lock_configuration().bucket(bucket).expected_bucket_owner(owner).send().await.map(|o| {
                let retention = o.object_lock_configuration()?.rule()?.default_retention()?;
                let days =
                    retention.days().map(|d| d.max(0) as u32).or(retention.years().map(|y| y.max(0) as u32 * 365));
                Some((retention.mode()?.as_str().to_string(), days?))
            });
        let object_lock =
            absent_is_none(lock.map_err(|e| port_error("s3:GetObjectLockConfiguration", e))).map(Option::flatten);
        let lifecycle =
            s3.get_bucket_lifecycle_configuration().bucket(bucket).expected_bucket_owner(owner).send().await;
        let lifecycle = lifecycle.map(|l| {
            l.rules()
                .iter()
                .filter(|r| r.status().as_str() == "Enabled")
                .filter_map(|r| r.abort_incomplete_multipart_upload()?.days_after_initiation())
                .map(|d| d.max(0) as u32)
                .min()
        });
        let abort_incomplete_days =
            absent_is_none(lifecycle.map_err(|e| port_error("s3:GetBucketLifecycleConfiguration", e)))
                .map(Option::flatten);
        BucketFacts {
            owner: owner_fact,
            encryption,
            versioning,
            object_lock,
            abort_incomplete_days,
            writable: upload_probe(&s3, bucket, owner).await,
        }
    }
}

/// Starts a multipart upload under `.bunker-doctor/` and aborts it at once: proves the role
/// may write without leaving an object (which Object Lock would then keep).
async fn upload_probe(s3: &aws_sdk_s3::Client, bucket: &str, owner: &str) -> Result<(), String> {
    let key = ".bunker-doctor/probe";
    let out = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .expected_bucket_owner(owner)
        .send()
        .await
        .map_err(|e| port_error("s3:CreateMultipartUpload", e).message)?;
    let id = out.upload_id().unwrap_or_default();
    s3.abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .expected_bucket_owner(owner)
        .send()
        .await
        .map_err(|e| port_error("s3:AbortMultipartUpload", e).message)?;
    Ok(())
}
