# A custom VPC with one subnet for the VMs and one dedicated to Cloud Run
# Direct VPC egress, Cloud NAT for the egress of both (no VM has an external
# address; the manager's internet traffic takes it with all-traffic egress),
# and firewall rules that open only what GDTS needs.

variable "project_id" {
  type = string
}

variable "name" {
  type = string
}

variable "region" {
  type = string
}

variable "vm_cidr" {
  type = string
}

variable "run_egress_cidr" {
  type = string
}

variable "worker_health_port" {
  type = number
}

variable "metrics_scrape_ranges" {
  description = "Source ranges (your Prometheus collector's) allowed to the workers' health port, which serves /metrics."
  type        = list(string)
}

locals {
  etcd_tag    = "${var.name}-etcd"
  mongodb_tag = "${var.name}-mongodb"
  worker_tag  = "${var.name}-worker"
  # Google's health checkers and Identity-Aware Proxy TCP forwarding.
  health_check_ranges = ["35.191.0.0/16", "130.211.0.0/22"]
  iap_range           = ["35.235.240.0/20"]
}

resource "google_compute_network" "vpc" {
  project                 = var.project_id
  name                    = "${var.name}-vpc"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
}

resource "google_compute_subnetwork" "vms" {
  project                  = var.project_id
  name                     = "${var.name}-vms"
  region                   = var.region
  network                  = google_compute_network.vpc.id
  ip_cidr_range            = var.vm_cidr
  private_ip_google_access = true
  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_subnetwork" "run_egress" {
  project                  = var.project_id
  name                     = "${var.name}-run-egress"
  region                   = var.region
  network                  = google_compute_network.vpc.id
  ip_cidr_range            = var.run_egress_cidr
  private_ip_google_access = true
  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "router" {
  project = var.project_id
  name    = "${var.name}-router"
  region  = var.region
  network = google_compute_network.vpc.id
}

resource "google_compute_router_nat" "nat" {
  project                            = var.project_id
  name                               = "${var.name}-nat"
  router                             = google_compute_router.router.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"
  subnetwork {
    name                    = google_compute_subnetwork.vms.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }
  # The manager's Direct VPC egress: with manager_egress_all_traffic (a
  # public MongoDB endpoint such as Atlas) its internet traffic leaves here.
  subnetwork {
    name                    = google_compute_subnetwork.run_egress.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }
  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# etcd clients: workers and the manager (through its egress subnet).
resource "google_compute_firewall" "etcd_client" {
  project     = var.project_id
  name        = "${var.name}-etcd-client"
  network     = google_compute_network.vpc.id
  direction   = "INGRESS"
  target_tags = [local.etcd_tag]
  source_tags = [local.worker_tag]
  allow {
    protocol = "tcp"
    ports    = ["2379"]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "etcd_client_from_run" {
  project       = var.project_id
  name          = "${var.name}-etcd-client-run"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  target_tags   = [local.etcd_tag]
  source_ranges = [var.run_egress_cidr]
  allow {
    protocol = "tcp"
    ports    = ["2379"]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# etcd members talk to each other on the peer port (and the client port, for
# health checks between members).
resource "google_compute_firewall" "etcd_peer" {
  project     = var.project_id
  name        = "${var.name}-etcd-peer"
  network     = google_compute_network.vpc.id
  direction   = "INGRESS"
  target_tags = [local.etcd_tag]
  source_tags = [local.etcd_tag]
  allow {
    protocol = "tcp"
    ports    = ["2379", "2380"]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "mongodb_client" {
  project     = var.project_id
  name        = "${var.name}-mongodb-client"
  network     = google_compute_network.vpc.id
  direction   = "INGRESS"
  target_tags = [local.mongodb_tag]
  source_tags = [local.worker_tag, local.mongodb_tag]
  allow {
    protocol = "tcp"
    ports    = ["27017"]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "mongodb_client_from_run" {
  project       = var.project_id
  name          = "${var.name}-mongodb-client-run"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  target_tags   = [local.mongodb_tag]
  source_ranges = [var.run_egress_cidr]
  allow {
    protocol = "tcp"
    ports    = ["27017"]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Managed instance group autohealing probes the worker health endpoint.
resource "google_compute_firewall" "worker_health" {
  project       = var.project_id
  name          = "${var.name}-worker-health"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  target_tags   = [local.worker_tag]
  source_ranges = local.health_check_ranges
  allow {
    protocol = "tcp"
    ports    = [tostring(var.worker_health_port)]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# A Prometheus collector scrapes the workers' /metrics on the same port.
resource "google_compute_firewall" "worker_metrics" {
  count         = length(var.metrics_scrape_ranges) > 0 ? 1 : 0
  project       = var.project_id
  name          = "${var.name}-worker-metrics"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  target_tags   = [local.worker_tag]
  source_ranges = var.metrics_scrape_ranges
  allow {
    protocol = "tcp"
    ports    = [tostring(var.worker_health_port)]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# SSH only through Identity-Aware Proxy TCP forwarding.
resource "google_compute_firewall" "ssh_via_iap" {
  project       = var.project_id
  name          = "${var.name}-ssh-iap"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  target_tags   = [local.etcd_tag, local.mongodb_tag, local.worker_tag]
  source_ranges = local.iap_range
  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Everything else inbound is refused (and logged).
resource "google_compute_firewall" "deny_all_ingress" {
  project       = var.project_id
  name          = "${var.name}-deny-all-ingress"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  priority      = 65000
  source_ranges = ["0.0.0.0/0"]
  deny {
    protocol = "all"
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

output "network_id" {
  value = google_compute_network.vpc.id
}

output "vm_subnet_id" {
  value = google_compute_subnetwork.vms.id
}

output "run_subnet_id" {
  value = google_compute_subnetwork.run_egress.id
}

output "etcd_tag" {
  value = local.etcd_tag
}

output "mongodb_tag" {
  value = local.mongodb_tag
}

output "worker_tag" {
  value = local.worker_tag
}
