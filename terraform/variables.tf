variable "project_id" {
  description = "GCP project to deploy into."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid GCP project id (6-30 characters, lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region for the network, Cloud Run, the worker group and the registry."
  type        = string
  default     = "europe-west1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]{1,2}$", var.region))
    error_message = "region must look like europe-west1."
  }
}

variable "zones" {
  description = "Three zones of the region: one etcd member and one MongoDB member in each."
  type        = list(string)
  default     = ["europe-west1-b", "europe-west1-c", "europe-west1-d"]
  validation {
    condition     = length(var.zones) == 3 && length(distinct(var.zones)) == 3
    error_message = "zones must list exactly three different zones."
  }
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "gdts"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name))
    error_message = "name must be 2-15 characters: lowercase letters, digits, hyphens, starting with a letter."
  }
}

variable "manager_image" {
  description = "Manager image, e.g. europe-west1-docker.pkg.dev/PROJECT/gdts/manager:1.0.0 (push it first)."
  type        = string
  validation {
    condition     = length(var.manager_image) > 0 && !can(regex("\\s", var.manager_image))
    error_message = "manager_image must be a non-empty image reference."
  }
}

variable "worker_image" {
  description = "Worker image, e.g. europe-west1-docker.pkg.dev/PROJECT/gdts/worker:1.0.0 (push it first)."
  type        = string
  validation {
    condition     = length(var.worker_image) > 0 && !can(regex("\\s", var.worker_image))
    error_message = "worker_image must be a non-empty image reference."
  }
}

variable "vm_cidr" {
  description = "Subnet for etcd, MongoDB and worker VMs."
  type        = string
  default     = "10.20.0.0/24"
  validation {
    condition     = can(cidrhost(var.vm_cidr, 0))
    error_message = "vm_cidr must be a CIDR block."
  }
}

variable "run_egress_cidr" {
  description = "Subnet dedicated to Cloud Run Direct VPC egress (at least /26)."
  type        = string
  default     = "10.20.1.0/26"
  validation {
    condition     = can(cidrhost(var.run_egress_cidr, 0)) && tonumber(split("/", var.run_egress_cidr)[1]) <= 26
    error_message = "run_egress_cidr must be a CIDR block of /26 or larger."
  }
}

variable "manager_min_instances" {
  description = "Cloud Run minimum instances (0 lets it scale to zero)."
  type        = number
  default     = 1
  validation {
    condition     = var.manager_min_instances >= 0 && var.manager_min_instances <= 100
    error_message = "manager_min_instances must be 0-100."
  }
}

variable "manager_max_instances" {
  description = "Cloud Run maximum instances."
  type        = number
  default     = 5
  validation {
    condition     = var.manager_max_instances >= 1 && var.manager_max_instances <= 1000
    error_message = "manager_max_instances must be 1-1000."
  }
}

variable "manager_invokers" {
  description = "Principals allowed to call the manager (e.g. group:ops@example.com). Empty keeps it private."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.manager_invokers : can(regex("^(user|group|serviceAccount|domain):", m))])
    error_message = "manager_invokers entries must start with user:, group:, serviceAccount: or domain: (allUsers is not accepted)."
  }
}

variable "manager_auth" {
  description = "Authentication on the manager (GDTS_AUTH): on, so every request needs a token (the bootstrap admin token is generated into Secret Manager, see the admin_token_secret output); off only for a throwaway project."
  type        = string
  default     = "on"
  validation {
    condition     = contains(["on", "off"], var.manager_auth)
    error_message = "manager_auth must be on or off."
  }
}

variable "manager_iap_audience" {
  description = "Put Identity-Aware Proxy in front of the manager (Cloud Run's IAP integration) and accept its signed assertions with this audience: /projects/PROJECT_NUMBER/locations/REGION/services/NAME-manager. Empty: no IAP."
  type        = string
  default     = ""
  validation {
    condition     = var.manager_iap_audience == "" || can(regex("^/projects/[0-9]+/", var.manager_iap_audience))
    error_message = "manager_iap_audience must be empty or start with /projects/PROJECT_NUMBER/."
  }
}

variable "manager_iap_roles" {
  description = "With IAP: who gets which role, by e-mail or domain, e.g. admin=alice@example.com;operator=*@example.com (the assertion carries no groups; IAM on IAP decides who passes at all)."
  type        = string
  default     = ""
  validation {
    condition     = var.manager_iap_roles == "" || can(regex("^\\s*(viewer|operator|admin)=", var.manager_iap_roles))
    error_message = "manager_iap_roles must look like admin=alice@example.com;viewer=*@example.com."
  }
}

variable "manager_allowed_origins" {
  description = "Other origins (comma-separated https://host[:port]) whose pages may send changes to the manager (GDTS_ALLOWED_ORIGINS): e.g. http://localhost:8070 when the UI is reached through gcloud run services proxy, or the service's own run.app host with manager_auth off."
  type        = string
  default     = ""
  validation {
    condition     = var.manager_allowed_origins == "" || can(regex("^\\s*https?://[^,/\\s]+\\s*(,\\s*https?://[^,/\\s]+\\s*)*$", var.manager_allowed_origins))
    error_message = "manager_allowed_origins must be comma-separated origins such as http://localhost:8070,https://gdts.example.com."
  }
}

variable "admin_token_version" {
  description = "Bump to generate a new bootstrap admin token into Secret Manager (rotation); new manager revisions read the latest."
  type        = number
  default     = 1
  validation {
    condition     = var.admin_token_version >= 1 && floor(var.admin_token_version) == var.admin_token_version
    error_message = "admin_token_version must be a whole number >= 1."
  }
}

variable "worker_job_uid" {
  description = "The unprivileged uid shell jobs run as on the workers (65534: nobody). The host firewall keeps it from the metadata server, etcd and MongoDB."
  type        = number
  default     = 65534
  validation {
    condition     = var.worker_job_uid >= 1000 && var.worker_job_uid <= 65534 && floor(var.worker_job_uid) == var.worker_job_uid
    error_message = "worker_job_uid must be a whole number in 1000-65534 (never root nor a system account)."
  }
}

variable "worker_count" {
  description = "Workers in the managed instance group when the autoscaler is off, and its minimum when on."
  type        = number
  default     = 2
  validation {
    condition     = var.worker_count >= 1 && var.worker_count <= 500
    error_message = "worker_count must be 1-500."
  }
}

variable "worker_autoscaling_max" {
  description = "Maximum workers for the autoscaler (CPU based); 0 turns the autoscaler off."
  type        = number
  default     = 0
  validation {
    condition     = var.worker_autoscaling_max == 0 || var.worker_autoscaling_max >= var.worker_count
    error_message = "worker_autoscaling_max must be 0 (off) or at least worker_count."
  }
}

variable "worker_machine_type" {
  description = "Machine type of worker VMs."
  type        = string
  default     = "e2-standard-2"
}

variable "etcd_machine_type" {
  description = "Machine type of etcd VMs."
  type        = string
  default     = "e2-small"
}

variable "mongodb_machine_type" {
  description = "Machine type of MongoDB VMs."
  type        = string
  default     = "e2-standard-2"
}

variable "etcd_disk_gb" {
  description = "Persistent disk per etcd member, GB (SSD)."
  type        = number
  default     = 20
  validation {
    condition     = var.etcd_disk_gb >= 10
    error_message = "etcd_disk_gb must be at least 10."
  }
}

variable "mongodb_disk_gb" {
  description = "Persistent disk per MongoDB member, GB (SSD)."
  type        = number
  default     = 50
  validation {
    condition     = var.mongodb_disk_gb >= 10
    error_message = "mongodb_disk_gb must be at least 10."
  }
}

variable "mongodb_external" {
  description = "Use an existing MongoDB (e.g. Atlas) instead of the self-managed replica set; its connection string is mongodb_uri."
  type        = bool
  default     = false
}

variable "mongodb_uri" {
  description = "With mongodb_external: the connection string. Ephemeral (pass it as TF_VAR_mongodb_uri): it goes to Secret Manager as write-only data and never into the state or a plan file. Needed on the first apply and whenever mongodb_uri_version changes."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
  validation {
    condition     = var.mongodb_uri == null || can(regex("^mongodb(\\+srv)?://", var.mongodb_uri))
    error_message = "mongodb_uri must start with mongodb:// or mongodb+srv://."
  }
}

variable "mongodb_uri_version" {
  description = "Version of the MongoDB connection string in Secret Manager: bump it to write mongodb_uri (or, self-managed, newly generated passwords) again."
  type        = number
  default     = 1
  validation {
    condition     = var.mongodb_uri_version >= 1 && floor(var.mongodb_uri_version) == var.mongodb_uri_version
    error_message = "mongodb_uri_version must be a whole number, at least 1."
  }
}

variable "manager_egress_all_traffic" {
  description = "Route all of the manager's egress through the VPC and Cloud NAT (stable NAT addresses), not only private ranges: for a MongoDB (e.g. Atlas) reached at a public address."
  type        = bool
  default     = false
}

variable "output_retention_days" {
  description = "Days large run outputs are kept in the bucket before the lifecycle rule deletes them; run records are kept as long (the manager deletes older ones), so no record links to a deleted output."
  type        = number
  default     = 30
  validation {
    condition     = var.output_retention_days >= 1
    error_message = "output_retention_days must be at least 1."
  }
}

variable "snapshot_retention_days" {
  description = "Days daily etcd and MongoDB disk snapshots are kept."
  type        = number
  default     = 14
  validation {
    condition     = var.snapshot_retention_days >= 1
    error_message = "snapshot_retention_days must be at least 1."
  }
}

variable "deletion_protection" {
  description = "Protect the Cloud Run service and the data VMs from deletion (turn off before terraform destroy)."
  type        = bool
  default     = true
}

variable "metrics_scrape_ranges" {
  description = "Source ranges of a Prometheus collector that scrapes the workers' /metrics (health port 8081), e.g. the VM subnet where the collector runs. Empty: only Google's health checkers reach the port."
  type        = list(string)
  default     = []
  validation {
    condition     = !contains(var.metrics_scrape_ranges, "0.0.0.0/0")
    error_message = "metrics_scrape_ranges must not open the port to the world."
  }
}

variable "worker_labels" {
  description = "Labels of the main worker group's workers (GDTS_WORKER_LABELS), e.g. { zone = \"any\" }."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.worker_labels : can(regex("^[A-Za-z0-9._/-]{1,63}$", k)) && can(regex("^[A-Za-z0-9._/-]{1,63}$", v))])
    error_message = "worker_labels: keys and values are 1-63 characters of letters, digits, '.', '_', '-' or '/'."
  }
}

variable "worker_groups" {
  description = "Extra worker groups by name (a-z, 0-9, -): each an instance group with its own size, machine type and labels, e.g. { highmem = { size = 1, machine_type = \"n2-highmem-8\", labels = { memory = \"high\" } } }. Jobs whose selector asks for a group's labels run there."
  type = map(object({
    size            = number
    machine_type    = string
    labels          = map(string)
    autoscaling_max = optional(number, 0)
  }))
  default = {}
  validation {
    condition = alltrue([for name, g in var.worker_groups : can(regex("^[a-z0-9][a-z0-9-]{0,14}$", name)) && name != "main" && g.size >= 1 && g.size <= 500 && alltrue([
      for k, v in g.labels : can(regex("^[A-Za-z0-9._/-]{1,63}$", k)) && can(regex("^[A-Za-z0-9._/-]{1,63}$", v))
    ])])
    error_message = "worker_groups: names are 1-15 characters of a-z, 0-9 and - (not main, the main group); sizes 1-500; label keys and values 1-63 characters of letters, digits, '.', '_', '-' or '/'."
  }
}
