# Three etcd members, one per zone, on static internal addresses with SSD
# persistent disks for their data and a daily snapshot schedule. They form one
# cluster at first boot from the addresses alone (no discovery service).

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

variable "deletion_protection" {
  type = bool
}

locals {
  members = { for i, zone in var.zones : "${var.name}-etcd-${i}" => zone }
  initial_cluster = join(",", [
    for member, _ in local.members : "${member}=http://${google_compute_address.member[member].address}:2380"
  ])
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
  project = var.project_id
  name    = "${var.name}-etcd-daily"
  region  = var.region
  snapshot_schedule_policy {
    schedule {
      daily_schedule {
        days_in_cycle = 1
        start_time    = "03:00"
      }
    }
    retention_policy {
      max_retention_days    = var.snapshot_retention_days
      on_source_disk_delete = "KEEP_AUTO_SNAPSHOTS"
    }
    snapshot_properties {
      storage_locations = [var.region]
      labels            = { app = "gdts", component = "etcd" }
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
  labels   = { app = "gdts", component = "etcd" }
}

resource "google_compute_disk_resource_policy_attachment" "snapshots" {
  for_each = local.members
  project  = var.project_id
  name     = google_compute_resource_policy.snapshots.name
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
  labels                    = { app = "gdts", component = "etcd" }
  deletion_protection       = var.deletion_protection
  allow_stopping_for_update = true

  boot_disk {
    initialize_params {
      image = "debian-cloud/debian-12"
      size  = 20
      type  = "pd-balanced"
    }
  }

  attached_disk {
    source      = google_compute_disk.data[each.key].id
    device_name = "etcd-data"
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
    startup-script = templatefile("${path.module}/startup.sh.tftpl", {
      member          = each.key
      address         = google_compute_address.member[each.key].address
      initial_cluster = local.initial_cluster
      cluster_token   = "${var.name}-etcd"
    })
  }
}

output "client_endpoints" {
  description = "Comma-separated client URLs (GDTS_ETCD_ENDPOINTS)."
  value       = join(",", [for member, _ in local.members : "http://${google_compute_address.member[member].address}:2379"])
}
