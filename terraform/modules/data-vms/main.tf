# VMs that keep data: one per member, each with an SSD data disk (attached
# under a stable device name) on a daily snapshot schedule, a static internal
# address made by the caller, Shielded VM, OS Login and no serial port. Used
# by the etcd and MongoDB modules, which give each member its boot metadata.

variable "project_id" {
  type = string
}

variable "region" {
  type = string
}

variable "component" {
  description = "What the members are (etcd, mongodb): labels, resource names, the data disk's device name."
  type        = string
}

variable "name" {
  description = "Name prefix of the snapshot policy."
  type        = string
}

variable "members" {
  description = "Per member (VM name): its zone, its static internal address and its boot script (the value of the boot_key metadata)."
  type = map(object({
    zone    = string
    address = string
    boot    = string
  }))
}

variable "boot_key" {
  description = "The metadata key the boot script goes under: startup-script (Debian) or user-data (cloud-init on Container-Optimized OS)."
  type        = string
  validation {
    condition     = contains(["startup-script", "user-data"], var.boot_key)
    error_message = "boot_key must be startup-script or user-data."
  }
}

variable "boot_image" {
  type = string
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

variable "snapshot_start_time" {
  description = "Daily snapshot time (UTC, HH:00)."
  type        = string
}

variable "snapshot_retention_days" {
  type = number
}

variable "deletion_protection" {
  type = bool
}

locals {
  labels = { app = "gdts", component = var.component }
}

resource "google_compute_resource_policy" "snapshots" {
  count   = length(var.members) > 0 ? 1 : 0
  project = var.project_id
  name    = "${var.name}-${var.component}-daily"
  region  = var.region
  snapshot_schedule_policy {
    schedule {
      daily_schedule {
        days_in_cycle = 1
        start_time    = var.snapshot_start_time
      }
    }
    retention_policy {
      max_retention_days    = var.snapshot_retention_days
      on_source_disk_delete = "KEEP_AUTO_SNAPSHOTS"
    }
    snapshot_properties {
      storage_locations = [var.region]
      labels            = local.labels
    }
  }
}

resource "google_compute_disk" "data" {
  for_each = var.members
  project  = var.project_id
  name     = "${each.key}-data"
  zone     = each.value.zone
  type     = "pd-ssd"
  size     = var.disk_gb
  labels   = local.labels
}

resource "google_compute_disk_resource_policy_attachment" "snapshots" {
  for_each = var.members
  project  = var.project_id
  name     = google_compute_resource_policy.snapshots[0].name
  disk     = google_compute_disk.data[each.key].name
  zone     = each.value.zone
}

resource "google_compute_instance" "member" {
  for_each                  = var.members
  project                   = var.project_id
  name                      = each.key
  zone                      = each.value.zone
  machine_type              = var.machine_type
  tags                      = [var.network_tag]
  labels                    = local.labels
  deletion_protection       = var.deletion_protection
  allow_stopping_for_update = true

  boot_disk {
    initialize_params {
      image = var.boot_image
      size  = 20
      type  = "pd-balanced"
    }
  }

  attached_disk {
    source      = google_compute_disk.data[each.key].id
    device_name = "${var.component}-data"
  }

  network_interface {
    subnetwork = var.subnetwork
    network_ip = each.value.address
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
    (var.boot_key)         = each.value.boot
  }
}
