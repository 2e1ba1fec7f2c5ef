# MongoDB for run records: by default a self-managed three-member replica set
# (one VM per zone, Container-Optimized OS running the official image, SSD
# data disks with daily snapshots, keyfile auth). With `external_uri` set
# (e.g. MongoDB Atlas) no VM is made and that URI is stored instead. Either
# way the connection string lives in Secret Manager, readable only by the
# service accounts in `uri_readers`.

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

variable "external_uri" {
  type      = string
  sensitive = true
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
  self_managed = var.external_uri == ""
  members      = local.self_managed ? { for i, zone in var.zones : "${var.name}-mongodb-${i}" => zone } : {}
  hosts        = [for m, _ in local.members : "${google_compute_address.member[m].address}:27017"]
  generated_uri = local.self_managed ? format(
    "mongodb://gdts:%s@%s/gdts?replicaSet=rs0&authSource=admin",
    random_password.app[0].result,
    join(",", local.hosts),
  ) : ""
  secrets_for_members = local.self_managed ? {
    keyfile        = random_password.keyfile[0].result
    admin-password = random_password.admin[0].result
    app-password   = random_password.app[0].result
  } : {}
}

resource "random_password" "keyfile" {
  count   = local.self_managed ? 1 : 0
  length  = 96
  special = false
}

resource "random_password" "admin" {
  count   = local.self_managed ? 1 : 0
  length  = 32
  special = false
}

resource "random_password" "app" {
  count   = local.self_managed ? 1 : 0
  length  = 32
  special = false
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
  secret      = google_secret_manager_secret.uri.id
  secret_data = local.self_managed ? local.generated_uri : var.external_uri
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
  for_each  = local.secrets_for_members
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
  for_each    = local.secrets_for_members
  secret      = google_secret_manager_secret.member[each.key].id
  secret_data = each.value
}

resource "google_secret_manager_secret_iam_member" "member_reader" {
  for_each  = local.secrets_for_members
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

resource "google_compute_resource_policy" "snapshots" {
  count   = local.self_managed ? 1 : 0
  project = var.project_id
  name    = "${var.name}-mongodb-daily"
  region  = var.region
  snapshot_schedule_policy {
    schedule {
      daily_schedule {
        days_in_cycle = 1
        start_time    = "04:00"
      }
    }
    retention_policy {
      max_retention_days    = var.snapshot_retention_days
      on_source_disk_delete = "KEEP_AUTO_SNAPSHOTS"
    }
    snapshot_properties {
      storage_locations = [var.region]
      labels            = { app = "gdts", component = "mongodb" }
    }
  }
}

resource "google_compute_disk" "data" {
  for_each = local.members
  project  = var.project_id
  name     = "${each.key}-data"
  zone     = each.value
  type     = "pd-ssd"
  size     = var.disk_gb
  labels   = { app = "gdts", component = "mongodb" }
}

resource "google_compute_disk_resource_policy_attachment" "snapshots" {
  for_each = local.members
  project  = var.project_id
  name     = google_compute_resource_policy.snapshots[0].name
  disk     = google_compute_disk.data[each.key].name
  zone     = each.value
}

resource "google_compute_instance" "member" {
  for_each                  = local.members
  project                   = var.project_id
  name                      = each.key
  zone                      = each.value
  machine_type              = var.machine_type
  tags                      = [var.network_tag]
  labels                    = { app = "gdts", component = "mongodb" }
  deletion_protection       = var.deletion_protection
  allow_stopping_for_update = true

  boot_disk {
    initialize_params {
      image = "cos-cloud/cos-stable"
      size  = 20
      type  = "pd-balanced"
    }
  }

  attached_disk {
    source      = google_compute_disk.data[each.key].id
    device_name = "mongodb-data"
  }

  network_interface {
    subnetwork = var.subnetwork
    network_ip = google_compute_address.member[each.key].address
  }

  service_account {
    email  = var.service_account
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "true"
    serial-port-enable     = "false"
    user-data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
      image          = var.image
      project_id     = var.project_id
      secret_prefix  = "${var.name}-mongodb"
      initiator      = each.key == keys(local.members)[0]
      members_json   = jsonencode([for i, h in local.hosts : { _id = i, host = h }])
      member_address = google_compute_address.member[each.key].address
    })
  }

  depends_on = [google_secret_manager_secret_version.member, google_secret_manager_secret_iam_member.member_reader]
}

output "uri_secret_id" {
  description = "Secret Manager secret id of the MongoDB URI."
  value       = google_secret_manager_secret.uri.secret_id
}
