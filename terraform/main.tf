# GDTS on Google Cloud: a VPC, etcd (3 VMs), MongoDB (3-VM replica set, or an
# existing cluster such as Atlas), the manager on Cloud Run, workers in a
# regional managed instance group, a bucket for large outputs and an Artifact
# Registry repository for the images. See docs/deploy-gcp.md.

locals {
  worker_health_port = 8081
  # GDTS_ETCD_PREFIX of the manager and workers; etcd's roles grant under it.
  etcd_prefix = "/gdts/"
}

module "services" {
  source     = "./modules/services"
  project_id = var.project_id
}

module "iam" {
  source     = "./modules/iam"
  project_id = var.project_id
  name       = var.name

  depends_on = [module.services]
}

module "network" {
  source                = "./modules/network"
  project_id            = var.project_id
  name                  = var.name
  region                = var.region
  vm_cidr               = var.vm_cidr
  run_egress_cidr       = var.run_egress_cidr
  worker_health_port    = local.worker_health_port
  metrics_scrape_ranges = var.metrics_scrape_ranges

  depends_on = [module.services]
}

module "registry" {
  source     = "./modules/registry"
  project_id = var.project_id
  name       = var.name
  region     = var.region
  readers    = [module.iam.worker_email]

  depends_on = [module.services]
}

module "storage" {
  source         = "./modules/storage"
  project_id     = var.project_id
  name           = var.name
  region         = var.region
  retention_days = var.output_retention_days
  writers        = [module.iam.worker_email]
  readers        = [module.iam.manager_email]

  depends_on = [module.services]
}

module "etcd" {
  source                  = "./modules/etcd"
  project_id              = var.project_id
  name                    = var.name
  region                  = var.region
  zones                   = var.zones
  subnetwork              = module.network.vm_subnet_id
  network_tag             = module.network.etcd_tag
  service_account         = module.iam.etcd_email
  machine_type            = var.etcd_machine_type
  disk_gb                 = var.etcd_disk_gb
  snapshot_retention_days = var.snapshot_retention_days
  deletion_protection     = var.deletion_protection
  key_prefix              = local.etcd_prefix
  clients = {
    manager = module.iam.manager_email
    worker  = module.iam.worker_email
  }

  depends_on = [module.services, module.network]
}

module "mongodb" {
  source                  = "./modules/mongodb"
  project_id              = var.project_id
  name                    = var.name
  region                  = var.region
  zones                   = var.zones
  subnetwork              = module.network.vm_subnet_id
  network_tag             = module.network.mongodb_tag
  service_account         = module.iam.mongodb_email
  machine_type            = var.mongodb_machine_type
  disk_gb                 = var.mongodb_disk_gb
  snapshot_retention_days = var.snapshot_retention_days
  external                = var.mongodb_external
  external_uri            = var.mongodb_uri
  uri_version             = var.mongodb_uri_version
  uri_readers             = [module.iam.manager_email, module.iam.worker_email]
  deletion_protection     = var.deletion_protection

  depends_on = [module.services, module.network]
}

module "manager" {
  source              = "./modules/manager"
  project_id          = var.project_id
  name                = var.name
  region              = var.region
  image               = var.manager_image
  service_account     = module.iam.manager_email
  network             = module.network.network_id
  subnetwork          = module.network.run_subnet_id
  etcd_endpoints      = module.etcd.client_endpoints
  etcd_prefix         = local.etcd_prefix
  etcd_tls            = module.etcd.client_tls["manager"]
  mongodb_uri_secret  = module.mongodb.uri_secret_id
  gcs_bucket          = module.storage.bucket_name
  min_instances       = var.manager_min_instances
  max_instances       = var.manager_max_instances
  invokers            = var.manager_invokers
  log_retention_days  = var.output_retention_days
  egress_all_traffic  = var.manager_egress_all_traffic
  auth                = var.manager_auth
  admin_token_version = var.admin_token_version
  iap_audience        = var.manager_iap_audience
  iap_roles           = var.manager_iap_roles
  allowed_origins     = var.manager_allowed_origins

  depends_on = [module.services]
}

# The workers: the main group (worker_count, worker_machine_type,
# worker_labels) and any extra groups (worker_groups), each its own regional
# instance group with its own machine type and labels, for jobs whose
# selector asks for them.
locals {
  worker_groups = merge(
    {
      main = {
        size            = var.worker_count
        machine_type    = var.worker_machine_type
        labels          = var.worker_labels
        autoscaling_max = var.worker_autoscaling_max
      }
    },
    var.worker_groups,
  )
}

module "workers" {
  for_each           = local.worker_groups
  source             = "./modules/workers"
  project_id         = var.project_id
  name               = var.name
  region             = var.region
  zones              = var.zones
  image              = var.worker_image
  registry_host      = module.registry.host
  service_account    = module.iam.worker_email
  subnetwork         = module.network.vm_subnet_id
  network_tag        = module.network.worker_tag
  machine_type       = each.value.machine_type
  etcd_endpoints     = module.etcd.client_endpoints
  etcd_prefix        = local.etcd_prefix
  etcd_tls           = module.etcd.client_tls["worker"]
  mongodb_uri_secret = module.mongodb.uri_secret_id
  gcs_bucket         = module.storage.bucket_name
  health_port        = local.worker_health_port
  job_uid            = var.worker_job_uid
  size               = each.value.size
  autoscaling_max    = each.value.autoscaling_max
  group              = each.key == "main" ? "" : each.key
  labels             = each.value.labels

  depends_on = [module.services, module.network]
}

# Where the main group lived before extra groups: moved, never replaced.
moved {
  from = module.workers
  to   = module.workers["main"]
}
