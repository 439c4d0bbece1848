//! Recipes and inventories: the YAML a user writes, its validation (with file:line:col
//! diagnostics) and the validated model the rest of continuum consumes.

pub mod aws;
pub mod diag;
pub mod extra;
pub mod flags;
pub mod load;
pub mod model;
pub mod raw;
pub mod serverless;
pub mod validators;

pub use diag::{Diagnostic, Severity};
pub use load::{LoadError, Loaded, load_inventory, load_recipe};
pub use model::{
    AddressKind, AwsSite, AwsSsh, CloudHost, Cluster, Environment, Firewall, Host, ImageRef,
    Images, Install, InstanceGroup, KubeconfigTarget, Role, Share, Upgrade, VpcChoice,
};
