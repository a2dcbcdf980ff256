//! The stack a release carries per platform, as the TypeScript SDK writes it (`spec/containers.md`).
//!
//! A [`Stack`] maps resource ids to [`ResourceEntry`]s. Containers are modelled field by field
//! ([`ContainerConfig`]); every other resource type is kept as raw JSON and passed through unchanged.
//! Parsing ([`parse_stack`]) reports shape errors of every resource at once; [`Stack::validate`]
//! and [`Stack::validate_for_release`] report every rule violation at once, each with the path of
//! the offending field. Serializing a valid stack gives back exactly the JSON it was parsed from,
//! except that an explicit `null` of an optional field comes back absent.

mod container;
mod parse;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::platform::Platform;

pub use container::{
    Autoscaling, Code, ContainerConfig, ContainerPort, Expose, Gpu, HealthCheck, PersistentStorage,
    ResourceRequest, Toolchain, ToolchainKind,
};
pub use parse::{parse_release_stack, parse_stack};
pub use validate::{check_update_compatible, is_dns_label};

/// The resource type string of containers.
pub const CONTAINER_TYPE: &str = "container";

/// Largest environment variable of a container, `NAME=value` in bytes: Linux refuses to start a
/// process with a single argument or variable of 128 KiB or more (`MAX_ARG_STRLEN`, counting the
/// terminating NUL).
pub const MAX_ENV_VARIABLE: usize = 128 * 1024 - 1;
/// Most bytes of a container's own variables together (`NAME=value` each); see
/// `deployment::MAX_VARIABLES_TOTAL` for the deployment's share.
pub const MAX_ENV_TOTAL: usize = 512 * 1024;

/// A stack: its id and its resources by id.
///
/// `R` is [`ResourceEntry`]; it is [`Value`] only while [`parse_stack`] parses each resource on
/// its own so that errors in several resources are all reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Stack<R = ResourceEntry> {
    /// Stack id: `[A-Za-z0-9_-]`, 1..128 characters.
    pub id: String,
    /// Resources by id; each key equals its `config.id`.
    pub resources: BTreeMap<String, R>,
    /// Permission profiles and management permissions, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Value>,
    /// Platforms the stack may be deployed to, when restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_platforms: Option<Vec<Platform>>,
}

/// One resource of a stack with how it is managed.
///
/// `C` is [`ResourceConfig`]; it is [`Value`] only while [`parse_stack`] parses the config on its
/// own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceEntry<C = ResourceConfig> {
    /// The resource's configuration, tagged by `type`.
    pub config: C,
    /// Whether the resource is updated with each release (`live`) or set up once (`frozen`).
    pub lifecycle: Lifecycle,
    /// Resources that must exist before this one.
    pub dependencies: Vec<ResourceRef>,
    /// Whether the manager may reach the resource remotely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_access: Option<bool>,
}

/// How a resource is managed across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Updated with every release; containers are always live.
    Live,
    /// Created once and left alone by later releases.
    Frozen,
}

/// A reference to a resource of the stack by type and id (links, dependencies).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    /// The referenced resource's type, e.g. `"storage"`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The referenced resource's id.
    pub id: String,
}

/// A resource's configuration: a container, or any other type kept as raw JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceConfig {
    /// `type: "container"`, the only type this project deploys.
    Container(Box<ContainerConfig>),
    /// Any other type, stored and passed through unchanged (forward compatibility).
    Other(Value),
}

impl ResourceConfig {
    /// The `type` field, e.g. `"container"`.
    pub fn resource_type(&self) -> &str {
        match self {
            Self::Container(_) => CONTAINER_TYPE,
            Self::Other(value) => value.get("type").and_then(Value::as_str).unwrap_or_default(),
        }
    }

    /// The `id` field, if present.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Container(container) => Some(&container.id),
            Self::Other(value) => value.get("id").and_then(Value::as_str),
        }
    }

    /// The container configuration, if this is a container.
    pub fn as_container(&self) -> Option<&ContainerConfig> {
        match self {
            Self::Container(container) => Some(container.as_ref()),
            Self::Other(_) => None,
        }
    }
}

impl Serialize for ResourceConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Tagged<'a> {
            #[serde(rename = "type")]
            resource_type: &'static str,
            #[serde(flatten)]
            config: &'a ContainerConfig,
        }
        match self {
            Self::Container(config) => {
                Tagged { resource_type: CONTAINER_TYPE, config }.serialize(serializer)
            }
            Self::Other(value) => value.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ResourceConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        parse::resource_config(&value)
            .map_err(|violation| serde::de::Error::custom(parse::describe(&violation)))
    }
}

impl Stack {
    /// The containers of the stack with their resource ids, in id order.
    pub fn containers(&self) -> impl Iterator<Item = (&str, &ContainerConfig)> {
        self.resources
            .iter()
            .filter_map(|(id, entry)| entry.config.as_container().map(|c| (id.as_str(), c)))
    }

    /// The container with resource id `id`.
    pub fn container(&self, id: &str) -> Option<&ContainerConfig> {
        self.resources.get(id).and_then(|entry| entry.config.as_container())
    }

    /// Every image the stack's containers reference (duplicates included, in id order).
    pub fn images(&self) -> impl Iterator<Item = &str> {
        self.containers().filter_map(|(_, container)| container.image())
    }
}
