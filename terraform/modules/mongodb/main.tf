# MongoDB for run records: by default a self-managed three-member replica set
# (one VM per zone, Container-Optimized OS running the official image, SSD
# data disks with daily snapshots, keyfile auth). With `external` (e.g.
# MongoDB Atlas) no VM is made and `external_uri` is stored instead. Either
# way the connection string lives in Secret Manager, readable only by the
# service accounts in `uri_readers`. Generated passwords and the URI are
# ephemeral values written to Secret Manager as write-only data: they never
# enter the Terraform state or the plan.

variable "project_id" {
  type = string
}

variable "name" {
  type = string
}

variable "region" {
  type = string
}

variable "zones" {
  type = list(string)
}

variable "subnetwork" {
  type = string
}

variable "network_tag" {
  type = string
}

variable "service_account" {
  type = string
}

variable "machine_type" {
  type = string
}

variable "disk_gb" {
  type = number
}

variable "snapshot_retention_days" {
  type = number
}

variable "external" {
  description = "Use an existing MongoDB (e.g. Atlas) instead of the replica set: no VM is made."
  type        = bool
}

variable "external_uri" {
  description = "The existing MongoDB's connection string (external only). Ephemeral: written to Secret Manager, never kept in the state; needed on the first apply and whenever uri_version changes."
  type        = string
  default     = null
  ephemeral   = true
}

variable "uri_version" {
  description = "Bump to write the connection string (and, self-managed, the generated secrets) again."
  type        = number
}

variable "uri_readers" {
  type = list(string)
}

variable "deletion_protection" {
  type = bool
}

variable "image" {
  description = "MongoDB server image run on each member."
  type        = string
  default     = "mongo:7.0"
}

locals {
  # Whether to deploy the replica set is a plain setting, never derived from
  # the (secret) URI: keys of for_each must not be sensitive.
  self_managed        = !var.external
  members             = local.self_managed ? { for i, zone in var.zones : "${var.name}-mongodb-${i}" => zone } : {}
  hosts               = [for m, _ in local.members : "${google_compute_address.member[m].address}:27017"]
  member_secret_names = local.self_managed ? toset(["keyfile", "admin-password", "app-password"]) : toset([])
}

# Generated once per uri_version, written only to Secret Manager.
ephemeral "random_password" "member" {
  for_each = local.member_secret_names
  length   = each.key == "keyfile" ? 96 : 32
  special  = false
}

locals {
  # Ephemeral (they hold the generated passwords or the given URI): used only
  # in write-only arguments.
  uri = local.self_managed ? format(
    "mongodb://gdts:%s@%s/gdts?replicaSet=rs0&authSource=admin",
    try(ephemeral.random_password.member["app-password"].result, ""),
    join(",", local.hosts),
  ) : var.external_uri
}

resource "google_secret_manager_secret" "uri" {
  project   = var.project_id
  secret_id = "${var.name}-mongodb-uri"
  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}

resource "google_secret_manager_secret_version" "uri" {
  secret                 = google_secret_manager_secret.uri.id
  secret_data_wo         = local.uri
  secret_data_wo_version = var.uri_version
}

resource "google_secret_manager_secret_iam_member" "uri_reader" {
  for_each  = toset(var.uri_readers)
  project   = var.project_id
  secret_id = google_secret_manager_secret.uri.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.value}"
}

# Secrets only the members read at boot: the replica-set keyfile and the
# admin and application passwords.
resource "google_secret_manager_secret" "member" {
  for_each  = local.member_secret_names
  project   = var.project_id
  secret_id = "${var.name}-mongodb-${each.key}"
  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}

resource "google_secret_manager_secret_version" "member" {
  for_each               = local.member_secret_names
  secret                 = google_secret_manager_secret.member[each.key].id
  secret_data_wo         = ephemeral.random_password.member[each.key].result
  secret_data_wo_version = var.uri_version
}

resource "google_secret_manager_secret_iam_member" "member_reader" {
  for_each  = local.member_secret_names
  project   = var.project_id
  secret_id = google_secret_manager_secret.member[each.key].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${var.service_account}"
}

resource "google_compute_address" "member" {
  for_each     = local.members
  project      = var.project_id
  name         = each.key
  region       = var.region
  subnetwork   = var.subnetwork
  address_type = "INTERNAL"
}

module "vms" {
  source                  = "../data-vms"
  project_id              = var.project_id
  region                  = var.region
  component               = "mongodb"
  name                    = var.name
  boot_image              = "cos-cloud/cos-stable"
  subnetwork              = var.subnetwork
  network_tag             = var.network_tag
  service_account         = var.service_account
  machine_type            = var.machine_type
  disk_gb                 = var.disk_gb
  snapshot_start_time     = "04:00"
  snapshot_retention_days = var.snapshot_retention_days
  deletion_protection     = var.deletion_protection
  boot_key                = "user-data"
  members = {
    for member, zone in local.members : member => {
      zone    = zone
      address = google_compute_address.member[member].address
      boot = templatefile("${path.module}/cloud-init.yaml.tftpl", {
        image          = var.image
        project_id     = var.project_id
        secret_prefix  = "${var.name}-mongodb"
        initiator      = member == keys(local.members)[0]
        members_json   = jsonencode([for i, h in local.hosts : { _id = i, host = h }])
        member_address = google_compute_address.member[member].address
      })
    }
  }

  # The members read their secrets at boot.
  depends_on = [google_secret_manager_secret_version.member, google_secret_manager_secret_iam_member.member_reader]
}

# Where these lived before the shared module: moved, never replaced (the
# data disks hold the records).
moved {
  from = google_compute_resource_policy.snapshots
  to   = module.vms.google_compute_resource_policy.snapshots
}

moved {
  from = google_compute_disk.data
  to   = module.vms.google_compute_disk.data
}

moved {
  from = google_compute_disk_resource_policy_attachment.snapshots
  to   = module.vms.google_compute_disk_resource_policy_attachment.snapshots
}

moved {
  from = google_compute_instance.member
  to   = module.vms.google_compute_instance.member
}

output "uri_secret_id" {
  description = "Secret Manager secret id of the MongoDB URI: known once the URI is written and readable by uri_readers."
  value       = google_secret_manager_secret.uri.secret_id
  depends_on  = [google_secret_manager_secret_version.uri, google_secret_manager_secret_iam_member.uri_reader]
}
