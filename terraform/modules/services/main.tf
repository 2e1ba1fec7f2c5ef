# The Google APIs GDTS uses, enabled in the project before anything that
# needs them is made. They stay enabled on destroy: other things in the
# project may use them too.

variable "project_id" {
  type = string
}

locals {
  services = toset([
    "artifactregistry.googleapis.com", # the images
    "compute.googleapis.com",          # VPC, VMs, disks, the worker group
    "iam.googleapis.com",              # service accounts
    "iap.googleapis.com",              # SSH through IAP
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "run.googleapis.com",           # the manager
    "secretmanager.googleapis.com", # the MongoDB URI and member secrets
    "storage.googleapis.com",       # the outputs bucket
  ])
}

resource "google_project_service" "api" {
  for_each           = local.services
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

output "enabled" {
  description = "The enabled APIs; depend on this to be made after them."
  value       = [for s in google_project_service.api : s.service]
}
