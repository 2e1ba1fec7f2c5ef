# The etcd PKI: a CA, a certificate per member (server and peer, for its
# address and loopback) and client certificates whose CN is the etcd user.
# Keys are ECDSA P-256. hashicorp/tls keeps the keys in the Terraform state
# (it cannot sign otherwise): the state is as secret as the cluster
# (docs/deploy-gcp.md, "Secrets and state"). Leaf certificates last two years
# and are replaced by the first `terraform apply` in their last 90 days; the
# new ones go to Secret Manager as new versions (docs/deploy-gcp.md, "etcd
# certificates").

locals {
  ca_hours    = 10 * 365 * 24
  leaf_hours  = 2 * 365 * 24
  renew_hours = 90 * 24

  # Who holds a certificate: the members, root (the members' etcdctl, for
  # setting up users and for operators on a member) and each client.
  identities = merge(
    { for member, _ in local.members : member => { cn = member, server = true, secret = member, readers = { etcd = var.service_account } } },
    { root = { cn = "root", server = false, secret = "${var.name}-etcd-root", readers = { etcd = var.service_account } } },
    { for client, account in var.clients : client => { cn = "gdts-${client}", server = false, secret = "${var.name}-etcd-${client}", readers = { (client) = account } } },
  )

  # One secret per PEM file. Keys of for_each name things only: the PEM
  # (sensitive) is looked up in the resource.
  pems = merge(
    { ca = { identity = "", kind = "ca", secret_id = "${var.name}-etcd-ca", readers = merge({ etcd = var.service_account }, var.clients) } },
    { for id, v in local.identities : "${id}-cert" => { identity = id, kind = "cert", secret_id = "${v.secret}-cert", readers = v.readers } },
    { for id, v in local.identities : "${id}-key" => { identity = id, kind = "key", secret_id = "${v.secret}-key", readers = v.readers } },
  )
  pem_readers = merge([
    for pem, v in local.pems : { for reader, account in v.readers : "${pem}/${reader}" => { pem = pem, account = account } }
  ]...)
}

resource "tls_private_key" "ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "ca" {
  private_key_pem       = tls_private_key.ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = local.ca_hours
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]
  subject {
    common_name  = "${var.name} etcd CA"
    organization = "GDTS"
  }
}

resource "tls_private_key" "identity" {
  for_each    = local.identities
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "identity" {
  for_each        = local.identities
  private_key_pem = tls_private_key.identity[each.key].private_key_pem
  subject {
    common_name  = each.value.cn
    organization = "GDTS"
  }
  ip_addresses = each.value.server ? [google_compute_address.member[each.key].address, "127.0.0.1"] : []
  dns_names    = each.value.server ? [each.key, "localhost"] : []
}

resource "tls_locally_signed_cert" "identity" {
  for_each              = local.identities
  cert_request_pem      = tls_cert_request.identity[each.key].cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = local.leaf_hours
  early_renewal_hours   = local.renew_hours
  # A member's certificate serves clients and peers and is presented to
  # peers as a client.
  allowed_uses = each.value.server ? ["digital_signature", "key_encipherment", "server_auth", "client_auth"] : ["digital_signature", "key_encipherment", "client_auth"]
}

resource "google_secret_manager_secret" "pem" {
  for_each  = local.pems
  project   = var.project_id
  secret_id = each.value.secret_id
  labels    = { app = "gdts", component = "etcd-tls" }
  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}

resource "google_secret_manager_secret_version" "pem" {
  for_each = local.pems
  secret   = google_secret_manager_secret.pem[each.key].id
  # A renewed certificate (or a new key) replaces the version: readers take
  # `latest`.
  secret_data = (each.value.kind == "ca" ? tls_self_signed_cert.ca.cert_pem
    : each.value.kind == "cert" ? tls_locally_signed_cert.identity[each.value.identity].cert_pem
  : tls_private_key.identity[each.value.identity].private_key_pem_pkcs8)
}

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each  = local.pem_readers
  project   = var.project_id
  secret_id = google_secret_manager_secret.pem[each.value.pem].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.value.account}"
}
