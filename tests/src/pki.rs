//! A throwaway certificate authority for tests of TLS to etcd: a CA, server
//! certificates for loopback, and client certificates by common name (etcd
//! takes a client certificate's CN as its user).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA; its certificate is written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "gdts test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca,
        })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `cn`, valid for loopback, usable by servers and
    /// clients, written to `dir/{file}.pem` and `dir/{file}-key.pem`.
    pub fn issue(&self, file: &str, cn: &str) -> anyhow::Result<Issued> {
        self.issue_for(file, cn, &[])
    }

    /// As `issue`, valid also for `names` (addresses or DNS names).
    pub fn issue_for(&self, file: &str, cn: &str, names: &[&str]) -> anyhow::Result<Issued> {
        let mut sans = vec!["127.0.0.1".to_string(), "localhost".into()];
        sans.extend(names.iter().map(|n| n.to_string()));
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let issued = Issued {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&issued.cert, cert.pem())?;
        std::fs::write(&issued.key, key.serialize_pem())?;
        Ok(issued)
    }
}
