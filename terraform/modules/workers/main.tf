# Workers: an instance template on Container-Optimized OS whose cloud-init
# runs the worker image under systemd (with the Docker socket for container
# jobs), a regional managed instance group autohealed on the worker's health
# endpoint, and an optional CPU autoscaler.

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

variable "image" {
  type = string
}

variable "registry_host" {
  type = string
}

variable "service_account" {
  type = string
}

variable "subnetwork" {
  type = string
}

variable "network_tag" {
  type = string
}

variable "machine_type" {
  type = string
}

variable "etcd_endpoints" {
  type = string
}

variable "etcd_prefix" {
  description = "GDTS_ETCD_PREFIX: the etcd roles grant access under it."
  type        = string
}

variable "etcd_tls" {
  description = "Secret Manager secrets of etcd's CA certificate and of this client's certificate and key."
  type = object({
    ca_secret   = string
    cert_secret = string
    key_secret  = string
  })
}

variable "mongodb_uri_secret" {
  type = string
}

variable "gcs_bucket" {
  type = string
}

variable "health_port" {
  type = number
}

variable "job_uid" {
  description = "The unprivileged uid shell jobs run as (GDTS_JOB_USER); the host firewall keeps it from the metadata server, etcd and MongoDB."
  type        = number
}

variable "size" {
  type = number
}

variable "group" {
  description = "Name of an extra worker group (its resources are suffixed with it); empty for the main group."
  type        = string
  default     = ""
}

variable "labels" {
  description = "GDTS_WORKER_LABELS of this group's workers: jobs with a selector run only on workers whose labels include it."
  type        = map(string)
  default     = {}
}

locals {
  suffix = var.group == "" ? "" : "-${var.group}"
}

variable "autoscaling_max" {
  type = number
}

resource "google_compute_health_check" "worker" {
  project             = var.project_id
  name                = "${var.name}-worker-health${local.suffix}"
  check_interval_sec  = 10
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 3
  http_health_check {
    port         = var.health_port
    request_path = "/healthz"
  }
  log_config {
    enable = true
  }
}

resource "google_compute_instance_template" "worker" {
  project      = var.project_id
  name_prefix  = "${var.name}-worker${local.suffix}-"
  machine_type = var.machine_type
  tags         = [var.network_tag]
  labels       = { app = "gdts", component = "worker" }

  disk {
    source_image = "cos-cloud/cos-stable"
    disk_size_gb = 30
    disk_type    = "pd-balanced"
    auto_delete  = true
    boot         = true
  }

  network_interface {
    subnetwork = var.subnetwork
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
      registry_host  = var.registry_host
      project_id     = var.project_id
      uri_secret     = var.mongodb_uri_secret
      etcd_endpoints = var.etcd_endpoints
      etcd_prefix    = var.etcd_prefix
      etcd_ca        = var.etcd_tls.ca_secret
      etcd_cert      = var.etcd_tls.cert_secret
      etcd_key       = var.etcd_tls.key_secret
      gcs_bucket     = var.gcs_bucket
      labels         = join(",", [for k, v in var.labels : "${k}=${v}"])
      health_port    = var.health_port
      job_uid        = var.job_uid
      # Jobs get 30 s to finish, records 45 s to reach MongoDB; docker
      # waits for both plus 10 s before it kills the worker.
      shutdown_grace_ms = 30000
      flush_timeout_ms  = 45000
      stop_timeout_s    = 85
    })
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_region_instance_group_manager" "workers" {
  project                   = var.project_id
  name                      = "${var.name}-workers${local.suffix}"
  region                    = var.region
  base_instance_name        = "${var.name}-worker${local.suffix}"
  distribution_policy_zones = var.zones
  target_size               = var.autoscaling_max > 0 ? null : var.size

  version {
    instance_template = google_compute_instance_template.worker.id
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.worker.id
    initial_delay_sec = 180
  }

  update_policy {
    type                  = "PROACTIVE"
    minimal_action        = "REPLACE"
    max_surge_fixed       = length(var.zones)
    max_unavailable_fixed = 0
  }
}

resource "google_compute_region_autoscaler" "workers" {
  count   = var.autoscaling_max > 0 ? 1 : 0
  project = var.project_id
  name    = "${var.name}-workers${local.suffix}"
  region  = var.region
  target  = google_compute_region_instance_group_manager.workers.id
  autoscaling_policy {
    min_replicas    = var.size
    max_replicas    = var.autoscaling_max
    cooldown_period = 120
    cpu_utilization {
      target = 0.7
    }
  }
}

output "instance_group" {
  value = google_compute_region_instance_group_manager.workers.instance_group
}
