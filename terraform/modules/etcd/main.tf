# Three etcd members, one per zone, on static internal addresses with SSD
# persistent disks for their data and a daily snapshot schedule (the shared
# data-vms module). They form one cluster at first boot from the addresses
# alone (no discovery service).

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

module "vms" {
  source                  = "../data-vms"
  project_id              = var.project_id
  region                  = var.region
  component               = "etcd"
  name                    = var.name
  boot_image              = "debian-cloud/debian-12"
  subnetwork              = var.subnetwork
  network_tag             = var.network_tag
  service_account         = var.service_account
  machine_type            = var.machine_type
  disk_gb                 = var.disk_gb
  snapshot_start_time     = "03:00"
  snapshot_retention_days = var.snapshot_retention_days
  deletion_protection     = var.deletion_protection
  boot_key                = "startup-script"
  members = {
    for member, zone in local.members : member => {
      zone    = zone
      address = google_compute_address.member[member].address
      boot = templatefile("${path.module}/startup.sh.tftpl", {
        member          = member
        address         = google_compute_address.member[member].address
        initial_cluster = local.initial_cluster
        cluster_token   = "${var.name}-etcd"
      })
    }
  }
}

# Where these lived before the shared module: moved, never replaced (the
# data disks hold the cluster).
moved {
  from = google_compute_resource_policy.snapshots
  to   = module.vms.google_compute_resource_policy.snapshots[0]
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

output "client_endpoints" {
  description = "Comma-separated client URLs (GDTS_ETCD_ENDPOINTS)."
  value       = join(",", [for member, _ in local.members : "http://${google_compute_address.member[member].address}:2379"])
}
