# The Artifact Registry repository for the manager and worker images.

variable "project_id" {
  type = string
}

variable "name" {
  type = string
}

variable "region" {
  type = string
}

variable "readers" {
  description = "Service account emails that pull images."
  type        = list(string)
}

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = var.name
  format        = "DOCKER"
  description   = "GDTS manager and worker images"
  docker_config {
    immutable_tags = true
  }
}

resource "google_artifact_registry_repository_iam_member" "reader" {
  for_each   = toset(var.readers)
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${each.value}"
}

output "host" {
  value = "${var.region}-docker.pkg.dev"
}

output "repository_url" {
  value = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}
