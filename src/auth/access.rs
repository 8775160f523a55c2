//! The one table from method path to who may call it. Every method the
//! server serves is listed; the metrics' method label comes from the same
//! list, so a new method cannot be served without a decision here.

use super::Role;

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone, credentials or not: health, for probes.
    Open,
    /// Any authenticated principal: reflection (it shows the API, not data).
    Authenticated,
    /// A principal holding the role.
    Role(Role),
}

/// Every served method and its access.
pub(crate) const METHODS: &[(&str, Access)] = &[
    ("/Contact/sendStatus", Access::Role(Role::Worker)),
    ("/Contact/getTask", Access::Role(Role::Worker)),
    ("/Contact/tellResult", Access::Role(Role::Worker)),
    ("/contact.v1.Tasks/Submit", Access::Role(Role::Producer)),
    (
        "/contact.v1.Tasks/SubmitStream",
        Access::Role(Role::Producer),
    ),
    ("/contact.v1.Tasks/Get", Access::Role(Role::Producer)),
    ("/contact.v1.Tasks/Wait", Access::Role(Role::Producer)),
    ("/contact.v1.Tasks/Cancel", Access::Role(Role::Producer)),
    (
        "/contact.v1.Tasks/ListDeadLetters",
        Access::Role(Role::Admin),
    ),
    ("/contact.v1.Tasks/Requeue", Access::Role(Role::Admin)),
    ("/contact.v1.Tasks/Broadcast", Access::Role(Role::Producer)),
    (
        "/contact.v1.Tasks/GetBroadcast",
        Access::Role(Role::Producer),
    ),
    ("/contact.v1.Admin/ListWorkers", Access::Role(Role::Admin)),
    ("/contact.v1.Admin/ListQueues", Access::Role(Role::Admin)),
    ("/contact.v1.Admin/DrainWorker", Access::Role(Role::Admin)),
    (
        "/contact.v1.Admin/DisconnectWorker",
        Access::Role(Role::Admin),
    ),
    (
        "/contact.v1.Admin/PurgeDeadLetters",
        Access::Role(Role::Admin),
    ),
    ("/grpc.health.v1.Health/Check", Access::Open),
    ("/grpc.health.v1.Health/Watch", Access::Open),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Authenticated,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Authenticated,
    ),
];

/// Who may call `path`. A path the server does not serve needs a
/// principal (the router then answers UNIMPLEMENTED): a stranger learns
/// nothing from probing.
pub(crate) fn access(path: &str) -> Access {
    METHODS
        .iter()
        .find(|(method, _)| *method == path)
        .map_or(Access::Authenticated, |(_, access)| *access)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each service's methods, as the descriptors the server registers
    /// list them, are all in the table: none is served by default.
    #[test]
    fn every_served_method_has_an_entry() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        let mut served = 0;
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    let path = if package.is_empty() {
                        format!("/{}/{}", service.name(), method.name())
                    } else {
                        format!("/{package}.{}/{}", service.name(), method.name())
                    };
                    assert!(
                        METHODS.iter().any(|(m, _)| *m == path),
                        "{path} has no access entry"
                    );
                    served += 1;
                }
            }
        }
        assert_eq!(served, 17, "the Contact, Tasks and Admin methods");
    }

    #[test]
    fn health_is_open_and_the_unknown_needs_a_principal() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(access("/Nope/Nothing"), Access::Authenticated);
        assert_eq!(
            access("/contact.v1.Tasks/Requeue"),
            Access::Role(Role::Admin)
        );
    }
}
