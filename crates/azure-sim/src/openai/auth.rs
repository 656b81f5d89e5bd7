//! Who may call an Azure OpenAI resource: a key (unless `disable_local_auth`), or an Entra
//! access token for `https://cognitiveservices.azure.com` whose principal holds a role on the
//! resource. Refusals are Azure's own answers:
//! - no or wrong key: 401 `"401"` "Access denied due to invalid subscription key ...";
//! - a key while keys are disabled: 403 `AuthenticationTypeDisabled`;
//! - a bad, expired or wrong-audience token: 401 `"401"` "Unauthorized. Access token is
//!   missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have
//!   expired." (sic, Azure's grammar);
//! - a valid token without a role: 401 `PermissionDenied` naming the principal, the data
//!   action and the operation.

use http::{HeaderMap, StatusCode};

use super::OpenAiResource;
use crate::common::AzureError;
use crate::entra::auth::{presented, Credential};
use crate::entra::tokens::COGNITIVE_SERVICES_AUDIENCE;
use crate::state::AppState;

/// The RBAC data action an operation needs and how Azure names the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataAction {
    pub action: &'static str,
    /// `METHOD /path/template`, as in Azure's PermissionDenied message.
    pub operation: &'static str,
}

impl DataAction {
    pub const fn new(action: &'static str, operation: &'static str) -> Self {
        Self { action, operation }
    }
}

const INVALID_KEY: &str = "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.";

/// Checks the caller's credential against the resource for `action`.
pub(crate) fn authenticate(
    state: &AppState,
    resource: &OpenAiResource,
    headers: &HeaderMap,
    action: DataAction,
) -> Result<(), AzureError> {
    let is_key = |value: &str| resource.config.keys.iter().any(|k| k == value);
    match presented(headers, is_key) {
        Credential::Missing => Err(AzureError::new(
            StatusCode::UNAUTHORIZED,
            "401",
            INVALID_KEY,
        )),
        Credential::Key(_) if resource.config.disable_local_auth => Err(AzureError::new(
            StatusCode::FORBIDDEN,
            "AuthenticationTypeDisabled",
            "Key based authentication is disabled for this resource.",
        )),
        Credential::Key(key) if resource.accepts_key(key) => Ok(()),
        Credential::Key(_) => Err(AzureError::new(
            StatusCode::UNAUTHORIZED,
            "401",
            INVALID_KEY,
        )),
        Credential::Token(token) => authorize_token(state, resource, token, action),
    }
}

fn authorize_token(
    state: &AppState,
    resource: &OpenAiResource,
    token: &str,
    action: DataAction,
) -> Result<(), AzureError> {
    let now = state.clock.unix_seconds();
    let claims = state
        .entra
        .verify(token, COGNITIVE_SERVICES_AUDIENCE, now)
        .map_err(|rejection| {
            tracing::debug!(resource = %resource.config.name, %rejection, "bearer token refused");
            AzureError::new(
                StatusCode::UNAUTHORIZED,
                "401",
                "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired.",
            )
        })?;
    if resource.config.role_assignments.contains(&claims.oid) {
        return Ok(());
    }
    Err(AzureError::new(
        StatusCode::UNAUTHORIZED,
        "PermissionDenied",
        format!(
            "The principal `{}` lacks the required data action `{}` to perform `{}` operation.",
            claims.oid, action.action, action.operation
        ),
    ))
}

/// Data actions of the operations the emulator serves.
pub mod actions {
    use super::DataAction;

    pub const CHAT: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action",
        "POST /openai/deployments/{deployment-id}/chat/completions",
    );
    pub const CHAT_V1: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action",
        "POST /openai/v1/chat/completions",
    );
    pub const COMPLETIONS: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/deployments/completions/action",
        "POST /openai/deployments/{deployment-id}/completions",
    );
    pub const COMPLETIONS_V1: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/deployments/completions/action",
        "POST /openai/v1/completions",
    );
    pub const EMBEDDINGS: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/deployments/embeddings/action",
        "POST /openai/deployments/{deployment-id}/embeddings",
    );
    pub const EMBEDDINGS_V1: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/deployments/embeddings/action",
        "POST /openai/v1/embeddings",
    );
    pub const LIST_DEPLOYMENTS: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/deployments/read",
        "GET /openai/deployments",
    );
    pub const LIST_MODELS_V1: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/models/read",
        "GET /openai/v1/models",
    );
    pub const RESPONSES_CREATE: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/responses/write",
        "POST /openai/v1/responses",
    );
    pub const RESPONSES_READ: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/responses/read",
        "GET /openai/v1/responses/{response-id}",
    );
    pub const RESPONSES_DELETE: DataAction = DataAction::new(
        "Microsoft.CognitiveServices/accounts/OpenAI/responses/delete",
        "DELETE /openai/v1/responses/{response-id}",
    );
}
