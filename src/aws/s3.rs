//! Archives in S3: ranged reads, small whole-object writes, and multipart uploads with a
//! CRC32C checksum on every part (S3 rejects a part whose bytes do not match it).

use async_trait::async_trait;
use aws_config::SdkConfig;

use super::CallHealth;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bunker_actors::ports::{ArchiveStore, ErrorKind, ObjectInfo, PortError, StoredPart};

use super::port_error;

/// A bucket and a key prefix.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// Sent as ExpectedBucketOwner on every request: S3 refuses the request (403) when
    /// another account owns the bucket — one deleted and re-created by someone else included.
    owner: Option<String>,
}

/// An S3 client for `conf`. Path-style addressing when an endpoint override is set
/// (emulators resolve no bucket host names).
pub(crate) fn client(conf: &SdkConfig, calls: &CallHealth) -> aws_sdk_s3::Client {
    let path_style =
        std::env::var_os("AWS_ENDPOINT_URL").is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(conf).force_path_style(path_style).interceptor(calls.clone()).build(),
    )
}

impl S3Store {
    /// A store under `s3://bucket/prefix`; with `owner`, only while that account owns the bucket.
    pub fn new(conf: &SdkConfig, calls: &CallHealth, bucket: String, prefix: String, owner: Option<String>) -> Self {
        S3Store { client: client(conf, calls), bucket, prefix: prefix.trim_matches('/').to_string(), owner }
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn relative<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix).and_then(|k| k.strip_prefix('/')).unwrap_or(full)
        }
    }
}

#[async_trait]
impl ArchiveStore for S3Store {
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full(key))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, PortError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(self.full(key))
            .send()
            .await
        {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => {
                let e = port_error("s3:HeadObject", e);
                // HEAD has no body: a missing key is a bare 404 ("NotFound").
                if e.kind == ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, PortError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(self.full(key))
            .range(format!("bytes={offset}-{}", offset + len - 1))
            .send()
            .await
            .map_err(|e| port_error("s3:GetObject", e))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| PortError::new(ErrorKind::Transient, None, format!("s3:GetObject body: {e}")))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), PortError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(self.full(key))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| port_error("s3:PutObject", e))?;
        Ok(())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), PortError> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(self.full(k)).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PortError::new(ErrorKind::Internal, None, e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| PortError::new(ErrorKind::Internal, None, e.to_string()))?;
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .delete(delete)
                .send()
                .await
                .map_err(|e| port_error("s3:DeleteObjects", e))?;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        Ok(self.list_objects(prefix).await?.into_iter().map(|o| o.key).collect())
    }

    async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>, PortError> {
        let mut objects = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .prefix(self.full(prefix))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| port_error("s3:ListObjectsV2", e))?;
            objects.extend(out.contents().iter().filter_map(|o| {
                Some(ObjectInfo {
                    key: self.relative(o.key()?).to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().map(|t| t.trim_matches('"').to_string()),
                })
            }));
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    fn s3_location(&self) -> Option<(String, String)> {
        Some((self.bucket.clone(), self.prefix.clone()))
    }

    async fn find_upload(&self, key: &str) -> Result<Option<String>, PortError> {
        let full = self.full(key);
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .prefix(&full)
            .send()
            .await
            .map_err(|e| port_error("s3:ListMultipartUploads", e))?;
        let newest = out
            .uploads()
            .iter()
            .filter(|u| u.key() == Some(full.as_str()))
            .max_by_key(|u| u.initiated().map(|t| (t.secs(), t.subsec_nanos())))
            .and_then(|u| u.upload_id().map(String::from));
        Ok(newest)
    }

    async fn start_upload(&self, key: &str) -> Result<String, PortError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(self.full(key))
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .content_type("application/zstd")
            .send()
            .await
            .map_err(|e| port_error("s3:CreateMultipartUpload", e))?;
        out.upload_id()
            .map(String::from)
            .ok_or_else(|| PortError::new(ErrorKind::Internal, None, "s3:CreateMultipartUpload returned no upload id"))
    }

    async fn list_parts(&self, key: &str, upload: &str) -> Result<Vec<StoredPart>, PortError> {
        let mut parts = Vec::new();
        let mut marker = None;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(self.full(key))
                .upload_id(upload)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|e| port_error("s3:ListParts", e))?;
            parts.extend(out.parts().iter().filter_map(|p| {
                Some(StoredPart {
                    number: p.part_number()? as u32,
                    size: p.size()?.max(0) as u64,
                    etag: p.e_tag()?.to_string(),
                    crc32c: p.checksum_crc32_c().map(String::from),
                })
            }));
            match out.next_part_number_marker() {
                Some(m) if out.is_truncated() == Some(true) => marker = Some(m.to_string()),
                _ => break,
            }
        }
        Ok(parts)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        _offset: u64,
        data: bytes::Bytes,
        crc32c: &str,
    ) -> Result<StoredPart, PortError> {
        let size = data.len() as u64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(self.full(key))
            .upload_id(upload)
            .part_number(number as i32)
            .content_length(size as i64)
            .checksum_crc32_c(crc32c)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| port_error("s3:UploadPart", e))?;
        let etag = out
            .e_tag()
            .map(String::from)
            .ok_or_else(|| PortError::new(ErrorKind::Internal, None, "s3:UploadPart returned no ETag"))?;
        Ok(StoredPart { number, size, etag, crc32c: Some(crc32c.to_string()) })
    }

    async fn complete_upload(&self, key: &str, upload: &str, parts: &[StoredPart]) -> Result<(), PortError> {
        let parts = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(&p.etag)
                    .set_checksum_crc32_c(p.crc32c.clone())
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(self.full(key))
            .upload_id(upload)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| port_error("s3:CompleteMultipartUpload", e))?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload: &str) -> Result<(), PortError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(self.full(key))
            .upload_id(upload)
            .send()
            .await
            .map_err(|e| port_error("s3:AbortMultipartUpload", e))?;
        Ok(())
    }
}
