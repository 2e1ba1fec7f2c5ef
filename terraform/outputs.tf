output "manager_url" {
  description = "URL of the manager (UI and API) on Cloud Run."
  value       = module.manager.url
}

output "etcd_endpoints" {
  description = "etcd client endpoints (internal)."
  value       = module.etcd.client_endpoints
}

output "bucket" {
  description = "Bucket for large run outputs (GDTS_GCS_BUCKET)."
  value       = module.storage.bucket_name
}

output "registry" {
  description = "Artifact Registry repository to push the images to."
  value       = module.registry.repository_url
}

output "admin_token_secret" {
  description = "Secret Manager secret holding the manager's bootstrap admin token: gcloud secrets versions access latest --secret <this>."
  value       = module.manager.admin_token_secret
}

output "mongodb_uri_secret" {
  description = "Secret Manager secret holding the MongoDB connection string."
  value       = module.mongodb.uri_secret_id
}

output "service_accounts" {
  description = "Service accounts of each component."
  value = {
    manager = module.iam.manager_email
    worker  = module.iam.worker_email
    etcd    = module.iam.etcd_email
    mongodb = module.iam.mongodb_email
  }
}

output "worker_group" {
  description = "Regional managed instance group of the workers."
  value       = module.workers["main"].instance_group
}

output "worker_groups" {
  description = "The extra worker groups' instance groups, by name."
  value       = { for name, g in module.workers : name => g.instance_group if name != "main" }
}
