# Three etcd members, one per zone, on static internal addresses with SSD
# persistent disks for their data and a daily snapshot schedule (the shared
# data-vms module). They form one cluster at first boot from the addresses
# alone (no discovery service).
#
# TLS everywhere: clients and peers present certificates signed by this
# module's CA (hashicorp/tls), kept in Secret Manager, each secret readable
# only by the service account that needs it. etcd authentication is on: a
# client's certificate CN is its etcd user (root for the members' own
# etcdctl, gdts-manager, gdts-worker), and the first member sets up the users
# and roles once the cluster has quorum. The worker's role cannot touch
# `{key_prefix}auth/` (API tokens and sessions).

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

variable "key_prefix" {
  description = "GDTS_ETCD_PREFIX of the manager and workers: the roles grant access under it."
  type        = string
  validation {
    condition     = endswith(var.key_prefix, "/") && length(var.key_prefix) > 1
    error_message = "key_prefix must end with \"/\" (e.g. /gdts/)."
  }
}

variable "clients" {
  description = "etcd clients by name (manager, worker): the service account that may read the client's certificate and key. The etcd user is gdts-NAME."
  type        = map(string)
}

locals {
  members = { for i, zone in var.zones : "${var.name}-etcd-${i}" => zone }
  # The member that sets up users, roles and authentication.
  bootstrap_member = "${var.name}-etcd-0"
  initial_cluster = join(",", [
    for member, _ in local.members : "${member}=https://${google_compute_address.member[member].address}:2380"
  ])
  # Everything after `auth/` under the prefix (the prefix ends with "/",
  # so its range ends where "/" becomes "0").
  worker_range = ["${var.key_prefix}b", "${trimsuffix(var.key_prefix, "/")}0"]
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
        member           = member
        address          = google_compute_address.member[member].address
        initial_cluster  = local.initial_cluster
        cluster_token    = "${var.name}-etcd"
        project_id       = var.project_id
        ca_secret        = google_secret_manager_secret.pem["ca"].secret_id
        cert_secret      = google_secret_manager_secret.pem["${member}-cert"].secret_id
        key_secret       = google_secret_manager_secret.pem["${member}-key"].secret_id
        root_cert_secret = google_secret_manager_secret.pem["root-cert"].secret_id
        root_key_secret  = google_secret_manager_secret.pem["root-key"].secret_id
        bootstrap        = member == local.bootstrap_member
        key_prefix       = var.key_prefix
        worker_range     = local.worker_range
      })
    }
  }
  # The members read their certificates at boot.
  depends_on = [google_secret_manager_secret_version.pem, google_secret_manager_secret_iam_member.reader]
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
  value       = join(",", [for member, _ in local.members : "https://${google_compute_address.member[member].address}:2379"])
}

output "client_tls" {
  description = "Per client (manager, worker): the Secret Manager secrets of the CA certificate and of its own certificate and key; known once written and readable by the client."
  value = {
    for client, _ in var.clients : client => {
      ca_secret   = google_secret_manager_secret.pem["ca"].secret_id
      cert_secret = google_secret_manager_secret.pem["${client}-cert"].secret_id
      key_secret  = google_secret_manager_secret.pem["${client}-key"].secret_id
    }
  }
  depends_on = [google_secret_manager_secret_version.pem, google_secret_manager_secret_iam_member.reader]
}
