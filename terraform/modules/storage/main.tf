# The bucket for large run outputs: uniform access, public access prevented,
# versioned, and emptied by a lifecycle rule.

variable "project_id" {
  type = string
}

variable "name" {
  type = string
}

variable "region" {
  type = string
}

variable "retention_days" {
  type = number
}

variable "writers" {
  description = "Service account emails that upload outputs (workers)."
  type        = list(string)
}

variable "readers" {
  description = "Service account emails that serve outputs (manager)."
  type        = list(string)
}

resource "google_storage_bucket" "outputs" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name}-outputs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      age = var.retention_days
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_iam_member" "writer" {
  for_each = toset(var.writers)
  bucket   = google_storage_bucket.outputs.name
  role     = "roles/storage.objectAdmin"
  member   = "serviceAccount:${each.value}"
}

resource "google_storage_bucket_iam_member" "reader" {
  for_each = toset(var.readers)
  bucket   = google_storage_bucket.outputs.name
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${each.value}"
}

output "bucket_name" {
  value = google_storage_bucket.outputs.name
}
