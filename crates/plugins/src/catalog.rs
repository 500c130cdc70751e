//! Consumers, their credentials and groups, indexed once per config for the auth plugins.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_config::{Config, Credential};

/// What plugins and upstream headers know of a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Consumer id.
    pub id: Arc<str>,
    /// Username, if set.
    pub username: Option<Arc<str>>,
    /// Custom id, if set.
    pub custom_id: Option<Arc<str>>,
    /// `id`, `username` and `custom_id` as header values, built once per config load for the
    /// identity headers sent upstream (`None` where unset or not a valid header value).
    pub(crate) header_values: [Option<http::HeaderValue>; 3],
}

impl ConsumerInfo {
    /// A consumer with its identity header values prepared.
    pub fn new(id: &str, username: Option<&str>, custom_id: Option<&str>) -> ConsumerInfo {
        let value = |v: Option<&str>| v.and_then(|v| http::HeaderValue::from_str(v).ok());
        ConsumerInfo {
            id: Arc::from(id),
            username: username.map(Arc::from),
            custom_id: custom_id.map(Arc::from),
            header_values: [value(Some(id)), value(username), value(custom_id)],
        }
    }
}

/// A basic-auth user: the consumer and an argon2id PHC hash of the password.
#[derive(Debug)]
pub struct BasicUser {
    /// The consumer.
    pub consumer: Arc<ConsumerInfo>,
    /// PHC string.
    pub hash: String,
}

/// Consumers and credentials of one config.
#[derive(Debug, Default)]
pub struct Catalog {
    /// basic-auth users, hashed once per config however many plugin instances use them.
    pub(crate) basic_users: std::sync::OnceLock<Arc<HashMap<String, BasicUser>>>,
    by_id: HashMap<String, Arc<ConsumerInfo>>,
    by_name: HashMap<String, Arc<ConsumerInfo>>,
    by_username: HashMap<String, Arc<ConsumerInfo>>,
    by_username_lower: HashMap<String, Arc<ConsumerInfo>>,
    by_custom_id: HashMap<String, Arc<ConsumerInfo>>,
    /// Raw credentials: needed only while plugins are built, then dropped (see
    /// [`Catalog::forget_credentials`]) so no plaintext secret outlives the load.
    credentials: std::sync::Mutex<Vec<Credential>>,
    groups: HashMap<String, Vec<String>>,
    /// The file says `_transform: false` (hashed credentials, Kong's export format).
    pub(crate) no_transform: bool,
    /// CA certificates (PEM) by id, for mtls-auth.
    ca_certs: HashMap<String, String>,
    /// Consumer-group memberships alone (rate-limiting `limit_by: consumer-group`).
    consumer_groups: HashMap<String, Vec<String>>,
    /// False for the empty catalog used when a plugin config is checked on its own:
    /// references to consumers are then checked later, when the whole config compiles.
    complete: bool,
}

impl Catalog {
    /// An empty catalog for schema-only checks.
    pub fn schema_only() -> Catalog {
        Catalog::default()
    }

    /// Indexes a config's consumers, credentials, ACL groups and consumer groups.
    pub fn build(config: &Config) -> Catalog {
        let mut c = Catalog {
            complete: true,
            ..Catalog::default()
        };
        for k in &config.consumers {
            let info = Arc::new(ConsumerInfo::new(
                &k.id,
                k.username.as_deref(),
                k.custom_id.as_deref(),
            ));
            c.by_id.insert(k.id.clone(), info.clone());
            if let Some(u) = &k.username {
                c.by_name.insert(u.clone(), info.clone());
                c.by_username.insert(u.clone(), info.clone());
                c.by_username_lower
                    .entry(u.to_lowercase())
                    .or_insert_with(|| info.clone());
            }
            if let Some(cid) = &k.custom_id {
                c.by_custom_id.insert(cid.clone(), info.clone());
                c.by_name.entry(cid.clone()).or_insert(info);
            }
        }
        c.credentials = std::sync::Mutex::new(config.credentials.clone());
        c.no_transform = config.no_transform;
        for ca in &config.ca_certificates {
            c.ca_certs.insert(ca.id.clone(), ca.cert.clone());
        }
        for cred in &config.credentials {
            if cred.kind == "acls" {
                if let Some(g) = cred.fields.get("group").and_then(|v| v.as_str()) {
                    c.groups
                        .entry(cred.consumer.clone())
                        .or_default()
                        .push(g.to_string());
                }
            }
        }
        for (group, members) in &config.consumer_groups {
            for m in members {
                c.consumer_groups
                    .entry(m.clone())
                    .or_default()
                    .push(group.clone());
                let list = c.groups.entry(m.clone()).or_default();
                if !list.contains(group) {
                    list.push(group.clone());
                }
            }
        }
        c
    }

    /// True when built from a whole config (consumer references can be checked).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// A consumer by id, username or custom id.
    pub fn consumer(&self, reference: &str) -> Option<Arc<ConsumerInfo>> {
        self.by_id
            .get(reference)
            .or_else(|| self.by_id.get(&reference.to_ascii_lowercase()))
            .or_else(|| self.by_name.get(reference))
            .cloned()
    }

    /// A consumer by its id only.
    pub fn consumer_by_id(&self, id: &str) -> Option<Arc<ConsumerInfo>> {
        self.by_id
            .get(id)
            .or_else(|| self.by_id.get(&id.to_ascii_lowercase()))
            .cloned()
    }

    /// A consumer by its username only, optionally ignoring case.
    pub fn consumer_by_username(
        &self,
        username: &str,
        ignore_case: bool,
    ) -> Option<Arc<ConsumerInfo>> {
        self.by_username.get(username).cloned().or_else(|| {
            ignore_case
                .then(|| {
                    self.by_username_lower
                        .get(&username.to_lowercase())
                        .cloned()
                })
                .flatten()
        })
    }

    /// A consumer by its custom id only.
    pub fn consumer_by_custom_id(&self, custom_id: &str) -> Option<Arc<ConsumerInfo>> {
        self.by_custom_id.get(custom_id).cloned()
    }

    /// Credentials of one kind (`keyauth_credentials`, `basicauth_credentials`, ...).
    pub fn credentials(&self, kind: &str) -> Vec<Credential> {
        self.credentials
            .lock()
            .map(|list| list.iter().filter(|c| c.kind == kind).cloned().collect())
            .unwrap_or_default()
    }

    /// Drops the raw credentials once every plugin holds what it needs (digests, hashes).
    pub fn forget_credentials(&self) {
        if let Ok(mut list) = self.credentials.lock() {
            list.clear();
            list.shrink_to_fit();
        }
    }

    /// A CA certificate's PEM by id.
    pub fn ca_certificate(&self, id: &str) -> Option<&str> {
        self.ca_certs
            .get(id)
            .or_else(|| self.ca_certs.get(&id.to_ascii_lowercase()))
            .map(String::as_str)
    }

    /// Consumer groups of a consumer (names, in config order).
    pub fn consumer_groups_of(&self, consumer_id: &str) -> &[String] {
        self.consumer_groups
            .get(consumer_id)
            .map_or(&[], Vec::as_slice)
    }

    /// ACL groups and consumer-group memberships of a consumer.
    pub fn groups_of(&self, consumer_id: &str) -> &[String] {
        self.groups.get(consumer_id).map_or(&[], Vec::as_slice)
    }
}
