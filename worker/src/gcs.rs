//! The outputs bucket (`GDTS_GCS_BUCKET`): whole run outputs, and run
//! records a stopping worker could not write to MongoDB (`spool/`), which any
//! worker writes later (see `log_sink`).

use std::time::Duration;

use gcloud_storage::client::Client;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gdts_common::config::GcsConfig;

pub struct OutputStore {
    client: Client,
    config: GcsConfig,
}

impl OutputStore {
    pub async fn connect(config: GcsConfig) -> anyhow::Result<Self> {
        Ok(OutputStore {
            client: gdts_runtime::gcs_client(&config).await?,
            config,
        })
    }

    /// Uploads `path` as `object`, retrying a few times; returns its `gs://` URI.
    pub async fn upload(&self, object: &str, path: &std::path::Path) -> anyhow::Result<String> {
        let data = tokio::fs::read(path).await?;
        let request = UploadObjectRequest {
            bucket: self.config.bucket.clone(),
            ..Default::default()
        };
        let mut media = Media::new(object.to_string());
        media.content_type = "text/plain; charset=utf-8".into();
        let upload_type = UploadType::Simple(media);
        let mut wait = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self
                .client
                .upload_object(&request, data.clone(), &upload_type)
                .await
            {
                Ok(_) => return Ok(self.config.uri(object)),
                Err(e) if attempt >= 4 => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(object, error = %e, "output upload failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// Spooled run records in the bucket: (object name, generation), oldest
    /// name first.
    pub async fn spooled(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let mut found = Vec::new();
        let mut page_token = None;
        loop {
            let request = ListObjectsRequest {
                bucket: self.config.bucket.clone(),
                prefix: Some(SPOOL_PREFIX.into()),
                page_token,
                ..Default::default()
            };
            let page = self.client.list_objects(&request).await?;
            found.extend(
                page.items
                    .unwrap_or_default()
                    .into_iter()
                    .map(|o| (o.name, o.generation)),
            );
            match page.next_page_token {
                Some(token) if !token.is_empty() => page_token = Some(token),
                _ => break,
            }
        }
        found.sort();
        Ok(found)
    }

    pub async fn download(&self, object: &str) -> anyhow::Result<Vec<u8>> {
        let request = GetObjectRequest {
            bucket: self.config.bucket.clone(),
            object: object.to_string(),
            ..Default::default()
        };
        Ok(self
            .client
            .download_object(&request, &Range::default())
            .await?)
    }

    /// Deletes `object` if it is still at `generation` (another worker may
    /// have replayed and deleted it already: that is not an error).
    pub async fn delete(&self, object: &str, generation: i64) -> anyhow::Result<()> {
        let request = DeleteObjectRequest {
            bucket: self.config.bucket.clone(),
            object: object.to_string(),
            if_generation_match: Some(generation),
            ..Default::default()
        };
        match self.client.delete_object(&request).await {
            Ok(()) => Ok(()),
            Err(gcloud_storage::http::Error::Response(e)) if e.code == 404 || e.code == 412 => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Where spooled run records go in the bucket.
pub const SPOOL_PREFIX: &str = "spool/";
