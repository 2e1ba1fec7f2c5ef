# One service account per component; no component uses the default compute
# service account. Roles on resources are granted where the resource is made;
# only log and metric writing are project-wide (they have no resource scope).

variable "project_id" {
  type = string
}

variable "name" {
  type = string
}

locals {
  accounts = {
    manager = "GDTS manager (Cloud Run)"
    worker  = "GDTS workers"
    etcd    = "GDTS etcd members"
    mongodb = "GDTS MongoDB members"
  }
  vm_accounts = ["worker", "etcd", "mongodb"]
  vm_roles    = ["roles/logging.logWriter", "roles/monitoring.metricWriter"]
}

resource "google_service_account" "sa" {
  for_each     = local.accounts
  project      = var.project_id
  account_id   = "${var.name}-${each.key}"
  display_name = each.value
}

resource "google_project_iam_member" "vm_telemetry" {
  for_each = { for pair in setproduct(local.vm_accounts, local.vm_roles) : "${pair[0]}-${pair[1]}" => pair }
  project  = var.project_id
  role     = each.value[1]
  member   = "serviceAccount:${google_service_account.sa[each.value[0]].email}"
}

# Cloud Run writes logs and metrics for the manager without project roles.

output "manager_email" {
  value = google_service_account.sa["manager"].email
}

output "worker_email" {
  value = google_service_account.sa["worker"].email
}

output "etcd_email" {
  value = google_service_account.sa["etcd"].email
}

output "mongodb_email" {
  value = google_service_account.sa["mongodb"].email
}
