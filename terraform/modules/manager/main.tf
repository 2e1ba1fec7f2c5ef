# The manager on Cloud Run (v2): its own service account, Direct VPC egress to
# reach etcd and MongoDB on private addresses, the MongoDB URI from Secret
# Manager, etcd over TLS with the manager's client certificate (from Secret
# Manager too), a request timeout long enough for the event stream, and
# authentication on: a bootstrap admin token generated into Secret Manager
# (read it with `gcloud secrets versions access latest --secret NAME-admin-token`,
# then create per-person tokens and stop using it).

variable "project_id" {
  type = string
}

variable "name" {
  type = string
}

variable "region" {
  type = string
}

variable "image" {
  type = string
}

variable "service_account" {
  type = string
}

variable "network" {
  type = string
}

variable "subnetwork" {
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

variable "min_instances" {
  type = number
}

variable "max_instances" {
  type = number
}

variable "invokers" {
  type = list(string)
}

variable "log_retention_days" {
  description = "Run records older than this are deleted (GDTS_LOG_RETENTION_DAYS), as the bucket's lifecycle deletes their outputs."
  type        = number
}

variable "egress_all_traffic" {
  description = "Send all egress through the VPC (and Cloud NAT), not only private ranges: for a MongoDB reached at a public address that allows the NAT addresses."
  type        = bool
}

variable "auth" {
  description = "GDTS_AUTH: on (every request needs a token) or off (anyone the invoker IAM lets through is admin)."
  type        = string
}

variable "admin_token_version" {
  description = "Bump to generate a new bootstrap admin token (the old one stops working once the manager restarts)."
  type        = number
}

variable "iap_audience" {
  description = "With Identity-Aware Proxy in front: the audience of its assertions (GDTS_IAP_AUDIENCE); empty: IAP is not used."
  type        = string
}

variable "allowed_origins" {
  description = "GDTS_ALLOWED_ORIGINS: other origins whose pages may send changes (e.g. http://localhost:8070 through gcloud run services proxy); empty: none."
  type        = string
}

variable "iap_roles" {
  description = "Who gets which role through IAP (GDTS_IAP_ROLES), e.g. admin=alice@example.com;viewer=*@example.com."
  type        = string
}

# Generated once per admin_token_version, written only to Secret Manager.
ephemeral "random_password" "admin_token" {
  length  = 48
  special = false
}

resource "google_secret_manager_secret" "admin_token" {
  project   = var.project_id
  secret_id = "${var.name}-admin-token"
  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}

resource "google_secret_manager_secret_version" "admin_token" {
  secret                 = google_secret_manager_secret.admin_token.id
  secret_data_wo         = ephemeral.random_password.admin_token.result
  secret_data_wo_version = var.admin_token_version
}

resource "google_secret_manager_secret_iam_member" "admin_token_reader" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.admin_token.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${var.service_account}"
}

resource "google_cloud_run_v2_service" "manager" {
  project  = var.project_id
  name     = "${var.name}-manager"
  location = var.region
  ingress  = "INGRESS_TRAFFIC_ALL"
  # Stateless: protecting it only blocks replacing a create that failed
  # (Terraform taints it) without protecting any data.
  deletion_protection = false
  # Cloud Run's own IAP integration, when an audience is configured.
  iap_enabled = var.iap_audience != ""
  # The first revision reads the admin token at start.
  depends_on = [google_secret_manager_secret_version.admin_token, google_secret_manager_secret_iam_member.admin_token_reader]

  template {
    service_account = var.service_account
    # Server-Sent Events streams stay open: allow the maximum.
    timeout                          = "3600s"
    max_instance_request_concurrency = 200

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    vpc_access {
      egress = var.egress_all_traffic ? "ALL_TRAFFIC" : "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = var.network
        subnetwork = var.subnetwork
      }
    }

    containers {
      image = var.image
      ports {
        container_port = 8070
      }
      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
      }
      env {
        name  = "GDTS_AUTH"
        value = var.auth
      }
      dynamic "env" {
        for_each = var.allowed_origins == "" ? {} : { GDTS_ALLOWED_ORIGINS = var.allowed_origins }
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name = "GDTS_ADMIN_TOKEN"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.admin_token.secret_id
            version = "latest"
          }
        }
      }
      dynamic "env" {
        for_each = var.iap_audience == "" ? {} : {
          GDTS_IAP_AUDIENCE = var.iap_audience
          GDTS_IAP_ROLES    = var.iap_roles
        }
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name  = "GDTS_COOKIE_SECURE"
        value = "true"
      }
      env {
        name  = "GDTS_ETCD_ENDPOINTS"
        value = var.etcd_endpoints
      }
      env {
        name  = "GDTS_ETCD_PREFIX"
        value = var.etcd_prefix
      }
      # TLS to etcd: the CA, and this client's certificate (CN gdts-manager,
      # its etcd user) and key, as PEM text from Secret Manager.
      dynamic "env" {
        for_each = {
          GDTS_ETCD_CA   = var.etcd_tls.ca_secret
          GDTS_ETCD_CERT = var.etcd_tls.cert_secret
          GDTS_ETCD_KEY  = var.etcd_tls.key_secret
        }
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }
      env {
        name  = "GDTS_GCS_BUCKET"
        value = var.gcs_bucket
      }
      env {
        name  = "GDTS_LOG_FORMAT"
        value = "json"
      }
      env {
        name  = "GDTS_LOG_RETENTION_DAYS"
        value = tostring(var.log_retention_days)
      }
      env {
        name = "GDTS_MONGO_URI"
        value_source {
          secret_key_ref {
            secret  = var.mongodb_uri_secret
            version = "latest"
          }
        }
      }
      # Both probe the process only (/livez): etcd still booting on the
      # first apply, or an etcd outage later, must not fail the deployment
      # or restart every manager (which would not bring etcd back).
      startup_probe {
        http_get {
          path = "/livez"
        }
        period_seconds    = 5
        failure_threshold = 12
      }
      liveness_probe {
        http_get {
          path = "/livez"
        }
        period_seconds    = 30
        failure_threshold = 3
      }
    }
  }
}

# No allUsers: only the listed principals may call the manager.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = toset(var.invokers)
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.manager.name
  role     = "roles/run.invoker"
  member   = each.value
}

output "url" {
  value = google_cloud_run_v2_service.manager.uri
}

output "admin_token_secret" {
  description = "The Secret Manager secret holding the bootstrap admin token."
  value       = google_secret_manager_secret.admin_token.secret_id
  depends_on  = [google_secret_manager_secret_version.admin_token, google_secret_manager_secret_iam_member.admin_token_reader]
}
