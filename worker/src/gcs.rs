//! Uploads whole run outputs to the outputs bucket (`GDTS_GCS_BUCKET`).

use std::time::Duration;

use gcloud_storage::client::Client;
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
}
