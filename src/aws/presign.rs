//! Presigned requests the Rust SDK does not make itself: the `PreSignedUrl` of a cross-region
//! `CopyDBClusterSnapshot`, which AWS requires for DocumentDB (and for RDS and Aurora in
//! GovCloud). It is the same call, as it would be made in the source region, signed with
//! SigV4 in the query string by `aws-sigv4` (the SDK's own signer) with this process's
//! credentials, valid for an hour.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bunker_actors::ports::{ErrorKind, PortError};

/// How long the presigned request stays valid (the copy starts at once).
const VALID_FOR: Duration = Duration::from_secs(3600);

/// What the presigned `CopyDBClusterSnapshot` asks for.
pub(crate) struct ClusterCopy<'a> {
    /// The region the snapshot is in.
    pub source_region: &'a str,
    /// The region the copy is made in.
    pub destination_region: &'a str,
    /// The source snapshot's ARN.
    pub source_arn: &'a str,
    /// The copy's identifier.
    pub target: &'a str,
    /// The key of the copy, in the destination region.
    pub kms_key: Option<&'a str>,
}

/// Whether a cross-region copy of a cluster snapshot of `engine` needs a presigned URL:
/// DocumentDB always; RDS and Aurora only in GovCloud.
pub(crate) fn needs_presigned_url(docdb: bool, source_region: &str, destination_region: &str) -> bool {
    source_region != destination_region && (docdb || destination_region.starts_with("us-gov-"))
}

/// The presigned URL of `copy`, signed for service `rds` (DocumentDB's signing name) in the
/// source region.
pub(crate) async fn cluster_copy_url(
    credentials: Option<&SharedCredentialsProvider>,
    copy: &ClusterCopy<'_>,
) -> Result<String, PortError> {
    let fail =
        |what: String| PortError::new(ErrorKind::Internal, None, format!("presigning CopyDBClusterSnapshot: {what}"));
    let provider = credentials.ok_or_else(|| fail("no credentials".into()))?;
    let identity: Identity = provider.provide_credentials().await.map_err(|e| fail(e.to_string()))?.into();
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("Action", "CopyDBClusterSnapshot")
        .append_pair("Version", "2014-10-31")
        .append_pair("SourceDBClusterSnapshotIdentifier", copy.source_arn)
        .append_pair("TargetDBClusterSnapshotIdentifier", copy.target)
        .append_pair("SourceRegion", copy.source_region)
        .append_pair("DestinationRegion", copy.destination_region);
    if let Some(key) = copy.kms_key {
        query.append_pair("KmsKeyId", key);
    }
    let suffix = if copy.source_region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    let url = format!("https://rds.{}.{suffix}/?{}", copy.source_region, query.finish());
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(VALID_FOR);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(copy.source_region)
        .name("rds")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| fail(e.to_string()))?
        .into();
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| fail(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params).map_err(|e| fail(e.to_string()))?.into_parts();
    let mut signed = form_urlencoded::Serializer::new(String::new());
    for (name, value) in instructions.params() {
        signed.append_pair(name, value);
    }
    Ok(format!("{url}&{}", signed.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_url_is_the_copy_in_the_source_region_signed_there() {
        let creds = aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", Some("tok+en/=".into()), None, "t");
        let provider = SharedCredentialsProvider::new(creds);
        let copy = ClusterCopy {
            source_region: "us-east-1",
            destination_region: "eu-west-1",
            source_arn: "arn:aws:rds:us-east-1:111111111111:cluster-snapshot:s1",
            target: "s1-copy",
            kms_key: Some("arn:aws:kms:eu-west-1:111111111111:key/k"),
        };
        let url = cluster_copy_url(Some(&provider), &copy).await.unwrap();
        assert!(url.starts_with("https://rds.us-east-1.amazonaws.com/?Action=CopyDBClusterSnapshot&"), "{url}");
        let pairs: std::collections::BTreeMap<String, String> =
            form_urlencoded::parse(url.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
        assert_eq!(pairs["SourceDBClusterSnapshotIdentifier"], copy.source_arn);
        assert_eq!(pairs["DestinationRegion"], "eu-west-1");
        assert_eq!(pairs["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert!(pairs["X-Amz-Credential"].ends_with("/us-east-1/rds/aws4_request"), "{pairs:?}");
        assert_eq!(pairs["X-Amz-Expires"], "3600");
        assert_eq!(pairs["X-Amz-Security-Token"], "tok+en/=", "the token survives the encoding");
        assert_eq!(pairs["X-Amz-Signature"].len(), 64);
        assert!(needs_presigned_url(true, "us-east-1", "eu-west-1"));
        assert!(!needs_presigned_url(true, "us-east-1", "us-east-1"));
        assert!(!needs_presigned_url(false, "us-east-1", "eu-west-1"));
        assert!(needs_presigned_url(false, "us-gov-east-1", "us-gov-west-1"));
    }
}
