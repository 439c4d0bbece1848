//! EC2 errors as continuum classifies them: what is worth retrying (throttling, 5xx,
//! transport), what is a not-yet-visible id (`*.NotFound`, retried only on calls that
//! use an id created moments ago), and what is final with a hint for the user
//! (capacity and quota, permissions, credentials). docs/aws.md, "Errors", lists the
//! codes and where they come from.

/// An EC2 call that failed, classified for retry and for the user.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Ec2Error {
    #[error("EC2 {op}: throttled ({code})")]
    Throttled { op: String, code: String },
    #[error("EC2 {op}: server error {status}: {message}")]
    Server {
        op: String,
        status: u16,
        message: String,
    },
    #[error("EC2 {op}: {id} still has dependent resources ({message})")]
    DependencyViolation {
        op: String,
        id: String,
        message: String,
    },
    #[error("EC2 {op}: not found ({code}): {message}")]
    NotFound {
        op: String,
        code: String,
        message: String,
    },
    /// Capacity or quota: final (retrying the same request in the same place does not
    /// help), with what to change.
    #[error("EC2 {op}: {code}: {message}\n  hint: {}", capacity_hint(.code))]
    Capacity {
        op: String,
        code: String,
        message: String,
    },
    #[error(
        "EC2 {op}: not authorized: {message}\n  hint: see which permission is missing with `aws sts decode-authorization-message --encoded-message {}`",
        .encoded.as_deref().unwrap_or("<the encoded message>")
    )]
    Unauthorized {
        op: String,
        message: String,
        /// The encoded authorization failure message EC2 sent, if any.
        encoded: Option<String>,
    },
    #[error("EC2 {op}: {code}: {message}")]
    Api {
        op: String,
        code: String,
        message: String,
    },
    #[error("EC2 {op}: cannot reach the endpoint: {detail}")]
    Transport { op: String, detail: String },
    #[error("AWS credentials or region: {0}")]
    Config(String),
}

/// Codes EC2 uses for throttling (docs/aws.md, "Errors").
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "TooManyRequestsException",
    "SlowDown",
    "EC2ThrottledException",
];

/// Capacity and quota codes: final whatever the HTTP status (`InsufficientInstanceCapacity`
/// comes as HTTP 500, which would otherwise be retried as a server error).
fn is_capacity(code: &str) -> bool {
    (code.starts_with("Insufficient") && code.ends_with("Capacity"))
        || matches!(
            code,
            "UnfulfillableCapacity"
                | "SpotMaxPriceTooLow"
                | "MaxSpotInstanceCountExceeded"
                | "VcpuLimitExceeded"
                | "InstanceLimitExceeded"
                | "Unsupported"
        )
}

/// What to change after a capacity or quota error.
fn capacity_hint(code: &str) -> &'static str {
    match code {
        "SpotMaxPriceTooLow" | "MaxSpotInstanceCountExceeded" => {
            "no spot capacity at this price or count: launch on-demand instead (remove `spot: true` from the group), or try another instance type"
        }
        "VcpuLimitExceeded" | "InstanceLimitExceeded" => {
            "the account's quota for this instance family is used up: request an increase (Service Quotas, \"Running On-Demand ... instances\"), use a smaller type, or terminate other instances"
        }
        "Unsupported" => {
            "EC2 does not support this request here, most often because the instance type is not offered in the subnet's availability zone: choose another zone (`aws.network.availability_zone`) or another instance type"
        }
        _ => {
            "EC2 has no capacity for this instance type in this availability zone right now: try another zone (`aws.network.availability_zone`), another instance type, or on-demand instead of spot; retrying the same request later may also work"
        }
    }
}

/// The encoded part of an `UnauthorizedOperation` message, if it carries one.
fn encoded_message(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("Encoded authorization failure message:")?;
    let encoded = rest.split_whitespace().next()?;
    (!encoded.is_empty()).then(|| encoded.to_string())
}

impl Ec2Error {
    /// Worth retrying with backoff: throttling, 5xx and transport failures.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Ec2Error::Throttled { .. } | Ec2Error::Server { .. } | Ec2Error::Transport { .. }
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Ec2Error::NotFound { .. })
    }

    /// The AWS error code, when EC2 sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Ec2Error::Throttled { code, .. }
            | Ec2Error::NotFound { code, .. }
            | Ec2Error::Capacity { code, .. }
            | Ec2Error::Api { code, .. } => Some(code),
            Ec2Error::DependencyViolation { .. } => Some("DependencyViolation"),
            Ec2Error::Unauthorized { .. } => Some("UnauthorizedOperation"),
            _ => None,
        }
    }

    /// Whether EC2 answered and refused: the request was processed and will not
    /// succeed as it is (so nothing it would have created exists).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Ec2Error::Capacity { .. }
                | Ec2Error::Unauthorized { .. }
                | Ec2Error::Api { .. }
                | Ec2Error::NotFound { .. }
        )
    }

    /// Build from an AWS error code (`RequestLimitExceeded`, `DependencyViolation`, ...).
    pub fn from_code(op: &str, status: Option<u16>, code: &str, message: &str) -> Self {
        let op = op.to_string();
        let message = message.to_string();
        match code {
            c if THROTTLING.contains(&c) => Ec2Error::Throttled {
                op,
                code: c.to_string(),
            },
            "DependencyViolation" => Ec2Error::DependencyViolation {
                op,
                id: String::new(),
                message,
            },
            "UnauthorizedOperation" => Ec2Error::Unauthorized {
                op,
                encoded: encoded_message(&message),
                message,
            },
            "AuthFailure" | "ExpiredToken" | "RequestExpired" | "InvalidClientTokenId" => {
                Ec2Error::Config(format!(
                    "{op}: {code}: {message} (check the credentials: `aws sts get-caller-identity`; SSO sessions: `aws sso login`)"
                ))
            }
            c if is_capacity(c) => Ec2Error::Capacity {
                op,
                code: c.to_string(),
                message,
            },
            c if c.contains("NotFound") => Ec2Error::NotFound {
                op,
                code: c.to_string(),
                message,
            },
            _ => match status {
                Some(s) if s >= 500 => Ec2Error::Server {
                    op,
                    status: s,
                    message: if code.is_empty() {
                        message
                    } else {
                        format!("{code}: {message}")
                    },
                },
                _ => Ec2Error::Api {
                    op,
                    code: code.to_string(),
                    message,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(
            Ec2Error::from_code("RunInstances", Some(503), "RequestLimitExceeded", "x")
                .is_transient()
        );
        assert!(
            Ec2Error::from_code("RunInstances", Some(500), "InternalError", "x").is_transient()
        );
        assert!(
            Ec2Error::from_code("DescribeImages", Some(400), "InvalidAMIID.NotFound", "x")
                .is_not_found()
        );
        let e = Ec2Error::from_code("DeleteVpc", Some(400), "DependencyViolation", "x");
        assert!(matches!(e, Ec2Error::DependencyViolation { .. }));
        assert!(!e.is_transient());
        assert!(!Ec2Error::from_code("X", Some(400), "InvalidParameterValue", "x").is_transient());
    }

    #[test]
    fn capacity_is_final_even_as_a_500_and_carries_a_hint() {
        let e = Ec2Error::from_code(
            "RunInstances",
            Some(500),
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient t3.small capacity in the AZ you requested",
        );
        assert!(!e.is_transient(), "{e:?}");
        assert!(e.is_refusal());
        let msg = e.to_string();
        assert!(
            msg.contains("another zone") && msg.contains("on-demand"),
            "{msg}"
        );
        for code in [
            "InsufficientHostCapacity",
            "SpotMaxPriceTooLow",
            "MaxSpotInstanceCountExceeded",
            "VcpuLimitExceeded",
            "Unsupported",
        ] {
            let e = Ec2Error::from_code("RunInstances", Some(400), code, "m");
            assert!(matches!(e, Ec2Error::Capacity { .. }), "{code}: {e:?}");
        }
        let spot = Ec2Error::from_code("RunInstances", Some(400), "SpotMaxPriceTooLow", "m");
        assert!(spot.to_string().contains("on-demand"), "{spot}");
    }

    #[test]
    fn unauthorized_names_the_decode_command_with_the_encoded_message() {
        let e = Ec2Error::from_code(
            "RunInstances",
            Some(403),
            "UnauthorizedOperation",
            "You are not authorized to perform this operation. Encoded authorization failure message: AbC-123_x",
        );
        let msg = e.to_string();
        assert!(
            msg.contains("aws sts decode-authorization-message --encoded-message AbC-123_x"),
            "{msg}"
        );
        assert!(!e.is_transient());
    }
}
